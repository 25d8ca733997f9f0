"""Every number with its uncertainty: per-row scores, bootstrap intervals and paired tests.

A corpus metric is recomputed on resamples of the test rows, so each row keeps what its metric
needs: for ROUGE and SQuAD v2 the row's own score (the corpus value is their mean), for BLEU the
row's sufficient statistics (the corpus value is BLEU of their sums, not a mean of sentence
BLEUs). `row_scores` takes a task's metric family (`metrics.FAMILIES`: translate is scored with
bleu, summarize with rouge, qa with squad_v2; a task of your own with any of them, or
exact_match) and returns one JSON-serialisable dict per row, in the order of the predictions:

    bleu         {"bleu_stats": [hyp_len, ref_len, match_1..match_4, total_1..total_4]}   (ints)
    rouge        {"rouge1": f, "rouge2": f, "rougeL": f, "rougeLsum": f}
    squad_v2     {"exact_match": 0.0 or 1.0, "f1": f}
    exact_match  {"exact_match": 0.0 or 1.0}

which is what `<task>.scores.jsonl` holds; `corpus_value`, `bootstrap_interval` and `paired_test`
read only the key of their metric, so a writer may add `row` or `id` to each dict.

Resampling: resample i takes rows `rng.integers(0, n, (N, n))[i]` from `numpy.random.default_rng(seed)`,
the same draw as sacrebleu's `rng.choice(n, (N, n))`. It depends only on (n, N, seed), so every
metric and every system of a task is resampled on the same rows: that is what makes a paired test
paired. The draw is held as a count matrix (how often each row is in each resample) and a
resample's sum is one matrix product; the last matrix is kept for the next call with the same
(n, N, seed) while it is at most 128 MiB (so call task by task: the tasks' row counts differ),
and larger draws are made in chunks of about 100 MiB.

BLEU goes through sacrebleu 2.6's own code over the stored statistics instead of the strings:
the same draw, the same summed statistics, and for the paired test sacrebleu's scoring of each
resample (`BLEU._compute_score_from_stats` on float32 sums, as `_paired_bs_test` has them) and its
`sacrebleu.significance._compute_p_value`. So the p-value is sacrebleu's for the same seed and
resample count, bit for bit (sacrebleu reads the seed from SACREBLEU_SEED, default 12345, the
default here too), while a resample's token count stays under 2**24 (sacrebleu's float32 sum is
exact up to there) and the seed is not 0 (`PairedTest` treats 0 as "no seed"). Intervals score
each resample with the study's formula instead, in float64, and match sacrebleu's to its float32
precision (tests check both). The strings are not needed: sacrebleu's resampling only ever sums
per-sentence statistics, which the rows keep, so one API serves every metric. These functions
are sacrebleu's private ones; requirements pin 2.6.0 and tests/test_stats.py fails if another
version draws, counts or scores differently.

Every value returned is on the metric's 0-1 scale, as `metrics` reports it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np

from lf_wrap.evaluation import metrics

BLEU_STATS = "bleu_stats"
_ORDER = 4                      # BLEU's n-gram orders, evaluate's and sacrebleu's default
_CHUNK_ENTRIES = 2**22          # per chunk of the draw: 32 MiB of int64 indices, ~100 MiB while counted
_CACHED_ENTRIES = 2**24         # a draw up to 128 MiB of float64 counts is kept for the next call

# The resample counts a user may ask for (`--resamples` of score and compare, the eval recipe's
# `bootstrap.resamples`): one rule for all. Below 100 a 95% interval's ends are the one or two
# most extreme resamples (with 1 or 2 the interval need not even contain the value); above
# 10 million the draw costs minutes and gigabytes (10^12 exhausts memory) for an interval that
# no longer moves. The functions below take any count; the bound is for what a user types.
MIN_RESAMPLES, MAX_RESAMPLES = 100, 10_000_000


# ---------------------------------------------------------------- per-row scores


@lru_cache(maxsize=1)
def _sacrebleu_bleu():
    """sacrebleu's BLEU as `evaluate`'s: no smoothing, all four orders, over tokens we pass in.

    The tokens come from `metrics.tokenize_13a`, the study's tokenisation, and sacrebleu counts
    them as given (tokenize="none"). That is BLEU(tokenize="13a") except for one corner:
    sacrebleu strips trailing whitespace before its 13a tokeniser, `evaluate` does not, and
    13a deletes "-\\n", so a text ending in "-\\n" gets one token more under sacrebleu."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="none", smooth_method="none", effective_order=False, force=True)


