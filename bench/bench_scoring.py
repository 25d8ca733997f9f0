"""Benchmark: scoring one predictions file as `lf-wrap eval` and `lf-wrap score` do (the metrics and
each row's scores for the intervals), on synthetic rows; no model, no network.

    PYTHONPATH=. .venv/bin/python bench/bench_scoring.py                 # 1,000 summarize rows
    PYTHONPATH=. .venv/bin/python bench/bench_scoring.py --task translate --rows 2000

Times `lf_wrap.evaluation.uncertainty.score_with_rows(file, task)`: reading the file, the
task's metrics and the per-row scores written to `<task>.scores.jsonl`. Each metric is computed
once per file, from the per-row scores (before lf_wrap.scoring, ROUGE was computed twice: once for
the corpus value, once for the rows). The same call exists before and after, so the script runs
on either checkout. Summaries are CNN/DailyMail-sized (3-4 sentences of 12-25 words against an
article-length vocabulary); the figure printed is the best of --repeat runs.

Measured (2 shared cores, load ~5; the old code run from `git archive e402adf`): 1,000 summarize
rows 5.71 s / 3.85 s before, 2.51 s / 1.90 s after (two back-to-back pairs): ROUGE once, not twice."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from lf_wrap.evaluation.uncertainty import score_with_rows
from lf_wrap.tasks import TASKS

VOCABULARY = [f"w{i}" for i in range(3000)]


def _text(rng: random.Random, sentences: int, low: int, high: int) -> str:
    return "\n".join(" ".join(rng.choices(VOCABULARY[:600] if rng.random() < 0.7 else VOCABULARY,
                                          k=rng.randint(low, high))) + " ." for _ in range(sentences))


def _perturbed(text: str, rng: random.Random) -> str:
    return "\n".join(" ".join(w if rng.random() > 0.4 else rng.choice(VOCABULARY) for w in line.split())
                     for line in text.split("\n"))


def write_predictions(path: Path, task: str, n_rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = []
    for row in range(n_rows):
        if task == "qa":
            refs = [] if row % 3 == 0 else [_text(rng, 1, 1, 4)]
            prediction = _perturbed(refs[0], rng) if refs and rng.random() < 0.8 else "unanswerable"
        else:
            refs = [_text(rng, rng.randint(3, 4), 12, 25)] if task == "summarize" else [_text(rng, 1, 15, 35)]
            prediction = _perturbed(refs[0], rng)
        lines.append({"row": row, "id": str(row), "prediction": prediction, "references": refs})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="summarize", choices=sorted(TASKS))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{args.task}.jsonl"
        write_predictions(path, args.task, args.rows)
        best, scored = float("inf"), None
        for _ in range(args.repeat):
            started = time.perf_counter()
            scored = score_with_rows(path, TASKS[args.task])
            best = min(best, time.perf_counter() - started)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in scored.metrics.items())
    print(f"{args.task}: {args.rows} rows scored in {best:.2f} s (best of {args.repeat}; {shown})")


if __name__ == "__main__":
    main()
