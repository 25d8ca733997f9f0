"""Benchmark: the power of the search's paired test (lf_wrap.search.report.noise) at n report rows.

    PYTHONPATH=. .venv/bin/python bench/bench_power.py [--reps 1000] [--sd 0.2] [--level 0.05]

How many report rows does a difference of a given size need before the verdict can say it is
beyond resampling noise? Two merges are scored on n rows of a mean metric (ROUGE-1's family): merge
a's row scores drawn uniform in [0.1, 0.7], merge b's the same plus `delta` plus a normal noise of
standard deviation `sd` (the per-row spread of the difference between two merges; 0.2 is a
ROUGE-like spread, measure your own from the ledger's per-row scores). Each of `reps` draws of
rows is tested exactly as the search tests (the eval's paired bootstrap, 1,000 resamples, seed
12345, p against `--level`); the power is the share of draws where b is confirmed better. The
column at difference 0 is how often a difference that is not there is confirmed (one direction:
a two-sided test at 0.05 that is exact would give 2.5%). Beside them, the normal approximation
n = (1.96 + 0.84)^2 (sd / delta)^2 for 80% power. The figures printed are docs/search.md's tables
(1,000 draws per cell, 7 s on 2 cores)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from lf_wrap.scoring.bootstrap import Bootstrap
from lf_wrap.search.report.noise import Noise
from lf_wrap.tasks import TASKS

ROWS = (25, 50, 100, 200, 400)
DELTAS = (0.0, 0.02, 0.05, 0.1)      # 0: how often a difference that is not there is confirmed


def power(n: int, delta: float, sd: float, reps: int, noise: Noise, rng: np.random.Generator) -> float:
    task = TASKS["summarize"]
    confirmed = 0
    for _ in range(reps):
        a = rng.uniform(0.1, 0.7, n)
        b = a + delta + rng.normal(0.0, sd, n)
        test = noise.paired(task, [{"rouge1": float(x)} for x in a], [{"rouge1": float(x)} for x in b])
        confirmed += test["beyond"] and test["difference"] > 0
    return confirmed / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--sd", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", type=float, default=0.05, help="verdict.level")
    args = parser.parse_args()
    noise = Noise.of(args.level, Bootstrap(1000, 12345))
    rng = np.random.default_rng(args.seed)
    start = time.monotonic()
    print(f"power of the paired bootstrap test (p < {noise.level:g}), per-row sd of the difference {args.sd}, "
          f"{args.reps} draws per cell")
    print("| rows | " + " | ".join(f"difference {d:g}" for d in DELTAS) + " |")
    print("|" + " --- |" * (len(DELTAS) + 1))
    for n in ROWS:
        cells = [f"{power(n, d, args.sd, args.reps, noise, rng):.0%}" for d in DELTAS]
        print(f"| {n} | " + " | ".join(cells) + " |")
    need = " | ".join(f"{(1.96 + 0.84) ** 2 * (args.sd / d) ** 2:.0f}" if d else "-" for d in DELTAS)
    print(f"| rows for 80% (normal approximation) | {need} |")
    print(f"{time.monotonic() - start:.0f}s")


if __name__ == "__main__":
    main()