def _bleu_rows(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[dict]:
    """sacrebleu's per-sentence statistics, with `evaluate`'s reference length.

    With several references the two BLEUs differ in the brevity penalty only: `evaluate` (and
    so the study) sums the *shortest* reference's length, sacrebleu the *closest* one's (the
    shorter on a tie). The stored `ref_len` is the shortest, so `corpus_value("bleu", rows)`
    equals `metrics.bleu` for any number of references; sacrebleu's own `PairedTest` on the same
    strings gives the same p-value when each row has one reference (or shortest == closest)."""
    if any(not refs for refs in references):
        raise ValueError("BLEU needs at least one reference per prediction")
    if not predictions:
        return []
    hyps = [" ".join(metrics.tokenize_13a(p)) for p in predictions]
    ref_tokens = [[metrics.tokenize_13a(r) for r in refs] for refs in references]
    # sacrebleu takes references as streams (the i-th reference of every row), None where a row has fewer.
    streams = [[" ".join(toks[i]) if i < len(toks) else None for toks in ref_tokens]
               for i in range(max(len(toks) for toks in ref_tokens))]
    rows = []
    for sentence, toks in zip(_sacrebleu_bleu()._extract_corpus_statistics(hyps, streams), ref_tokens):
        sentence = [int(x) for x in sentence]
        sentence[1] = min(len(t) for t in toks)
        rows.append({BLEU_STATS: sentence})
    return rows


def row_scores(family: str, predictions: Sequence[str], references: Sequence[Sequence[str]],
               no_answer_text: str | None = None) -> list[dict]:
    """One dict per row with what the family's metrics need to be recomputed on any resample.
    `no_answer_text` counts only for a no-answer family (squad_v2), as in `metrics.score_task`."""
    if family not in metrics.FAMILIES:
        raise ValueError(f"unknown metric family '{family}'; choose one of: {', '.join(metrics.FAMILIES)}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if family == "bleu":
        return _bleu_rows(predictions, references)
    if family == "rouge":
        per_type = metrics.rouge_per_example(predictions, references)
        return [{t: per_type[t][i] for t in metrics.ROUGE_TYPES} for i in range(len(predictions))]
    # Exact match and SQuAD v2 of one row are that row's score: the family's own function, row by
    # row, so the normalisation, the no-answer mapping and the max over gold answers cannot drift.
    score = metrics.FAMILIES[family].score
    no_answer_text = no_answer_text if metrics.FAMILIES[family].no_answer else None
    return [score([p], [refs], no_answer_text) for p, refs in zip(predictions, references)]


def _values(metric: str, rows: Sequence[dict]) -> np.ndarray:
    """The rows' stored values of one metric: (n, 10) ints for BLEU, (n,) floats otherwise."""
    if metric not in metrics.METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(metrics.METRICS)}")
    if not rows:
        raise ValueError(f"no rows to compute {metric} from")
    key = BLEU_STATS if metric == "bleu" else metric
    try:
        if metric == "bleu":
            return np.array([row[key] for row in rows], dtype=np.int64).reshape(len(rows), 2 + 2 * _ORDER)
        return np.array([row[key] for row in rows], dtype=np.float64)
    except KeyError:
        raise ValueError(f"the rows hold no '{key}' (scores of another task?)") from None


def _bleu_from_totals(totals: Sequence[int]) -> float:
    """`metrics.bleu`'s formula, operation for operation, on summed statistics (0-1)."""
    translation_length, reference_length = totals[0], totals[1]
    matches, possible = totals[2:2 + _ORDER], totals[2 + _ORDER:]
    precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) / _ORDER for p in precisions)) if min(precisions) > 0 else 0.0
    if reference_length == 0 or translation_length == 0:
        return 0.0
    ratio = translation_length / reference_length
    return geo_mean * (1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio))


def corpus_value(metric: str, rows: Sequence[dict]) -> float:
    """The metric over all rows, equal to `metrics.score_task` on the strings the rows came from."""
    values = _values(metric, rows)
    if metric == "bleu":
        return _bleu_from_totals([int(x) for x in values.sum(axis=0)])
    return sum(values.tolist()) / len(values)   # the same sequential sum as metrics.rouge and squad_v2


