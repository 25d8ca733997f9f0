"""Reading a recipe file (training, merge or eval): a safe YAML loader, and one clear error
naming the file when it cannot be read, is not YAML, or is not a mapping."""

from __future__ import annotations

from pathlib import Path

import yaml

from lf_wrap.core.errors import UserError


def read_yaml_mapping(path: Path, what: str, shape: str, loader=yaml.SafeLoader) -> tuple[dict, str]:
    """(the parsed mapping, the text verbatim). `what` names the file in the read error; `shape`
    says what the mapping should hold. `loader` must be yaml.SafeLoader or a subclass."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=loader)  # noqa: S506 - SafeLoader or a subclass of it
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {shape}")
    return data, text
