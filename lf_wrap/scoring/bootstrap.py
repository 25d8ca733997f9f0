"""The bootstrap: its settings (one type, one set of defaults) and the seeded draw of the rows.

Resample i takes rows `rng.integers(0, n, (N, n))[i]` from `numpy.random.default_rng(seed)`, the
same draw as sacrebleu's `rng.choice(n, (N, n))`. It depends only on (n, N, seed), so every metric
and every system of a task is resampled on the same rows: that is what makes a paired test paired.
A family reads the draw either as sums (`Draw.sums`: each resample's sum of each column of its
per-row statistics; every shipped family's corpus value is a function of such sums) or as the
row indices themselves (`Draw.indices`, for an aggregate such as a median). The sums are one
matrix product with a count matrix (how often each row is in each resample); the last matrix is
kept for the next call with the same (n, N, seed) while it is at most 128 MiB (so call task by
task: the tasks' row counts differ), and larger draws are made in chunks of about 100 MiB.

The interval's ends and the paired test's p-value are sacrebleu's (order statistics without
interpolation; Koehn's paired bootstrap as Moses computes it), for every metric."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np

# The resample counts a user may ask for (`--resamples` of score and compare, the eval recipe's
# `bootstrap.resamples`): one rule for all. Below 100 a 95% interval's ends are the one or two
# most extreme resamples (with 1 or 2 the interval need not even contain the value); above
# 10 million the draw costs minutes and gigabytes (10^12 exhausts memory) for an interval that
# no longer moves. `Bootstrap` itself takes any count; the bound is for what a user types.
MIN_RESAMPLES, MAX_RESAMPLES = 100, 10_000_000

_CHUNK_ENTRIES = 2**22          # per chunk of the draw: 32 MiB of int64 indices, ~100 MiB while counted
_CACHED_ENTRIES = 2**24         # a draw up to 128 MiB of float64 counts is kept for the next call


@dataclass(frozen=True)
class Bootstrap:
    """How the rows are resampled: seeded, so every interval can be computed again. The eval
    recipe's `bootstrap` section, `--resamples`/`--seed` of score and compare, and the merge
    search's report figures all start from these defaults."""

    resamples: int = 1000
    seed: int = 12345          # sacrebleu's default (SACREBLEU_SEED): BLEU p-values then equal its own
    confidence: float = 0.95

    def __post_init__(self):
        if self.resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, not {self.resamples}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie between 0 and 1, not {self.confidence}")

    def draw(self, n_rows: int) -> "Draw":
        return Draw(n_rows, self.resamples, self.seed)


def _index_chunks(n_rows: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The draw's row indices, (resamples in the chunk, n_rows) a chunk; the generator's stream
    continues across chunks, so the chunks together are the one-shot draw."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ENTRIES // n_rows)
    for start in range(0, n_resamples, chunk):
        yield rng.integers(0, n_rows, (min(chunk, n_resamples - start), n_rows))


def _count_chunks(n_rows: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    for index in _index_chunks(n_rows, n_resamples, seed):
        size = len(index)
        index += np.arange(size)[:, None] * n_rows      # one bincount for the whole chunk
        yield np.bincount(index.ravel(), minlength=size * n_rows).reshape(size, n_rows).astype(np.float64)


@lru_cache(maxsize=1)
def _cached_counts(n_rows: int, n_resamples: int, seed: int) -> np.ndarray:
    counts = np.empty((n_resamples, n_rows))
    start = 0
    for part in _count_chunks(n_rows, n_resamples, seed):
        counts[start:start + len(part)] = part
        start += len(part)
    counts.flags.writeable = False
    return counts


@dataclass(frozen=True)
class Draw:
    """The resamples of `n_rows` rows: `resamples` draws of n_rows rows with replacement, seeded."""

    n_rows: int
    resamples: int
    seed: int

    def sums(self, columns: np.ndarray) -> np.ndarray:
        """(resamples, k): each resample's sum of each column of `columns` (n_rows, k)."""
        columns = np.asarray(columns, dtype=np.float64)
        if self.n_rows * self.resamples <= _CACHED_ENTRIES:
            return _cached_counts(self.n_rows, self.resamples, self.seed) @ columns
        return np.concatenate([counts @ columns for counts in _count_chunks(self.n_rows, self.resamples, self.seed)])

    def indices(self) -> Iterator[np.ndarray]:
        """The resamples' row indices, a chunk of resamples at a time (in order)."""
        yield from _index_chunks(self.n_rows, self.resamples, self.seed)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The k-th smallest and k-th largest resample, k = floor(N (1 - confidence) / 2): sacrebleu's
    order statistics (N // 40 from each end at 95%), no interpolation between resamples."""
    ordered = np.sort(samples)
    k = int(len(ordered) * (1 - confidence) / 2 + 1e-9)
    return float(ordered[k]), float(ordered[len(ordered) - 1 - k])


def beyond_noise(p: float | None, confidence: float) -> bool:
    """The one rule for "beyond resampling noise", in the eval's table, `lf-wrap compare` and the
    search (lf_wrap.search.report.noise): the paired test's p-value is below 1 - confidence (0.05 at the
    default 95%). The words follow the p-value printed beside them; the interval at the same
    confidence nearly always agrees, and where it touches 0 with p below the level, p decides."""
    return p is not None and p < round(1 - confidence, 12)


def p_value(point_a: float, point_b: float, resampled_a: np.ndarray, resampled_b: np.ndarray) -> float:
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
