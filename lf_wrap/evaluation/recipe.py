"""The eval recipe (`recipes/eval.yaml`): which models, which tasks, how to generate.

`model_name_or_path`, `template` and `dataset_dir` mean what they mean in a LLaMA-Factory
recipe; the rest is lf-wrap's own. The engine keys are vLLM's own argument names. Paths are
relative to the directory lf-wrap runs from. Precedence: `--set key=value` > recipe > defaults
below; dotted keys reach into sections and list items (`--set engine.dtype=float32`,
`--set models.1.path=runs/translate-20250101-120000/adapter`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from lf_wrap.core.recipes import read_recipe
from lf_wrap.data.dataset_info import recorded_task
from lf_wrap.scoring.registry import CHOICES
from lf_wrap.scoring.bootstrap import MAX_RESAMPLES, MIN_RESAMPLES, Bootstrap
from lf_wrap.serving.settings import EngineSettings
from lf_wrap.tasks import TASKS, Task, find_task, name_problem, resolve_task, with_overrides

DEFAULT_MAX_NEW_TOKENS = 256      # a task with no file, whose entry gives none


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ModelEntry(_Strict):
    name: str
    """Column name in the table and folder name under predictions/: letters, digits, '.', '_' and
    '-', at most 100 characters."""
    path: str | None = None
    """A LoRA adapter folder or a full model folder; omitted: the base model itself."""
    task: str | None = None
    """The task this model was trained for (one of the study's, or one declared under `tasks`):
    marked (bold) in the table."""


    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(problem.replace(" (it names files)", " (it names a folder under predictions/)"))
        return value


class TaskEntry(_Strict):
    """One task to score. Its metric, headline and max_new_tokens come from its task file, found
    without repeating it: `task:` where given, else the declaration `lf-wrap data prepare` recorded
    in the dataset's manifest (for the task of the entry's name), else the shipped task of this
    name; an entry of a task with no file names its `metric` (docs/tasks.md). `metric`,
    `max_new_tokens` and `no_answer_text` here override the task's."""

    dataset: str
    """Prepared validation set in dataset_dir/dataset_info.json; shell-style wildcards allowed
    (alpaca_wmt19_zh-en_validation_*) when exactly one name matches."""
    task: str | None = None
    """A task file (path/to/task.yaml, relative to the current directory) or a shipped task's name;
    default: the task the dataset was prepared from."""
    max_new_tokens: int | None = Field(None, ge=1, strict=True)
    """Greedy decoding stops at the template's stop word or after this many tokens; default: the
    task file's (256 for a task with no file)."""
    metric: str | None = None
    """How it is scored, where not as its task file says; a task with no file needs it (bleu, chrf,
    rouge, exact_match, squad_v2, or a function of your own as path/to/file.py:function,
    docs/metrics.md); the references are each row's `output`."""
    no_answer_text: str | None = None
    """qa (or a task scored with squad_v2): what the model was taught to say for an unanswerable
    question (read as "" when scoring); default: the dataset manifest's filters.no_answer_text,
    else 'unanswerable'."""
    _task: Task | None = PrivateAttr(None)

    @property
    def definition(self) -> Task | None:
        """The task, as resolved by `resolved_entry` (None before)."""
        return self._task


def resolved_entry(dataset_dir: Path, name: str, entry: TaskEntry) -> TaskEntry:
    """`entry` with its task found (TaskEntry's rule) and max_new_tokens filled in. ValueError
    (or UserError, for a task file) naming the key."""
    key = f"tasks.{name}"
    recorded = recorded_task(dataset_dir, entry.dataset) if entry.task is None else None
    if entry.task is not None:
        task = find_task(entry.task, what=f"{key}.task")
    elif recorded is not None and recorded.name == name:
        task = recorded
    elif recorded is not None and entry.metric is None:
        raise ValueError(f"{key}: dataset '{entry.dataset}' was prepared for task '{recorded.name}', not '{name}': "
                         f"name the entry '{recorded.name}', or give {key}.task (a task file) or {key}.metric "
                         f"(one of: {CHOICES})")
    else:
        task = resolve_task(name, entry.metric, f"{key}.metric")
    task = with_overrides(task, entry.metric, entry.max_new_tokens, entry.no_answer_text, f"{key}.metric")
    out = entry.model_copy(update={"max_new_tokens": task.max_new_tokens or entry.max_new_tokens
                                   or DEFAULT_MAX_NEW_TOKENS})
    out._task = task
    return out