# ---------------------------------------------------------------- resampling


def _draw_counts(n_rows: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Count matrices (resamples x rows) of the draw, chunk by chunk; the generator's stream
    continues across chunks, so the chunks together are the one-shot draw."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ENTRIES // n_rows)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        index = rng.integers(0, n_rows, (size, n_rows))
        index += np.arange(size)[:, None] * n_rows      # one bincount for the whole chunk
        yield np.bincount(index.ravel(), minlength=size * n_rows).reshape(size, n_rows).astype(np.float64)


@lru_cache(maxsize=1)
def _cached_counts(n_rows: int, n_resamples: int, seed: int) -> np.ndarray:
    counts = np.empty((n_resamples, n_rows))
    start = 0
    for part in _draw_counts(n_rows, n_resamples, seed):
        counts[start:start + len(part)] = part
        start += len(part)
    counts.flags.writeable = False
    return counts


def _resampled_sums(columns: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, k): each resample's sum of each column of `columns` (n_rows, k)."""
    n_rows = len(columns)
    if n_rows * n_resamples <= _CACHED_ENTRIES:
        return _cached_counts(n_rows, n_resamples, seed) @ columns
    return np.concatenate([counts @ columns for counts in _draw_counts(n_rows, n_resamples, seed)])


def _resampled_totals(systems: Sequence[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Per system, (n_resamples, k): the sums of its stored values on each resample. All systems
    go through one matrix product over the same draw."""
    columns = np.column_stack([v.astype(np.float64) for v in systems])
    sums = _resampled_sums(columns, n_resamples, seed)
    width = columns.shape[1] // len(systems)
    return [sums[:, i * width:(i + 1) * width] for i in range(len(systems))]


def _study_values(metric: str, totals: np.ndarray, n_rows: int) -> np.ndarray:
    """The metric on each resample as the study computes it (the formula of `corpus_value`)."""
    if metric == "bleu":
        return np.array([_bleu_from_totals(t) for t in totals.tolist()])
    return totals[:, 0] / n_rows


def _sacrebleu_scores(totals: np.ndarray) -> np.ndarray:
    """sacrebleu's BLEU (0-100) on each resample, bit for bit: float32 sums, as its own code has them."""
    bleu = _sacrebleu_bleu()
    return np.array([bleu._compute_score_from_stats(t).score for t in totals.astype(np.float32)])


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The k-th smallest and k-th largest resample, k = floor(N (1 - confidence) / 2): sacrebleu's
    order statistics (N // 40 from each end at 95%), no interpolation between resamples."""
    ordered = np.sort(samples)
    k = int(len(ordered) * (1 - confidence) / 2 + 1e-9)
    return float(ordered[k]), float(ordered[len(ordered) - 1 - k])


def _check_draw(n_resamples: int, confidence: float = 0.95) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, not {confidence}")


def bootstrap_interval(metric: str, rows: Sequence[dict], n_resamples: int = 1000, seed: int = 12345,
                       confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the metric over resamples of the rows (0-1).

    For BLEU at 95% its ends are those of sacrebleu's `corpus_score(..., n_bootstrap=N)`, which
    reports half their distance as `ci` around its score; they agree to sacrebleu's float32
    precision (about 1e-7 of the score), because the study's formula scores each resample here.
    That keeps a perfect system's interval at (1.0, 1.0), where sacrebleu has 100.00000000000004."""
    _check_draw(n_resamples, confidence)
    values = _values(metric, rows)
    (totals,) = _resampled_totals([values], n_resamples, seed)
    return _percentile_interval(_study_values(metric, totals, len(values)), confidence)


def _p_value(point_a: float, point_b: float, resampled_a: np.ndarray, resampled_b: np.ndarray) -> float:
    """sacrebleu's paired bootstrap p-value (Koehn 2004, as Moses' script computes it), every metric:

        p = (1 + #{i : |d_i| - mean_j |d_j| > |d|}) / (N + 1)

    d the observed difference, d_i the difference on resample i. One departure: when the two
    systems score the same on every resample (a system against itself), sacrebleu gives
    1 / (N + 1), which would read as significant; this gives 1."""
    from sacrebleu.significance import _compute_p_value

    observed = abs(point_a - point_b)
    sample_diffs = np.abs(resampled_b - resampled_a)
    if observed == 0 and not sample_diffs.any():
        return 1.0
    return float(_compute_p_value(sample_diffs - sample_diffs.mean(), observed))


def paired_test(metric: str, rows_a: Sequence[dict], rows_b: Sequence[dict], n_resamples: int = 1000,
                seed: int = 12345, confidence: float = 0.95) -> dict:
    """Paired bootstrap of system b against system a on the same resampled rows.

    Returns {"a", "b": corpus values, "difference": b - a, "ci95": [low, high] of b - a over the
    resamples (at `confidence`, 95% unless asked otherwise), "p_value"}. Row i of a and row i of b
    must be the same test item. For BLEU the p-value is computed on sacrebleu's own scores, so it
    equals `PairedTest(..., test_type="bs")`'s; the p-value does not depend on `confidence`."""
    if len(rows_a) != len(rows_b):
        raise ValueError(f"paired test needs the same rows: {len(rows_a)} rows against {len(rows_b)}")
    _check_draw(n_resamples, confidence)
    values_a, values_b = _values(metric, rows_a), _values(metric, rows_b)
    totals_a, totals_b = _resampled_totals([values_a, values_b], n_resamples, seed)
    resampled_a, resampled_b = (_study_values(metric, t, len(values_a)) for t in (totals_a, totals_b))
    a, b = corpus_value(metric, rows_a), corpus_value(metric, rows_b)
    if metric == "bleu":
        bleu = _sacrebleu_bleu()
        p_value = _p_value(bleu._aggregate_and_compute(values_a.tolist()).score,
                           bleu._aggregate_and_compute(values_b.tolist()).score,
                           _sacrebleu_scores(totals_a), _sacrebleu_scores(totals_b))
    else:
        p_value = _p_value(a, b, resampled_a, resampled_b)
    return {"a": a, "b": b, "difference": b - a,
            "ci95": list(_percentile_interval(resampled_b - resampled_a, confidence)), "p_value": p_value}


def retained_gain(metric: str, base: Sequence[dict], specialist: Sequence[dict], candidate: Sequence[dict],
                  n_resamples: int = 1000, seed: int = 12345, confidence: float = 0.95) -> dict:
    """How much of a specialist's gain over the base a candidate (a merge) keeps, with its interval:
    g = (s(candidate) - s(base)) / (s(specialist) - s(base)), all three scored on the same rows and
    resampled together (one draw), so the interval carries the noise of all three. Resamples where
    the specialist does not beat the base are left out of the interval (g is undefined there) and
    counted; {"value", "ci95", "resamples_used"}. The merge search ranks candidates by it."""
    _check_draw(n_resamples, confidence)
    resampled = retained_gain_resamples(metric, base, specialist, candidate, n_resamples, seed)
    usable = ~np.isnan(resampled)
    ratios = resampled[usable]
    s_base, s_spec, s_cand = (corpus_value(metric, rows) for rows in (base, specialist, candidate))
    value = (s_cand - s_base) / (s_spec - s_base) if s_spec > s_base else None
    interval = list(_percentile_interval(ratios, confidence)) if usable.sum() >= 40 else None
    return {"value": value, "ci95": interval, "resamples_used": int(usable.sum())}


def retained_gain_resamples(metric: str, base: Sequence[dict], specialist: Sequence[dict], candidate: Sequence[dict],
                            n_resamples: int = 1000, seed: int = 12345) -> np.ndarray:
    """The retained gain on each resample of the rows (base, specialist and candidate on one
    draw); NaN where the specialist does not beat the base on that resample."""
    if not len(base) == len(specialist) == len(candidate):
        raise ValueError(f"retained gain needs the same rows: {len(base)}, {len(specialist)}, {len(candidate)}")
    _check_draw(n_resamples)
    values = [_values(metric, rows) for rows in (base, specialist, candidate)]
    resampled = [_study_values(metric, t, len(values[0])) for t in _resampled_totals(values, n_resamples, seed)]
    gain = resampled[1] - resampled[0]
    usable = gain > 0
    out = np.full(n_resamples, np.nan)
    out[usable] = (resampled[2][usable] - resampled[0][usable]) / gain[usable]
    return out
