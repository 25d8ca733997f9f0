"""What every metric family is: its metrics, its per-row scores, how rows combine, how they resample.

A family (`registry.FAMILIES`: bleu, chrf, rouge, squad_v2, exact_match; or a function of your
own, `custom`) turns predictions and reference lists into one JSON-serialisable dict per row
(`rows`), which is what `<task>.scores.jsonl` holds; everything else is computed from those
rows alone, so the metric is computed once per predictions file:

    value(metric, rows)               the corpus value (0-1), equal to scoring the strings
    resample(metric, rows, draw)      the metric on each resample of the rows (bootstrap.Draw)
    resample_together(metric, systems, draw)   the same for several systems on one draw
    interval(metric, rows, bootstrap) percentile interval over the resamples
    paired(metric, rows_a, rows_b, bootstrap)   b against a on the same resampled rows

Two shapes cover every shipped family. `MeanFamily`: a row holds its own score of each metric
and the corpus value is the mean (rouge, squad_v2, exact_match). `StatsFamily`: a row holds
sufficient statistics under one key and the corpus value is a formula of their sums, not a mean
of sentence scores (bleu's n-gram matches, chrf's character n-gram counts). Both resample by
column sums (`columns`, `from_sums`): several systems of a task go through one matrix product
over the same draw, so a paired test sees exactly the numbers of each system's own interval.
A writer may add `row` or `id` to each dict: a family reads only its own keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lf_wrap.scoring.bootstrap import Bootstrap, Draw, p_value, percentile_interval


@dataclass(frozen=True)
class Metric:
    name: str                # the key in metrics.json and in `lf-wrap score --json`
    label: str               # how the results table names it
    higher_is_better: bool
    definition: str


def check_lengths(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")


class Family:
    """A metric family. Subclasses set `name`, `metrics` (headline first) and `no_answer`
    (references [] mean "unanswerable"; the no-answer text the model was taught reads as ""),
    and implement `rows` and `value`, and either `columns` and `from_sums` (a corpus value that
    is a function of column sums) or `resample_together`."""

    name: str
    metrics: tuple[Metric, ...]
    no_answer: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def metric(self, key: str) -> Metric:
        for metric in self.metrics:
            if metric.name == key:
                return metric
        raise ValueError(f"unknown metric '{key}' for {self.name}; choose one of: {', '.join(self.keys)}")

    def describe(self, key: str) -> str:
        return self.metric(key).definition

    def identity(self) -> dict:
        """What decides its scores, for a stored score's identity (the search's ledger): the family
        and its metrics (lf-wrap's version, recorded beside it, covers the shipped families' code)."""
        return {"family": self.name, "metrics": list(self.keys), "no_answer": self.no_answer}

    # ---------------------------------------------------------------- per family

    def rows(self, predictions: Sequence[str], references: Sequence[Sequence[str]],
             no_answer_text: str | None = None) -> list[dict]:
        """One dict per row, in order. `no_answer_text` counts only for a no-answer family."""
        raise NotImplementedError

    def value(self, metric: str, rows: Sequence[dict]) -> float:
        raise NotImplementedError

    def columns(self, metric: str, rows: Sequence[dict]) -> np.ndarray:
        """(n_rows, k): what is summed over each resample's rows."""
        raise NotImplementedError

    def from_sums(self, metric: str, sums: np.ndarray, n_rows: int) -> np.ndarray:
        """The metric on each resample, from its (resamples, k) column sums."""
        raise NotImplementedError

    def resample_together(self, metric: str, systems: Sequence[Sequence[dict]], draw: Draw) -> list[np.ndarray]:
        """The metric on each resample of each system's rows, all on the same draw (one matrix product)."""
        columns = [np.asarray(self.columns(metric, rows), dtype=np.float64) for rows in systems]
        sums = draw.sums(np.column_stack(columns))
        out, start = [], 0
        for part in columns:
            out.append(self.from_sums(metric, sums[:, start:start + part.shape[1]], len(part)))
            start += part.shape[1]
        return out

    def resample(self, metric: str, rows: Sequence[dict], draw: Draw) -> np.ndarray:
        return self.resample_together(metric, [rows], draw)[0]

    def significance(self, metric: str, rows_a: Sequence[dict], rows_b: Sequence[dict], draw: Draw,
                     a: float, b: float, resampled_a: np.ndarray, resampled_b: np.ndarray) -> float:
        """The paired test's p-value; BLEU computes it on sacrebleu's own scores instead."""
        return p_value(a, b, resampled_a, resampled_b)

    # ---------------------------------------------------------------- shared

    def corpus(self, rows: Sequence[dict]) -> dict[str, float]:
        """Every metric of the family over all rows, headline first (what `lf-wrap score` prints)."""
        return {key: self.value(key, rows) for key in self.keys}

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]],
              no_answer_text: str | None = None) -> dict[str, float]:
        return self.corpus(self.rows(predictions, references, no_answer_text))

    def interval(self, metric: str, rows: Sequence[dict], bootstrap: Bootstrap = Bootstrap()) -> tuple[float, float]:
        """Percentile bootstrap interval of the metric over resamples of the rows (0-1)."""
        resampled = self.resample(metric, rows, bootstrap.draw(len(rows)))
        return percentile_interval(resampled, bootstrap.confidence)

    def paired(self, metric: str, rows_a: Sequence[dict], rows_b: Sequence[dict],
               bootstrap: Bootstrap = Bootstrap()) -> dict:
        """Paired bootstrap of system b against system a on the same resampled rows (row i of a
        and row i of b: the same test item). {"a", "b": corpus values, "difference": b - a,
        "ci95": [low, high] of b - a over the resamples (at the bootstrap's confidence), "p_value"};
        the p-value does not depend on the confidence."""
        if len(rows_a) != len(rows_b):
            raise ValueError(f"paired test needs the same rows: {len(rows_a)} rows against {len(rows_b)}")
        draw = bootstrap.draw(len(rows_a))
        resampled_a, resampled_b = self.resample_together(metric, [rows_a, rows_b], draw)
        a, b = self.value(metric, rows_a), self.value(metric, rows_b)
        return {"a": a, "b": b, "difference": b - a,
                "ci95": list(percentile_interval(resampled_b - resampled_a, bootstrap.confidence)),
                "p_value": self.significance(metric, rows_a, rows_b, draw, a, b, resampled_a, resampled_b)}

    def _stored(self, metric: str, key: str, rows: Sequence[dict], dtype, width: int | None = None) -> np.ndarray:
        """The rows' stored values under `key`: (n,) or (n, width)."""
        self.metric(metric)
        if not rows:
            raise ValueError(f"no rows to compute {metric} from")
        try:
            values = np.array([row[key] for row in rows], dtype=dtype)
        except KeyError:
            raise ValueError(f"the rows hold no '{key}' (scores of another task?)") from None
        return values.reshape(len(rows), width) if width else values


