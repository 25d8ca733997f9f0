"""A metric of your own: a Python function in your project, named as `path/to/file.py:function`
(the eval recipe's `tasks.<name>.metric`, `lf-wrap score --metric`). The path is relative to the
directory lf-wrap runs from; the file is loaded by path, never installed or imported by name.

The contract: `function(prediction: str, references: list[str]) -> float`, called once per row
(references [] never reach it: such a row is refused before scoring). Two optional attributes
on the function: `higher_is_better` (default True) and `aggregation`, how rows combine into the
corpus value: "mean" (default) or "median". The metric is named after the function
(metrics.json, `lf-wrap score --json`, the table) and its first docstring line, if any, is its
definition. A row keeps `{<function name>: score}`; intervals and paired tests resample those
scores like any shipped family's. Anything wrong with the reference (no such file, no such
function, not a function, a bad attribute) or with a row (the function raises, returns a
non-number or a non-finite number) is one UserError naming the file, the function and the row."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from functools import lru_cache
from numbers import Real
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lf_wrap.core.errors import UserError
from lf_wrap.scoring.bootstrap import Draw
from lf_wrap.scoring.family import MeanFamily, Metric, check_lengths

AGGREGATIONS = ("mean", "median")


class RowScoreError(UserError):
    """The function failed on one row; `row` is the row's 0-based position among the predictions."""

    def __init__(self, message: str, row: int):
        super().__init__(message)
        self.row = row


def is_reference(spec: str) -> bool:
    """`file.py:function`: a metric of your own rather than a shipped family's name."""
    path, _, function = spec.rpartition(":")
    return bool(path) and path.endswith(".py") and function.isidentifier()


class CustomFamily(MeanFamily):
    """A family of one metric, scored by the user's function (None when it only describes a metric
    that metrics.json declared, for `lf-wrap report`)."""

    def __init__(self, spec: str, metric: Metric, aggregation: str = "mean", function: Callable | None = None,
                 source_sha256: str | None = None):
        self.name, self.metrics, self.aggregation, self.function = spec, (metric,), aggregation, function
        self.source_sha256 = source_sha256      # the file's content when it was loaded

    def identity(self) -> dict:
        """The function by name and its file by content: an edited metric file, or another function
        of the same name, is another metric."""
        return {**super().identity(), "function": self.metrics[0].name, "file_sha256": self.source_sha256,
                "aggregation": self.aggregation, "higher_is_better": self.metrics[0].higher_is_better}

    def row_scores(self, prediction, references, no_answer_text) -> dict:
        raise NotImplementedError     # rows() scores every row itself, to say which one failed

    def rows(self, predictions, references, no_answer_text=None) -> list[dict]:
        check_lengths(predictions, references)
        if self.function is None:
            raise UserError(f"metric {self.name}: only declared here, not loaded; cannot score")
        key = self.keys[0]
        out = []
        for row, (prediction, refs) in enumerate(zip(predictions, references)):
            where = f"metric {self.name}: {key}() on row {row} (prediction {prediction[:40]!r})"
            try:
                value = self.function(prediction, list(refs))
            except Exception as err:
                raise RowScoreError(f"{where} raised {type(err).__name__}: {err}", row) from None
            if not isinstance(value, Real) or isinstance(value, complex):
                raise RowScoreError(f"{where} returned {type(value).__name__} {str(value)[:40]!r}, not a number", row)
            if not math.isfinite(value):
                raise RowScoreError(f"{where} returned {value}, not a finite number", row)
            out.append({key: float(value)})
        return out

    def value(self, metric: str, rows: Sequence[dict]) -> float:
        if self.aggregation == "mean":
            return super().value(metric, rows)
        return float(np.median(self._stored(metric, metric, rows, np.float64)))

    def resample_together(self, metric: str, systems: Sequence[Sequence[dict]], draw: Draw) -> list[np.ndarray]:
        if self.aggregation == "mean":
            return super().resample_together(metric, systems, draw)
        values = [self._stored(metric, metric, rows, np.float64) for rows in systems]
        medians = [[] for _ in systems]
        for index in draw.indices():
            for out, column in zip(medians, values):
                out.append(np.median(column[index], axis=1))
        return [np.concatenate(parts) for parts in medians]


def _module(path: Path, spec: str):
    name = "lf_wrap_user_metric_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"metric {spec}: {path} cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:
        raise UserError(f"metric {spec}: loading {path} raised {type(err).__name__}: {err}") from None
    return module


@lru_cache(maxsize=32)
def _load(spec: str, cwd: str) -> CustomFamily:
    path_text, _, name = spec.rpartition(":")
    path = Path(cwd, path_text)
    if not path.is_file():
        raise UserError(f"metric {spec}: {path_text} not found (a path relative to {cwd}, or an absolute one)")
    function = getattr(_module(path, spec), name, None)
    if function is None:
        raise UserError(f"metric {spec}: {path_text} has no function '{name}'")
    if not callable(function) or isinstance(function, type):
        raise UserError(f"metric {spec}: '{name}' in {path_text} is a {type(function).__name__}, not a function")
    higher = getattr(function, "higher_is_better", True)
    aggregation = getattr(function, "aggregation", "mean")
    if not isinstance(higher, bool):
        raise UserError(f"metric {spec}: {name}.higher_is_better must be True or False, not {higher!r}")
    if aggregation not in AGGREGATIONS:
        raise UserError(f"metric {spec}: {name}.aggregation must be one of {', '.join(AGGREGATIONS)}, "
                        f"not {aggregation!r}")
    doc = (function.__doc__ or "").strip().split("\n")[0]
    definition = doc or f"{spec}: the function's score of each row, {aggregation} over rows"
    return CustomFamily(spec, Metric(name, name, higher, definition), aggregation, function,
                        hashlib.sha256(path.read_bytes()).hexdigest())


def load(spec: str) -> CustomFamily:
    """The family of `file.py:function`, the file loaded once per process (and working directory)."""
    return _load(spec, os.getcwd())


def declared(spec: str, declaration: dict, higher_is_better: dict) -> CustomFamily:
    """The family as metrics.json recorded it (its metric, definition, direction), without loading
    the file: what `lf-wrap report` needs to table it."""
    key = (declaration.get("metrics") or [spec.rpartition(":")[2]])[0]
    definition = (declaration.get("definitions") or {}).get(key, spec)
    return CustomFamily(spec, Metric(key, key, bool(higher_is_better.get(key, True)), definition))
