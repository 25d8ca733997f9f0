"""Prediction files scored row by row: their metrics, the per-row scores kept beside them, their
intervals and paired tests (`lf-wrap score`, `lf-wrap compare`, the eval's metrics.json).

A metric computed on 990 sentences would come out differently on another 990 from the same
source; the bootstrap estimates by how much, by recomputing it on resamples of the rows
(lf_wrap.scoring). That needs each row's scores, which are kept beside the predictions:

    predictions/<model>/<task>.scores.jsonl   one line per scored row, in row order:
                                              {"row", "id", <the family's row fields>}

e.g. `{"row": 3, "id": "a1", "bleu_stats": [12, 13, 7, 3, 1, 0, 12, 11, 10, 9]}`. `row` is the
dataset row (a file made elsewhere, without `row`: the line's 0-based position among the
file's lines), `id` the row's id or null. The eval rewrites the file (atomically) every time it
scores the predictions, so it always matches them. Each metric is computed once per file: the
family scores the rows, and the file's metrics are the family's corpus values of those rows.

Rows are resampled in row order, so that every file of a task (every model) is resampled on the
same rows: the interval of a model and its paired tests see the same draw. A paired test
compares two systems on the same test items, so two files are paired row by row, and only
where row, id and references agree."""

from __future__ import annotations


from dataclasses import dataclass
from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_bytes
from lf_wrap.evaluation import predictions as pred
from lf_wrap.scoring.bootstrap import Bootstrap, beyond_noise
from lf_wrap.scoring.custom import RowScoreError
from lf_wrap.tasks import Task


@dataclass
class ScoredFile:
    """One predictions file, scored: its metrics exactly as `lf-wrap score` prints them, and per
    line (file order) the record and its row scores."""

    path: Path
    records: list[dict]
    metrics: dict[str, float]
    fields: list[dict]

    @property
    def rows(self) -> list[int]:
        return row_indices(self.records)

    def row_scores(self) -> list[dict]:
        """What `<task>.scores.jsonl` holds: {"row", "id", **scores}, in row order."""
        lines = [{"row": row, "id": record.get("id"), **fields}
                 for row, record, fields in zip(self.rows, self.records, self.fields)]
        return sorted(lines, key=lambda line: line["row"])


def _carries_rows(records: list[dict]) -> bool:
    return all(isinstance(r.get("row"), int) and not isinstance(r.get("row"), bool) for r in records)


def row_indices(records: list[dict]) -> list[int]:
    """Each line's row: its `row` when every line has an integer one (lf-wrap eval's files),
    else its 0-based position in the file."""
    return [r["row"] for r in records] if _carries_rows(records) else list(range(len(records)))


def score_with_rows(path: Path, task: Task, no_answer_text: str | None = None) -> ScoredFile:
    """`lf-wrap score`: the task's metrics for one predictions file, with each row's scores. The
    no-answer text counts only for a no-answer family (default: the one the eval recorded beside
    the file, else the study's)."""
    path = Path(path)
    if task.no_answer and no_answer_text is None:
        no_answer_text = pred.default_no_answer_text(path)
    records = pred.read_lines(path)
    if not records:
        raise UserError(f"{path}: no predictions to score")
    if _carries_rows(records):      # a row twice would count twice in every metric
        _where(path, row_indices(records))
    predictions, references = pred.checked(path, records, task)
    family = task.family
    try:
        fields = family.rows(predictions, references, no_answer_text)
    except RowScoreError as err:
        raise UserError(f"{path}: line {err.row + 1} (row {row_indices(records)[err.row]}): {err}") from None
    return ScoredFile(path, records, family.corpus(fields), fields)


def write_scores(scored: ScoredFile) -> Path:
    """Write `<task>.scores.jsonl` beside the predictions (atomically); return its path."""
    target = pred.scores_path(scored.path)
    atomic_write_bytes(target, jsonlines.encode(scored.row_scores()))
    return target


def read_scores(path: Path) -> list[dict]:
    """The lines of a `<task>.scores.jsonl` (row order, as written)."""
    return pred.read_lines(path)