class MeanFamily(Family):
    """A row holds its own score of each metric (under the metric's name); the corpus value is
    their mean, a resample's value the mean of its rows."""

    def row_scores(self, prediction: str, references: Sequence[str], no_answer_text: str | None) -> dict:
        raise NotImplementedError

    def rows(self, predictions, references, no_answer_text=None) -> list[dict]:
        check_lengths(predictions, references)
        return [self.row_scores(p, refs, no_answer_text) for p, refs in zip(predictions, references)]

    def value(self, metric: str, rows: Sequence[dict]) -> float:
        values = self._stored(metric, metric, rows, np.float64)
        return sum(values.tolist()) / len(values)     # a sequential sum, as the scores were always added

    def columns(self, metric: str, rows: Sequence[dict]) -> np.ndarray:
        return self._stored(metric, metric, rows, np.float64)[:, None]

    def from_sums(self, metric: str, sums: np.ndarray, n_rows: int) -> np.ndarray:
        return sums[:, 0] / n_rows


class StatsFamily(Family):
    """A row holds `width` sufficient statistics under `stats_key` (one metric); the corpus value
    is `from_totals` of their sums, over all rows or over a resample's rows."""

    stats_key: str
    width: int

    def from_totals(self, totals: Sequence[float]) -> float:
        raise NotImplementedError

    def stats(self, metric: str, rows: Sequence[dict]) -> np.ndarray:
        return self._stored(metric, self.stats_key, rows, np.int64, self.width)

    def value(self, metric: str, rows: Sequence[dict]) -> float:
        return self.from_totals([int(x) for x in self.stats(metric, rows).sum(axis=0)])

    def columns(self, metric: str, rows: Sequence[dict]) -> np.ndarray:
        return self.stats(metric, rows)

    def from_sums(self, metric: str, sums: np.ndarray, n_rows: int) -> np.ndarray:
        return np.array([self.from_totals(t) for t in sums.tolist()])
