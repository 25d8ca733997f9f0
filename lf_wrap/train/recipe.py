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

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from lf_wrap.core.errors import UserError
from lf_wrap.core.recipes import Override, apply_override, parse_override, read_yaml, validate
from lf_wrap.tasks import TASKS, find_task, is_task_file

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

    dataset: list[str]
    """Prepared training set(s) in dataset_dir/dataset_info.json, each a name or a pattern matching
    exactly one name (`alpaca_wmt19_zh-en_train_*`); becomes LLaMA-Factory's `dataset`."""
    validation_dataset: str | None = None
    """The held-out set this adapter is scored on (`lf-wrap eval`); not used in training."""
    dataset_dir: Path = Path("dataset_info")
    """Folder holding dataset_info.json, relative to the current directory."""
    task: str | None = Field(None, validate_default=True)
    """The task the adapter is for: a shipped task (translate, summarize, qa), a task file
    (path/to/task.yaml, relative to the current directory), or the task the training sets were
    prepared from, by name; left out, their task (none when they were prepared for several: a joint
    adapter, which is no specialist of one task). Its name is recorded in the run's manifest, and
    `lf-wrap eval` scores the adapter on it."""
    run_dir: Path | None = None
    """A fixed run folder; default runs/<recipe>-<YYYYmmdd-HHMMSS>. --run-dir wins."""
    smoke: dict[str, Any] = {}
    """LLaMA-Factory keys applied by --smoke: a few CPU steps on a tiny model."""

    @field_validator("task")
    @classmethod
    def _declared_task(cls, value, info: ValidationInfo):
        if "dataset" not in info.data or "dataset_dir" not in info.data:
            return value                   # the error is the dataset's
        validation = [info.data["validation_dataset"]] if info.data.get("validation_dataset") else []
        return training_task(value, [*info.data["dataset"], *validation], info.data["dataset_dir"])

    @field_validator("dataset", mode="before")
    @classmethod
    def _split_names(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise ValueError("dataset names must be non-empty strings")
        return value


def _prepared_tasks(names: list[str], dataset_dir: Path) -> dict[str, str]:
    """dataset -> the task its manifest says it was prepared for (sets lf-wrap prepared, that exist)."""
    from lf_wrap.data.dataset_info import match_name, read_manifest

    out = {}
    for name in names:
        try:
            name = match_name(dataset_dir, name, "lf_wrap.dataset")
        except UserError:
            continue          # the dataset checks say what is wrong with it
        task = (read_manifest(dataset_dir, name) or {}).get("task")
        if isinstance(task, str):
            out[name] = task
    return out


def training_tasks(datasets: list[str], dataset_dir: Path) -> list[str]:
    """The tasks the training sets were prepared for, in the recipe's order: one for a specialist,
    several for a joint adapter (LLaMA-Factory mixes the sets, mix_strategy)."""
    return list(dict.fromkeys(_prepared_tasks(datasets, dataset_dir).values()))


def training_task(task: str | None, datasets: list[str], dataset_dir: Path) -> str | None:
    """The name of the task a recipe trains for (LfWrapSection.task); ValueError if it is not a
    declared task. (Sets of several tasks may train one adapter: LLaMA-Factory mixes them.)"""
    prepared = _prepared_tasks(datasets, dataset_dir)
    if task is not None and task not in TASKS and is_task_file(task):
        task = find_task(task).name
    elif task is not None and task not in TASKS and task not in prepared.values():
        found = f"; the training sets were prepared for {', '.join(sorted(set(prepared.values())))}" if prepared else ""
        raise ValueError(f"unknown task {task!r}: not a shipped task ({', '.join(TASKS)}), not a task file "
                         f"(path/to/task.yaml){found}")
    elif task is None and len(set(prepared.values())) == 1:
        task = next(iter(prepared.values()))
    return task


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
