"""Benchmark: bootstrap intervals and paired tests for a whole study, on synthetic per-row scores.

    PYTHONPATH=. .venv/bin/python bench/bench_bootstrap.py    # 6 models x 3 tasks x 10,000 rows x 1,000 resamples

Per task, every metric of every model gets its interval, and every model after the first is
compared with the first on every metric (paired test), as the results table would show them.
The rows are what a family's `rows` stores (lists of dicts), drawn at random: BLEU statistics of
8-40-token sentences with a per-model match rate, ROUGE F-measures and SQuAD v2 scores from beta
and Bernoulli draws; no model, no text. Building them is not timed; reading them from the dicts
is, and so is drawing the resamples once per task (in the first metric's time). The target is
10 s on a 2-core machine; the figure printed is one run, with BLEU's share apart (each resample
is scored in Python: the study's formula, and sacrebleu's for the paired tests' p-values)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from lf_wrap.scoring import bootstrap
from lf_wrap.scoring.bootstrap import Bootstrap
from lf_wrap.tasks import TASKS

# The study's tasks and the metrics each reports (translate: bleu; summarize: rouge1-Lsum; qa: EM, F1).
TASK_METRICS = {name: task.metrics for name, task in TASKS.items()}


def synthetic_rows(task: str, n_rows: int, quality: float, rng: np.random.Generator) -> list[dict]:
    """Per-row scores shaped like a family's `rows` output; `quality` in (0, 1) moves every metric up."""
    if task == "translate":
        hyp = rng.integers(8, 41, n_rows)
        ref = np.maximum(1, hyp + rng.integers(-5, 6, n_rows))
        totals = np.stack([np.maximum(0, hyp - k) for k in range(4)], axis=1)
        matches = rng.binomial(totals, quality ** np.arange(1, 5))
        stats_ = np.column_stack([hyp, ref, matches, totals])
        return [{"bleu_stats": row} for row in stats_.tolist()]
    if task == "summarize":
        r1 = rng.beta(8 * quality, 8 * (1 - quality), n_rows)
        return [{"rouge1": a, "rouge2": a * b, "rougeL": a * c, "rougeLsum": a * c}
                for a, b, c in zip(r1.tolist(), rng.random(n_rows).tolist(), rng.uniform(0.7, 1, n_rows).tolist())]
    exact = rng.random(n_rows) < quality
    f1 = np.where(exact, 1.0, rng.beta(2, 3, n_rows))
    return [{"exact_match": float(e), "f1": f} for e, f in zip(exact.tolist(), f1.tolist())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1_000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    data = {task: [synthetic_rows(task, args.rows, 0.5 + 0.002 * m, rng) for m in range(args.models)]
            for task in TASK_METRICS}

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for task, models in data.items():
        bootstrap._cached_counts.cache_clear()      # each task draws its own resamples, as with real row counts
        family, settings = TASKS[task].family, Bootstrap(args.resamples)
        for metric in TASK_METRICS[task]:
            began = time.perf_counter()
            intervals = [family.interval(metric, rows, settings) for rows in models]
            tests = [family.paired(metric, models[0], rows, settings) for rows in models[1:]]
            seconds[metric] = time.perf_counter() - began
            print(f"{metric:11s} {seconds[metric]:6.2f} s  first model {intervals[0][0]:.4f}-{intervals[0][1]:.4f}"
                  f"  last vs first {tests[-1]['difference']:+.4f} p={tests[-1]['p_value']:.4f}"
                  if tests else f"{metric:11s} {seconds[metric]:6.2f} s")
    total = time.perf_counter() - start

    n_metrics = sum(len(m) for m in TASK_METRICS.values())
    print(f"\n{total:.2f} s for {args.models} models x {len(data)} tasks x {args.rows:,} rows x "
          f"{args.resamples:,} resamples: {args.models * n_metrics} intervals, "
          f"{(args.models - 1) * n_metrics} paired tests (BLEU {seconds['bleu']:.2f} s of it)")


if __name__ == "__main__":
    main()
