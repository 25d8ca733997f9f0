"""metrics.json and manifest.json as `lf-wrap report` reads them: checked once, whole, on reading.

Both files are what `lf-wrap eval` hands the report, and both are plain JSON a user may edit.
A value of the wrong kind deep inside (a score written as "0.5", an interval as one number, a
p-value null, `Infinity`) used to surface as a traceback halfway through drawing, after some
files were already rewritten, or as a table showing `inf` or `nan` as if it were a score. So
every key the report reads is checked here before anything is rendered, and the first wrong one
is one UserError naming the file and the key path, e.g.
`rp/x/metrics.json: metrics.base.qa.exact_match: must be a number, got "0.5"`.

A score may be null (shown as missing: a model not scored on a task); NaN and infinities are
refused rather than shown as missing, since lf-wrap never writes them: such a file was edited,
and which value was meant cannot be guessed. A model scored in metrics.json but absent from the
manifest is refused too (the table's columns come from the manifest, so it would be dropped)."""

from __future__ import annotations

import json
import math
from typing import Any

from lf_wrap.core.errors import UserError
from lf_wrap.tasks.spec import TASK_NAME

KINDS = ("base", "adapter", "full")


class _Checker:
    """Raises on the first wrong value, naming `source` and the dotted key path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str, value: Any) -> None:
        try:
            shown = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        prefix = f"{self.source}: {where}: " if where else f"{self.source}: "
        raise UserError(f"{prefix}{what}, got {shown}")

    def obj(self, where: str, value: Any, optional: bool = False) -> dict:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            self.fail(where, "must be a JSON object", value)
        return value

    def number(self, where: str, value: Any, optional: bool = False, low: float | None = None,
               high: float | None = None) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, "must be a number" + (" or null" if optional else ""), value)
        if not math.isfinite(value):
            self.fail(where, "must be a finite number", value)
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(where, f"must be between {low} and {high}", value)

    def count(self, where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where, "must be a whole number >= 0", value)

    def interval(self, where: str, value: Any, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, list) or len(value) != 2:
            self.fail(where, "must be an interval [low, high]", value)
        self.number(f"{where}.0", value[0])
        self.number(f"{where}.1", value[1])
        if value[0] > value[1]:
            self.fail(where, "must be an interval [low, high] with low <= high", value)

    def names(self, where: str, value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(where, "must be a list of names", value)


def check_metrics(doc: Any, source: str) -> dict:
    """Every key of metrics.json the report reads has the shape `lf-wrap eval` writes."""
    c = _Checker(source)
    c.obj("", doc)
    if "metrics" not in doc:
        raise UserError(f"{source}: no 'metrics' key; not a metrics.json written by `lf-wrap eval`")
    for model, by_task in c.obj("metrics", doc["metrics"]).items():
        for task, by_key in c.obj(f"metrics.{model}", by_task).items():
            for key, value in c.obj(f"metrics.{model}.{task}", by_key).items():
                c.number(f"metrics.{model}.{task}.{key}", value, optional=True)
    for model, by_task in c.obj("counts", doc.get("counts"), optional=True).items():
        for task, count in c.obj(f"counts.{model}", by_task).items():
            for key, value in c.obj(f"counts.{model}.{task}", count).items():
                if key in ("rows", "skipped_too_long", "truncated"):
                    c.count(f"counts.{model}.{task}.{key}", value)
    for task, declaration in c.obj("tasks", doc.get("tasks"), optional=True).items():
        metric = c.obj(f"tasks.{task}", declaration, optional=True).get("metric")
        if metric is not None and not isinstance(metric, str):
            c.fail(f"tasks.{task}.metric", "must be a metric name", metric)
    for key, value in c.obj("higher_is_better", doc.get("higher_is_better"), optional=True).items():
        if not isinstance(value, bool):
            c.fail(f"higher_is_better.{key}", "must be true or false", value)
    settings = c.obj("bootstrap", doc.get("bootstrap"), optional=True)
    if "resamples" in settings:
        c.count("bootstrap.resamples", settings["resamples"])
    if "confidence" in settings:
        c.number("bootstrap.confidence", settings["confidence"], low=0, high=1)
    if settings.get("compare_to") is not None:
        c.names("bootstrap.compare_to", settings["compare_to"])
    for model, by_task in c.obj("intervals", doc.get("intervals"), optional=True).items():
        for task, by_key in c.obj(f"intervals.{model}", by_task).items():
            for key, pair in c.obj(f"intervals.{model}.{task}", by_key).items():
                c.interval(f"intervals.{model}.{task}.{key}", pair, optional=True)
    for model, by_other in c.obj("paired", doc.get("paired"), optional=True).items():
        for other, by_task in c.obj(f"paired.{model}", by_other).items():
            for task, by_key in c.obj(f"paired.{model}.{other}", by_task).items():
                for key, test in c.obj(f"paired.{model}.{other}.{task}", by_key).items():
                    where = f"paired.{model}.{other}.{task}.{key}"
                    if test is None:
                        continue
                    c.obj(where, test)
                    c.number(f"{where}.difference", test.get("difference"))
                    c.interval(f"{where}.ci95", test.get("ci95"))
                    c.number(f"{where}.p_value", test.get("p_value"), low=0, high=1)
                    if test.get("rows") is not None:
                        c.count(f"{where}.rows", test["rows"])
    return doc


def check_manifest(doc: Any, source: str) -> dict:
    """The manifest's `models`: the table's columns, in recipe order, each with a name and kind."""
    c = _Checker(source)
    c.obj("", doc)
    if "models" not in doc:
        raise UserError(f"{source}: no 'models' key; not a manifest.json written by `lf-wrap eval`")
    models = doc["models"]
    if not isinstance(models, list):
        c.fail("models", "must be a list of models", models)
    seen: set[str] = set()
    for i, model in enumerate(models):
        c.obj(f"models.{i}", model)
        name = model.get("name")
        if not isinstance(name, str) or not name:
            c.fail(f"models.{i}.name", "must be a model name", name)
        if not TASK_NAME.fullmatch(name):   # an eval recipe's rule: a '|' or a newline would break table.md
            c.fail(f"models.{i}.name", "must be a plain name (letters, digits, '.', '_', '-'), as in an eval recipe",
                   name)
        if name in seen:
            c.fail(f"models.{i}.name", "appears twice", name)
        seen.add(name)
        if model.get("kind") not in KINDS:
            c.fail(f"models.{i}.kind", "must be one of " + ", ".join(KINDS), model.get("kind"))
        if model.get("task") is not None and not isinstance(model["task"], str):
            c.fail(f"models.{i}.task", "must be a task name or null", model["task"])
        if model["kind"] == "adapter" and not isinstance(model.get("path"), str):
            c.fail(f"models.{i}.path", "must be the adapter's folder", model.get("path"))
    return doc


def check_same_models(metrics_doc: dict, manifest: dict, metrics_source: str, manifest_source: str) -> None:
    """A model scored in metrics.json is a column of the table: the manifest must list it."""
    listed = {m["name"] for m in manifest["models"]}
    for model in metrics_doc["metrics"]:
        if model not in listed:
            raise UserError(f"{metrics_source}: metrics.{model}: model '{model}' is not in {manifest_source}'s "
                            f"models ({', '.join(sorted(listed)) or 'none'}); the two files are from different "
                            "evaluations or were edited: run `lf-wrap eval` into this folder again")