class BootstrapSettings(_Strict):
    """Uncertainty of every number in the table (lf_wrap.evaluation.uncertainty): a percentile
    bootstrap over the rows for each metric, and a paired bootstrap test of each model against
    the base and against each model named in compare_to. Defaults: lf_wrap.scoring.bootstrap.Bootstrap."""

    resamples: int = Field(Bootstrap.resamples, ge=MIN_RESAMPLES, le=MAX_RESAMPLES)
    """Resamples of the rows; each interval and test is computed on the same seeded draw."""
    seed: int = Field(Bootstrap.seed, ge=0)
    """Seed of the draw (12345 is sacrebleu's default: BLEU p-values then equal sacrebleu's)."""
    confidence: float = Field(Bootstrap.confidence, gt=0, lt=1)
    """Coverage of the intervals (metrics.json keeps the key name ci95 whatever it is)."""
    compare_to: list[str] = []
    """Models (by name) every other model is also tested against, beside the base."""

    def bootstrap(self) -> Bootstrap:
        return Bootstrap(self.resamples, self.seed, self.confidence)


class EvalRecipe(_Strict):
    model_name_or_path: str
    """The base model: Hub id or local folder. Adapters must have been trained on it."""
    template: str = "qwen"
    """LLaMA-Factory template the adapters were trained with; prompts are rendered with it."""
    dataset_dir: Path = Path("dataset_info")
    models: list[ModelEntry] = Field(min_length=1)
    tasks: dict[str, TaskEntry] = {}
    """What to score each model on. May be left out for adapters of `lf-wrap train` runs: each is
    then scored on its run's lf_wrap.task and lf_wrap.validation_dataset (the recipe wins where
    it names the task)."""
    engine: EngineSettings = EngineSettings()
    long_prompts: Literal["skip", "truncate"] = "skip"
    """A prompt with more than max_model_len - max_new_tokens tokens: skip the row (counted in
    metrics.json) or cut the query's end, keeping the template's tail."""
    batch_size: int = Field(256, ge=1)
    """Rows handed to vLLM at once; predictions are written (fsync) after each batch, so a
    killed run loses at most one batch."""
    bootstrap: BootstrapSettings = BootstrapSettings()

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value, info: ValidationInfo):
        """Each task is found (TaskEntry); a model's own task is one of those or the study's."""
        dataset_dir = info.data.get("dataset_dir", Path("dataset_info"))
        for name in value:
            problem = name_problem(name)
            if problem:
                raise ValueError(f"task name {problem}")
        value = {name: resolved_entry(dataset_dir, name, entry) for name, entry in value.items()}
        for model in info.data.get("models") or []:
            if model.task is not None and model.task not in TASKS and model.task not in value:
                raise ValueError(f"model '{model.name}': task '{model.task}' is neither one of the study's tasks "
                                 f"({', '.join(TASKS)}) nor declared under tasks")
        return value

    def task_definition(self, name: str) -> Task:
        """How task `name` of this recipe is scored (its task file, as the entry overrides it)."""
        entry = self.tasks[name]
        return entry.definition or resolved_entry(self.dataset_dir, name, entry).definition

    @model_validator(mode="after")
    def _unique_names(self):
        names = [m.name for m in self.models]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"model name {duplicate!r} is used twice")
        unknown = next((n for n in self.bootstrap.compare_to if n not in names), None)
        if unknown:
            raise ValueError(f"bootstrap.compare_to: no model is named {unknown!r}; the models are {', '.join(names)}")
        return self


def load_eval_recipe(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[EvalRecipe, str]:
    """The validated recipe and its verbatim text (copied into the results folder)."""
    recipe, read = read_recipe(path, EvalRecipe, overrides, what="eval recipe",
                               shape="an eval recipe is a YAML mapping (model_name_or_path, models, tasks, engine)")
    return recipe, read.text
