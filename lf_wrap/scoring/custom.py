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
non-number or a non-finite number) is one UserError naming the file, the function and the row.

The function runs fenced, in a process of its own (lf_wrap.scoring.fenced): `sys.exit` (at import
or in a row), a changed working directory, a row that outruns the function's `time_limit`
(seconds, default 60) and a function that ends its process are each that one UserError too, and
lf-wrap's own process, its working directory and the files it writes stay as they were."""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from lf_wrap.core.errors import UserError
from lf_wrap.scoring.bootstrap import Draw
from lf_wrap.scoring.family import MeanFamily, Metric, check_lengths

FENCED = Path(__file__).with_name("fenced.py")
LOAD_LIMIT = 300.0            # seconds to load the file: an import of torch or a model may take a while


class RowScoreError(UserError):
    """The function failed on one row; `row` is the row's 0-based position among the predictions."""

    def __init__(self, message: str, row: int):
        super().__init__(message)
        self.row = row


class MetricProcess:
    """The process the function runs in (lf_wrap.scoring.fenced): started to describe the function
    when the metric is loaded, started again to score and kept for the next batch; killed when a
    row outruns the function's time limit and when lf-wrap is stopped. A function that ends its
    process (`os._exit`, a crash) is one error naming the row."""

    def __init__(self, spec: str, path: Path, name: str, shown: str, cwd: str):
        self.spec, self.path, self.name, self.shown, self.cwd = spec, path, name, shown, cwd
        self.child: subprocess.Popen | None = None
        self.conn = None
        self.description: dict | None = None

    def start(self) -> dict:
        """Load the file in a new process: the function's description (attributes checked)."""
        self.conn, theirs = multiprocessing.Pipe()
        try:
            self.child = subprocess.Popen([sys.executable, str(FENCED), str(self.path), self.name,
                                           str(theirs.fileno()), self.shown],
                                          pass_fds=(theirs.fileno(),), cwd=self.cwd, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        _LIVE.add(self)
        where = f"metric {self.spec}: loading {self.path}"
        try:
            if not self.conn.poll(LOAD_LIMIT):
                raise UserError(f"{where} did not finish within {LOAD_LIMIT:g} s")
            kind, description = self.conn.recv()
        except EOFError:
            raise UserError(f"{where} ended its process (exit code {self.stop()})") from None
        except BaseException:
            self.stop(kill=True)
            raise
        if kind == "refused":
            self.stop()
            raise UserError(f"metric {self.spec}: {description}")
        if self.description is not None and description != self.description:
            self.stop()
            raise UserError(f"metric {self.spec}: {self.shown} changed while lf-wrap ran (was {self.description}, "
                            f"now {description}); run again")
        self.description = description
        return description

    def scores(self, predictions: Sequence[str], references: Sequence[Sequence[str]], key: str) -> list[float]:
        """The function's score of each row, in order; RowScoreError naming the first row that failed."""
        if self.child is None or self.child.poll() is not None:
            self.stop(kill=True)
            self.start()
        limit = self.description["time_limit"]
        out: list[float] = []
        try:
            self.conn.send(("rows", list(predictions), [list(refs) for refs in references]))
            for row, prediction in enumerate(predictions):
                where = f"metric {self.spec}: {key}() on row {row} (prediction {prediction[:40]!r})"
                if not self.conn.poll(limit):
                    self.stop(kill=True)
                    raise RowScoreError(f"{where} did not return within {limit:g} s (its time limit; a slower "
                                        f"metric sets {self.name}.time_limit = <seconds> in {self.shown})", row)
                try:
                    kind, value = self.conn.recv()
                except EOFError:
                    raise RowScoreError(f"{where} ended the metric's process (exit code {self.stop()})",
                                        row) from None
                if kind == "failed":
                    raise RowScoreError(f"{where} {value}", row)
                out.append(value)
        except RowScoreError:
            raise
        except BaseException:         # Ctrl-C, SIGTERM: the function may be mid-row; it goes now
            self.stop(kill=True)
            raise
        return out

    def stop(self, kill: bool = False) -> int | None:
        """End the process (closing its socket ends an idle one; `kill`, or 5 s later, SIGKILL); its exit code."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        child, self.child = self.child, None
        _LIVE.discard(self)
        if child is None:
            return None
        if not kill:
            try:
                return child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        child.kill()
        return child.wait()


_LIVE: set[MetricProcess] = set()


@atexit.register
def _stop_all() -> None:
    for process in list(_LIVE):
        process.stop()


def is_reference(spec: str) -> bool:
    """`file.py:function`: a metric of your own rather than a shipped family's name."""
    path, _, function = spec.rpartition(":")
    return bool(path) and path.endswith(".py") and function.isidentifier()


class CustomFamily(MeanFamily):
    """A family of one metric, scored by the user's function (None when it only describes a metric
    that metrics.json declared, for `lf-wrap report`)."""

    def __init__(self, spec: str, metric: Metric, aggregation: str = "mean", process: MetricProcess | None = None,
                 source_sha256: str | None = None):
        self.name, self.metrics, self.aggregation, self.process = spec, (metric,), aggregation, process
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
        if self.process is None:
            raise UserError(f"metric {self.name}: only declared here, not loaded; cannot score")
        key = self.keys[0]
        return [{key: value} for value in self.process.scores(predictions, references, key)]

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


@lru_cache(maxsize=32)
def _load(spec: str, cwd: str) -> CustomFamily:
    path_text, _, name = spec.rpartition(":")
    path = Path(cwd, path_text)
    if not path.is_file():
        raise UserError(f"metric {spec}: {path_text} not found (a path relative to {cwd}, or an absolute one)")
    source_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    process = MetricProcess(spec, path, name, path_text, cwd)
    description = process.start()
    process.stop()          # started again to score: no idle process while an engine generates
    aggregation = description["aggregation"]
    definition = description["doc"] or f"{spec}: the function's score of each row, {aggregation} over rows"
    return CustomFamily(spec, Metric(name, name, description["higher_is_better"], definition), aggregation,
                        process, source_sha256)


def load(spec: str) -> CustomFamily:
    """The family of `file.py:function`, the file loaded once per process (and working directory)."""
    return _load(spec, os.getcwd())


def declared(spec: str, declaration: dict, higher_is_better: dict) -> CustomFamily:
    """The family as metrics.json recorded it (its metric, definition, direction), without loading
    the file: what `lf-wrap report` needs to table it."""
    key = (declaration.get("metrics") or [spec.rpartition(":")[2]])[0]
    definition = (declaration.get("definitions") or {}).get(key, spec)
    return CustomFamily(spec, Metric(key, key, bool(higher_is_better.get(key, True)), definition))
