"""What a task is, in one place: a task file (lf_wrap.tasks.spec) says how a source row becomes
an instruction row and how the answers are scored; every stage reads the task from it.

The study's three tasks are three task files shipped in the package (lf_wrap/defaults/tasks/:
translate, summarize, qa), read the same way as a user's; their prompts are the study's,
character for character. A later stage finds a task without being told again: `data prepare`
records the declaration in the set's manifest (lf_wrap.tasks.recorded), and eval, score, search
and train read it from there (docs/tasks.md says the rule).

A task is scored by its metric family (`lf_wrap.scoring.registry.FAMILIES`: bleu, rouge,
exact_match, squad_v2, chrf; or a function of your own, `path/to/file.py:function`), which gives
its metrics, its headline metric (the table's row) and whether references [] mean "unanswerable"
(then the no-answer text the model was taught reads as ""). A task declared only in an eval
recipe (`tasks.<name>.metric`, with a set already registered) still works: it has no file."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.recipes import did_you_mean, read_recipe, validate
from lf_wrap.scoring import custom
from lf_wrap.scoring.family import Family
from lf_wrap.scoring.registry import CHOICES, FAMILIES, family
from lf_wrap.tasks.rows import RowError
from lf_wrap.tasks.spec import DEFAULT_NO_ANSWER_TEXT, TASK_NAME, TaskFile, load_keywords, name_problem

__all__ = ["DEFAULT_NO_ANSWER_TEXT", "TASK_NAME", "TASKS", "RowError", "Task", "find_task", "get_task", "name_problem",
           "read_task_file", "resolve_task", "task_from_declaration"]

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "defaults" / "tasks"
SHIPPED = ("translate", "summarize", "qa")        # the study's order: the table's rows


@dataclass(frozen=True)
class Task:
    """One task: its name and metric, and (for a task with a file) its declaration."""

    name: str
    metric: str                                # its family: bleu, rouge, exact_match, squad_v2, chrf, file.py:function
    spec: TaskFile | None = None               # the declaration; None for a task declared in an eval recipe only
    origin: str | None = None                  # the task file (or the manifest a declaration was read from)
    lines: dict = field(default_factory=dict, compare=False, repr=False)   # key path -> line in `origin`
    keywords: tuple[str, ...] = ()             # the keyword filter's words, read
    scored_by: Family | None = None            # the family, where it is not looked up by `metric` (report)

    @property
    def family(self) -> Family:
        """How it is scored (lf_wrap.scoring): per-row scores, corpus values, intervals, paired tests."""
        return self.scored_by or family(self.metric)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names it reports (metrics.json keys), headline first."""
        return self.family.keys

    @property
    def headline(self) -> str:
        return self.family.keys[0]

    @property
    def no_answer(self) -> bool:
        """References [] mean "unanswerable"; the no-answer text the model was taught reads as ""."""
        return self.family.no_answer

    @property
    def max_new_tokens(self) -> int | None:
        return self.spec.max_new_tokens if self.spec is not None else None

    @property
    def no_answer_text(self) -> str | None:
        return self.spec.no_answer_text if self.spec is not None else None

    def where(self, key: tuple) -> str:
        """`file:line` of a key of the task file (else the file), for errors."""
        for end in range(len(key), 0, -1):
            if key[:end] in self.lines:
                return f"{self.origin}:{self.lines[key[:end]]}"
        return str(self.origin)

    def declaration(self) -> dict:
        """How metrics.json records the task, so that `lf-wrap report` can rebuild its rows."""
        scoring = self.family
        return {"metric": self.metric, "metrics": list(self.metrics), "headline": self.headline,
                "no_answer": self.no_answer, "definitions": {key: scoring.describe(key) for key in self.metrics}}

    def recorded(self) -> dict:
        """The declaration as a prepared set's manifest keeps it (paths resolved, keywords read):
        what lets eval, score and search find the task from the dataset alone."""
        data = self.spec.model_dump(mode="json")
        data["metric"] = self.metric
        if self.spec.keyword_filter is not None:
            data["keyword_filter"]["keywords"] = list(self.keywords)
        return data


# ---------------------------------------------------------------- reading a task file


def _resolved_metric(metric: str, folder: Path) -> str:
    """`file.py:function` relative to the task file's folder, made absolute."""
    if custom.is_reference(metric):
        path, _, function = metric.rpartition(":")
        if not Path(path).is_absolute():
            return f"{(folder / path).resolve()}:{function}"
    return metric


def _checked(spec: TaskFile, origin: str, lines: dict, folder: Path | None, keywords_given: bool = False) -> Task:
    """The checks a schema cannot make alone: the metric exists (a function of your own loads),
    the no-answer text fits the metric, the keyword list reads."""
    task = Task(spec.name, spec.metric, spec, origin, lines)
    metric = _resolved_metric(spec.metric, folder) if folder is not None else spec.metric
    try:
        scoring = family(metric)
    except ValueError as err:
        raise UserError(f"{task.where(('metric',))}: metric: {err}{did_you_mean(spec.metric, FAMILIES)}") from None
    except UserError as err:
        raise UserError(f"{task.where(('metric',))}: metric: {err}") from None
    updates: dict = {}
    if scoring.no_answer and spec.no_answer_text is None:
        updates["no_answer_text"] = DEFAULT_NO_ANSWER_TEXT
    if not scoring.no_answer and spec.no_answer_text is not None:
        raise UserError(f"{task.where(('no_answer_text',))}: no_answer_text: metric {spec.metric} has no no-answer "
                        "rule (squad_v2 has: references [] mean unanswerable); leave no_answer_text out")
    keywords: tuple[str, ...] = ()
    rule = spec.keyword_filter
    if rule is not None and isinstance(rule.keywords, list):
        keywords = tuple(rule.keywords)
    elif rule is not None and not keywords_given:
        path = Path(rule.keywords)
        if not path.is_absolute() and folder is not None:
            path = folder / path
        if not path.is_file():
            raise UserError(f"{task.where(('keyword_filter', 'keywords'))}: keyword_filter.keywords: {path} is not a "
                            "file (a YAML file with a drop_keywords list, relative to the task file), nor a list")
        keywords = tuple(load_keywords(path))
    if updates:
        spec = spec.model_copy(update=updates)
    return dataclasses.replace(task, metric=metric, spec=spec, keywords=keywords)


