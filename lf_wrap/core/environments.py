"""Where the two environments live.

LLaMA-Factory 0.9.5 pins transformers<=5.6 and vLLM needs transformers>=5.16, so training runs
in its own virtual environment (`.venv-lf/`) and lf-wrap reaches it through one setting:

  LF_WRAP_LLAMAFACTORY_CLI  path to `llamafactory-cli` (default: <repo>/.venv-lf/bin/llamafactory-cli)

The training environment's Python is the one beside that executable. PATH is never searched:
a `llamafactory-cli` that happens to be on PATH may belong to another install."""

from __future__ import annotations

import os
from pathlib import Path

from lf_wrap.core.errors import UserError

ENV_VAR = "LF_WRAP_LLAMAFACTORY_CLI"
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    """lf-wrap's cache (the demo's converted model, the content-hash cache): $LF_WRAP_CACHE,
    default <repo>/cache (ignored by git), so that nothing is cached outside the checkout."""
    return Path(os.environ.get("LF_WRAP_CACHE") or REPO_ROOT / "cache")


def llamafactory_cli() -> Path:
    configured = os.environ.get(ENV_VAR)
    path = Path(configured) if configured else REPO_ROOT / ".venv-lf" / "bin" / "llamafactory-cli"
    if not path.is_file():
        where = f"{ENV_VAR}={configured}" if configured else f"the default {path}"
        raise UserError(
            f"llamafactory-cli not found at {where}. Run `make setup` to build .venv-lf/, or set "
            f"{ENV_VAR} to the llamafactory-cli of your own LLaMA-Factory install."
        )
    return path


def training_python() -> Path:
    """The Python interpreter of the training environment (beside llamafactory-cli)."""
    cli = llamafactory_cli()
    for name in ("python", "python3"):
        candidate = cli.parent / name
        if candidate.exists():
            return candidate
    raise UserError(f"no python beside {cli}; {ENV_VAR} must point into a virtual environment's bin/")
