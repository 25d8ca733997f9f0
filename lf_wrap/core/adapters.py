"""The one reader of a PEFT LoRA adapter folder, for merge, eval and search.

An adapter folder as LLaMA-Factory (PEFT) writes it: `adapter_config.json` plus
`adapter_model.safetensors` (or the older `adapter_model.bin`), often with checkpoints, logs
and a tokenizer beside them. What the stages need of it is read here once: rank (and any
per-module ranks), lora_alpha and the scaling PEFT applies (alpha / r, or alpha / sqrt(r) with
rsLoRA), the target modules, the base it was trained on, the weight file (and its tensors), and a content
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
    _check_numbers(config, f"{label}{config_file}")
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise UserError(f"{label}adapter {given}: {CONFIG_FILE} but no {' or '.join(WEIGHT_FILES)}")
    # The weight file keeps its name in the folder: a link to a store is hashed as the bytes it
    # reaches, under this name (the link target's own name is in no folder listing).
    return Adapter(given=str(given), path=path.resolve(), config=config, weights=path.resolve() / weights.name)


def _rank(value) -> bool:
    return type(value) is int and value >= 1


def _finite(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_numbers(config: dict, where: str) -> None:
    """r (and each rank_pattern rank) a positive integer, lora_alpha (and each alpha_pattern
    value) a finite number: JSON's NaN or Infinity would merge into a model full of NaN, and an
    engine would serve it. Booleans are not numbers here, though Python counts them as ints."""
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not _rank(r) or not _finite(alpha):
        raise UserError(f"{where}: r must be a positive integer and lora_alpha a finite number "
                        f"(r={r!r}, lora_alpha={alpha!r})")
    for key, test, what in (("rank_pattern", _rank, "a positive integer"),
                            ("alpha_pattern", _finite, "a finite number")):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict):
            raise UserError(f"{where}: {key} must map module names to numbers, got {pattern!r}")
        bad = next((k for k, v in pattern.items() if not test(v)), None)
        if bad is not None:
            raise UserError(f"{where}: {key}.{bad} must be {what}, got {pattern[bad]!r}")


def read_weights(weights: Path) -> dict:
    """{tensor name: tensor} of an adapter's weight file; a damaged file is one UserError."""
    import torch
    from safetensors.torch import load_file

    if weights.suffix == ".safetensors":
        try:
            return load_file(str(weights))
        except Exception as err:   # safetensors raises its own error types for a damaged file
            raise UserError(f"{weights}: cannot read ({err})") from None
    try:
        tensors = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:   # pickle, zip and torch errors for a damaged or foreign file
        first = (str(err).splitlines() or [""])[0][:200]
        raise UserError(f"{weights}: cannot read ({type(err).__name__}: {first})") from None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise UserError(f"{weights}: not a PEFT weights file (a mapping of tensor names to tensors)")
    return tensors