def read_task_file(path: Path, overrides=(), keywords_given: bool = False) -> Task:
    """Read, override (`--set KEY=VALUE`) and check a task file. One UserError naming the file,
    line and key for anything wrong. `keywords_given`: a --keywords file replaces the file's list."""
    spec, text = read_recipe(Path(path), TaskFile, overrides, what="task file",
                             shape="a task file is a YAML mapping (name, prompt, response, metric, ...)")
    return _checked(spec, str(text.path), text.lines, text.path.resolve().parent, keywords_given)


def task_from_declaration(declaration: dict, origin: str) -> Task:
    """A task as a manifest recorded it (Task.recorded)."""
    spec = validate(TaskFile, declaration, origin)
    return _checked(spec, origin, {}, None)


# ---------------------------------------------------------------- the shipped tasks


@lru_cache(maxsize=None)
def _shipped(name: str) -> Task:
    return read_task_file(SHIPPED_DIR / f"{name}.yaml")


class _Shipped(Mapping):
    """The study's tasks by name, read from their files on first use (no import side effect)."""

    def __getitem__(self, name: str) -> Task:
        if name not in SHIPPED:
            raise KeyError(name)
        return _shipped(name)

    def __iter__(self):
        return iter(SHIPPED)

    def __len__(self) -> int:
        return len(SHIPPED)


TASKS: Mapping[str, Task] = _Shipped()


def shipped_file(name: str) -> Path:
    return SHIPPED_DIR / f"{name}.yaml"


def is_task_file(ref: str | Path) -> bool:
    return str(ref).endswith((".yaml", ".yml")) or Path(ref).is_file()


def find_task(ref: str | Path, overrides=(), keywords_given: bool = False, what: str = "task") -> Task:
    """A shipped task by name, or a task file by path."""
    if str(ref) in TASKS and not overrides and not keywords_given:
        return TASKS[str(ref)]
    if str(ref) in TASKS:
        return read_task_file(shipped_file(str(ref)), overrides, keywords_given)
    if is_task_file(ref):
        if not Path(ref).is_file():
            raise UserError(f"{what} {ref}: no such task file")
        return read_task_file(Path(ref), overrides, keywords_given)
    raise UserError(f"unknown {what} '{ref}': not a shipped task ({', '.join(TASKS)}){did_you_mean(str(ref), TASKS)}, "
                    "nor a task file (path/to/task.yaml)")


def get_task(name: str) -> Task:
    return find_task(name)


def resolve_task(name: str, metric: str | None = None, key: str = "metric", scored_by: Family | None = None) -> Task:
    """The shipped task `name` (scored with `metric` where one is given), or a task with no file
    scored with `metric` (a family name, or `file.py:function`, loaded here). ValueError naming
    `key` (where the metric is set: `tasks.<name>.metric`, `--metric`); UserError naming it when
    a function of your own cannot be loaded. `scored_by`: the family already at hand (the
    report's, from metrics.json)."""
    shipped = TASKS.get(name)
    if shipped is not None and (metric is None or metric == shipped.metric):
        return shipped
    if metric is None:
        raise ValueError(f"unknown task '{name}': the study's tasks are {', '.join(TASKS)}; a task of your own "
                         f"needs a task file (docs/tasks.md) or {key}, one of: {CHOICES}")
    if scored_by is None:
        _check_metric(metric, key)
    problem = name_problem(name)
    if problem:
        raise ValueError(f"task name {problem}")
    if shipped is not None:
        return dataclasses.replace(shipped, metric=metric, scored_by=scored_by)
    return Task(name, metric, scored_by=scored_by)


def _check_metric(metric: str, key: str) -> None:
    """The metric exists (a shipped family, or a file.py:function that loads), else an error naming `key`."""
    try:
        family(metric)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None
    except UserError as err:
        raise UserError(f"{key}: {err}") from None


def with_overrides(task: Task, metric: str | None = None, max_new_tokens: int | None = None,
                   no_answer_text: str | None = None, key: str = "metric") -> Task:
    """The task as an eval recipe overrides it (each None: the task's own). ValueError naming `key`
    for a metric that does not exist."""
    if metric is not None and metric != task.metric:
        _check_metric(metric, key)
        task = dataclasses.replace(task, metric=metric, scored_by=None)
    updates = {k: v for k, v in (("max_new_tokens", max_new_tokens), ("no_answer_text", no_answer_text))
               if v is not None}
    if updates and task.spec is not None:
        task = dataclasses.replace(task, spec=task.spec.model_copy(update=updates))
    return task


def __getattr__(name: str) -> str:
    """TRANSLATE_PROMPT, SUMMARIZE_PROMPT, QA_PROMPT: the literal text of a shipped prompt before
    its first slot (the tiny test model's tokenizer learns them: lf_wrap.demo.tiny_model)."""
    prompts = {"TRANSLATE_PROMPT": "translate", "SUMMARIZE_PROMPT": "summarize", "QA_PROMPT": "qa"}
    if name in prompts:
        from lf_wrap.tasks.spec import parse_template

        return parse_template(TASKS[prompts[name]].spec.prompt)[0][0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
