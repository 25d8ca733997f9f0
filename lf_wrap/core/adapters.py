"""The one reader of a PEFT LoRA adapter folder, for merge, eval and search.

An adapter folder as LLaMA-Factory (PEFT) writes it: `adapter_config.json` plus
`adapter_model.safetensors` (or the older `adapter_model.bin`), often with checkpoints, logs
and a tokenizer beside them. What the stages need of it is read here once: rank (and any
per-module ranks), lora_alpha and the scaling PEFT applies (alpha / r, or alpha / sqrt(r) with
rsLoRA), the target modules, the base it was trained on, the weight file, and a content
fingerprint of exactly the files that decide its outputs (the config and the weights: not the
checkpoints, logs or plots beside them)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.hashing import tree_digest

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class Adapter:
    given: str                  # as the user wrote it
    path: Path                  # resolved folder
    config: dict                # adapter_config.json
    weights: Path               # adapter_model.safetensors (or .bin)

    @property
    def rank(self) -> int:
        """`r`; per-module ranks (rank_pattern) raise it for what an engine must hold."""
        return int(self.config["r"])

    @property
    def max_rank(self) -> int:
        return max([self.rank, *(int(v) for v in (self.config.get("rank_pattern") or {}).values())])

    @property
    def alpha(self) -> float:
        return float(self.config["lora_alpha"])

    @property
    def scaling(self) -> float:
        """What PEFT multiplies B @ A by: lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA."""
        return self.alpha / math.sqrt(self.rank) if self.config.get("use_rslora") else self.alpha / self.rank

    @property
    def target_modules(self) -> list[str]:
        targets = self.config.get("target_modules") or []
        return [targets] if isinstance(targets, str) else sorted(targets)

    @property
    def base(self) -> str | None:
        """base_model_name_or_path as training recorded it (a Hub id or a path, as typed)."""
        return self.config.get("base_model_name_or_path") or None

    def fingerprint(self) -> str:
        """Content digest of the config and the weights (cached by file identity)."""
        return tree_digest(self.path, include=[CONFIG_FILE, self.weights.name])[0]

    def file_digests(self) -> dict[str, str]:
        """The digest of each file the fingerprint covers."""
        return tree_digest(self.path, include=[CONFIG_FILE, self.weights.name])[1]


def read_adapter(given: str | Path, who: str | None = None) -> Adapter:
    """Read one LoRA adapter folder or raise one UserError naming `who` (e.g. "model 'x'") and
    the file to fix."""
    label = f"{who}: " if who else ""
    path = Path(given).expanduser()
    if not path.is_dir():
        hint = " (train it first, e.g. `make train-all`)" if "-latest" in str(given) else ""
        raise UserError(f"{label}adapter {given}: no such folder{hint}")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise UserError(f"{label}adapter {given}: no {CONFIG_FILE} (is this a LoRA adapter folder?)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{label}{config_file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise UserError(f"{label}{config_file}: must hold a JSON object")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise UserError(f"{label}{config_file}: peft_type is {config.get('peft_type')}; only LoRA adapters are "
                        "supported")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or r < 1 or not isinstance(alpha, (int, float)):
        raise UserError(f"{label}{config_file}: r and lora_alpha must be numbers (r={r!r}, lora_alpha={alpha!r})")
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise UserError(f"{label}adapter {given}: {CONFIG_FILE} but no {' or '.join(WEIGHT_FILES)}")
    # The weight file keeps its name in the folder: a link to a store is hashed as the bytes it
    # reaches, under this name (the link target's own name is in no folder listing).
    return Adapter(given=str(given), path=path.resolve(), config=config, weights=path.resolve() / weights.name)
