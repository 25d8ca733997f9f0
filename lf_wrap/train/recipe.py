"""Training recipes: LLaMA-Factory YAML plus one `lf_wrap:` section of our own.

Every top-level key is a LLaMA-Factory training key, unchanged, so a recipe reads against
LLaMA-Factory's documentation and could almost be handed to `llamafactory-cli` as it is. The
`lf_wrap:` section (which prepared dataset, where runs go, the CPU smoke override set) is
lf-wrap's alone and never reaches `llamafactory-cli`, whose parser rejects unknown keys.

Precedence, lowest first: lf-wrap's DEFAULTS < the recipe's top level < `lf_wrap.smoke` (with
`--smoke`) < `--set key=value`. Keys that lf-wrap fills itself (OWNED_KEYS) may not be set by
the user: each has a dedicated place, named in the error."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from lf_wrap.core.errors import UserError
from lf_wrap.core.recipes import Override, apply_override, parse_override, read_yaml, validate
from lf_wrap.tasks import known_task_or_none

SECTION = "lf_wrap"
TRAIN_ALIAS = "train"   # `--set train.learning_rate=2e-4` is `--set learning_rate=2e-4`

# Filled by lf-wrap in every run; where the user says what they want instead.
OWNED_KEYS = {
    "dataset": "name the prepared dataset(s) under `lf_wrap: dataset:` (or --set lf_wrap.dataset=NAME)",
    "dataset_dir": "set `lf_wrap: dataset_dir:` (or --set lf_wrap.dataset_dir=DIR)",
    "output_dir": "the adapter always goes to <run_dir>/adapter; choose the run dir with --run-dir",
    "adapter_name_or_path": "lf-wrap trains a fresh LoRA adapter; to continue a run use "
                            "--set resume_from_checkpoint=<run_dir>/adapter/checkpoint-N",
    "export_dir": "exporting a merged model is `lf-wrap merge`'s job, not training's",
}

# What lf-wrap adds when the recipe does not say: no experiment trackers unless asked for.
DEFAULTS: dict[str, Any] = {"report_to": "none"}


class LfWrapSection(BaseModel):
    """The `lf_wrap:` section of a training recipe."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    task: str | None = None
    """Which of the study's tasks the adapter is for (recorded in the manifest)."""
    dataset: list[str]
    """Prepared training set(s) in dataset_dir/dataset_info.json, each a name or a pattern matching
    exactly one name (`alpaca_wmt19_zh-en_train_*`); becomes LLaMA-Factory's `dataset`."""
    validation_dataset: str | None = None
    """The held-out set this adapter is scored on (`lf-wrap eval`); not used in training."""
    dataset_dir: Path = Path("dataset_info")
    """Folder holding dataset_info.json, relative to the current directory."""
    run_dir: Path | None = None
    """A fixed run folder; default runs/<recipe>-<YYYYmmdd-HHMMSS>. --run-dir wins."""
    smoke: dict[str, Any] = {}
    """LLaMA-Factory keys applied by --smoke: a few CPU steps on a tiny model."""

    @field_validator("task")
    @classmethod
    def _known_task(cls, value):
        return known_task_or_none(value)

    @field_validator("dataset", mode="before")
    @classmethod
    def _split_names(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise ValueError("dataset names must be non-empty strings")
        return value


@dataclass
class Overrides:
    """`--set KEY=VALUE` pairs (lf_wrap.core.recipes grammar), split into the LLaMA-Factory layer
    (a bare key, or `train.KEY`) and overrides of our own section (`lf_wrap.KEY...`)."""

    train: dict[str, Any] = field(default_factory=dict)
    section: dict[str, Override] = field(default_factory=dict)   # dotted path in the section -> override
    given: list[str] = field(default_factory=list)               # as typed, for the manifest


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> Overrides:
    overrides = Overrides(given=list(pairs))
    for pair in pairs:
        parsed = parse_override(pair, example="learning_rate=2e-4")
        if parsed.key[0] == SECTION and len(parsed.key) > 1:
            inner = Override(parsed.given, parsed.key[1:], parsed.value)
            overrides.section[inner.dotted] = inner
        else:
            key = parsed.key[1:] if parsed.key[0] == TRAIN_ALIAS and len(parsed.key) > 1 else parsed.key
            apply_override(overrides.train, Override(parsed.given, key, parsed.value))
    return overrides


class TrainingRecipe(BaseModel):
    """A training recipe as validated here: our section; the LLaMA-Factory keys beside it are
    checked against LLaMA-Factory's own dataclasses (lf_wrap.train.lf_args)."""

    model_config = ConfigDict(extra="allow")

    lf_wrap: LfWrapSection


@dataclass
class Recipe:
    path: Path
    text: str                    # verbatim, copied into the run dir
    train: dict[str, Any]        # top-level LLaMA-Factory keys as written
    lf_wrap: LfWrapSection

    @property
    def name(self) -> str:
        return self.path.stem


def load_recipe(path: Path, overrides: Overrides | None = None) -> Recipe:
    """Read a recipe (lf_wrap.core.recipes), apply `--set lf_wrap.*`, validate the section."""
    overrides = overrides or Overrides()
    read = read_yaml(path, "recipe",
                     f"a recipe is a YAML mapping of LLaMA-Factory keys plus an `{SECTION}:` section")
    data = copy.deepcopy(read.data)
    section = data.pop(SECTION, None) or {}
    if not isinstance(section, dict):
        raise UserError(f"{read.where((SECTION,))}: `{SECTION}:` must be a mapping")
    for override in overrides.section.values():
        apply_override(section, override)
    setters = [Override(o.given, (SECTION, *o.key), o.value) for o in overrides.section.values()]
    parsed = validate(TrainingRecipe, {SECTION: section}, str(read.path), read, setters)
    return Recipe(path=read.path, text=read.text, train=data, lf_wrap=parsed.lf_wrap)


def merged_args(recipe: Recipe, overrides: Overrides, smoke: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The LLaMA-Factory keys in precedence order, and where each one's value came from."""
    args: dict[str, Any] = {}
    origin: dict[str, str] = {}
    layers = [(str(recipe.path), recipe.train)]
    if smoke:
        if not recipe.lf_wrap.smoke:
            raise UserError(f"{recipe.path}: --smoke given but the recipe has no `{SECTION}: smoke:` set")
        layers.append((f"{recipe.path} ({SECTION}.smoke)", recipe.lf_wrap.smoke))
    layers.append(("--set", overrides.train))
    for where, layer in layers:
        for key, value in layer.items():
            args[key] = value
            origin[key] = f"--set {key}={value}" if where == "--set" else where
    for key, value in DEFAULTS.items():
        if key not in args:
            args[key], origin[key] = value, "lf-wrap default"
    owned = [key for key in args if key in OWNED_KEYS]
    if owned:
        key = owned[0]
        raise UserError(f"{origin[key]}: `{key}` is filled by lf-wrap; {OWNED_KEYS[key]}")
    return args, origin