def intervals(task: Task, rows: list[dict], bootstrap: Bootstrap) -> dict[str, list[float]]:
    """Each of the task's metrics: its bootstrap interval [low, high] over the rows (row order)."""
    return {metric: list(task.family.interval(metric, rows, bootstrap)) for metric in task.metrics}


def paired(task: Task, rows_a: list[dict], rows_b: list[dict], bootstrap: Bootstrap) -> dict[str, dict]:
    """Each metric: b against a on the same resampled rows (row i of a and of b: the same item).
    {"difference": b - a, "ci95": [low, high] of it, "p_value", "rows"}."""
    out = {}
    for metric in task.metrics:
        test = task.family.paired(metric, rows_a, rows_b, bootstrap)
        out[metric] = {"difference": test["difference"], "ci95": test["ci95"], "p_value": test["p_value"],
                       "rows": len(rows_a)}
    return out


# ---------------------------------------------------------------- two files, the same rows


def _where(path: Path, rows: list[int]) -> dict[int, int]:
    where: dict[int, int] = {}
    for index, row in enumerate(rows):
        if row in where:
            raise UserError(f"{path}:{index + 1}: row {row} appears twice (also line {where[row] + 1}); "
                            "each row is scored once: remove the repeated line")
        where[row] = index
    return where


def match_rows(a: ScoredFile, b: ScoredFile) -> list[tuple[int, int]]:
    """(line index in a, line index in b) for every row, in row order. Rows are matched by `row`
    when both files carry it on every line, else by position. Any row in one file only, or whose
    id or references differ, is a UserError naming the first such row: file, line and id."""
    by_row = _carries_rows(a.records) and _carries_rows(b.records)
    rows_a, rows_b = (row_indices(f.records) if by_row else list(range(len(f.records))) for f in (a, b))
    where_a, where_b = _where(a.path, rows_a), _where(b.path, rows_b)
    pairs = []
    for row in sorted(set(where_a) | set(where_b)):
        if row not in where_a or row not in where_b:
            (have, index), missing = ((a, where_a[row]), b) if row in where_a else ((b, where_b[row]), a)
            what = f"row {row}" if by_row else f"line {index + 1} of {len(have.records)}"
            raise UserError(f"{have.path}:{index + 1}: {what} (id {have.records[index].get('id')!r}) is not in "
                            f"{missing.path} ({len(missing.records)} rows); a comparison needs the same rows in "
                            "both files")
        i, j = where_a[row], where_b[row]
        ra, rb = a.records[i], b.records[j]
        if ra.get("id") != rb.get("id"):
            raise UserError(f"{b.path}:{j + 1}: row {row} has id {rb.get('id')!r} where {a.path}:{i + 1} has "
                            f"{ra.get('id')!r}; not the same test item")
        if ra.get("references") != rb.get("references"):
            raise UserError(f"{b.path}:{j + 1}: row {row} (id {rb.get('id')!r}) has other references than "
                            f"{a.path}:{i + 1}; not the same test item")
        pairs.append((i, j))
    return pairs


def compare_files(path_a: Path, path_b: Path, task: Task, no_answer_text: str | None = None,
                  bootstrap: Bootstrap = Bootstrap()) -> dict:
    """`lf-wrap compare A B`: is B better than A on the same rows? Each metric of A and of B
    (exactly as `lf-wrap score` gives them), B - A, the interval of B - A, the p-value of the
    paired bootstrap test, and `significant`: whether p is below 1 - confidence (beyond_noise)."""
    a = score_with_rows(path_a, task, no_answer_text)
    b = score_with_rows(path_b, task, no_answer_text)
    pairs = match_rows(a, b)
    tests = paired(task, [a.fields[i] for i, _ in pairs], [b.fields[j] for _, j in pairs], bootstrap)
    return {"a": str(path_a), "b": str(path_b), "task": task.name, "rows": len(pairs),
            "resamples": bootstrap.resamples, "seed": bootstrap.seed, "confidence": bootstrap.confidence,
            "metrics": {metric: {"a": a.metrics[metric], "b": b.metrics[metric],
                                 "difference": b.metrics[metric] - a.metrics[metric],
                                 "ci95": tests[metric]["ci95"], "p_value": tests[metric]["p_value"],
                                 "significant": beyond_noise(tests[metric]["p_value"], bootstrap.confidence)}
                        for metric in task.metrics}}
