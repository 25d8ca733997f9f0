"""Benchmark: the same grid search with and without exact pruning (`prune`), side by side: on the
demo's trained adapters (`--from-search` the search recipe `make demo` wrote: its eval recipe,
adapters and rows), or on seeded random LoRA adapters, each the specialist of a task of its own
whose references are that adapter's greedy answers (lf_wrap.demo.search_study, as the tests build them), on the
tiny model (lf_wrap.demo.tiny_model) or on SmolLM2-135M-Instruct (the demo's base, converted from
its GGUF by lf_wrap.demo.smollm2).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_search_prune.py --from-search runs/demo-smollm2-<time>/search.yaml
    PYTHONPATH=$PWD .venv/bin/python bench/bench_search_prune.py                      # tiny model
    PYTHONPATH=$PWD .venv/bin/python bench/bench_search_prune.py --model smollm2 --gguf cache/gguf/...gguf

Prints, for each: candidates per minute over the rounds of candidates (manifest
`candidates_seconds`: the engine start, the base, the specialists and the report rows are the
same for both and left out), the search rows generated (manifest `generated_rows`), the
candidates pruned, the winner and the top `rows.held`. Pruning's gain depends on the landscape:
a candidate is dropped only once its bound is below the `rows.held`-th best value so far."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
NAMES = ("task_a", "task_b", "task_c")


def base_model(work: Path, name: str, gguf: Path | None) -> Path:
    if name == "tiny":
        from lf_wrap.demo.tiny_model import build_tiny_model

        return build_tiny_model(work / "tiny-qwen2")
    from lf_wrap.demo.smollm2 import GGUF_NAME, ensure_smollm2

    if gguf is not None and not (work / "gguf" / GGUF_NAME).exists():     # no download: the file given
        (work / "gguf").mkdir(parents=True, exist_ok=True)
        (work / "gguf" / GGUF_NAME).symlink_to(gguf.resolve())
    return ensure_smollm2(work)


def build(work: Path, n_tasks: int, model_name: str = "tiny", gguf: Path | None = None,
          louder: float = 10.0) -> tuple[Path, list[Path]]:
    """(eval recipe, adapter folders): the base, louder seeded adapters, one task each, 24 rows a task
    (lf_wrap.demo.search_study, as the tests build their search study)."""
    from lf_wrap.demo.search_study import write_search_study

    eval_path = work / "eval.yaml"
    if eval_path.is_file():
        return eval_path, [work / "adapters" / k for k in "ABC"[:n_tasks]]
    return write_search_study(base_model(work, model_name, gguf), work, tasks=n_tasks, rows=24, factor=louder)


def run(work: Path, eval_path: Path, adapters: list[Path], args, prune: bool) -> dict:
    out = work / f"search-prune-{str(prune).lower()}"
    recipe = {"eval": str(eval_path), "adapters": [{"path": str(a), "task": t} for a, t in zip(adapters, NAMES)],
              "methods": args.methods, "sampler": "grid", "grid": args.grid, "budget": 10_000,
              "round_size": args.round_size, "uncertainty": {"rank_by": args.rank_by},
              "rows": {"search": args.search_rows, "held": args.held, **({"folds": args.folds} if args.folds else {})},
              "prune": prune, "reuse_eval": False, "out": str(out)}
    if args.from_search is not None:    # the demo's study: its eval recipe, adapters and rows
        given = yaml.safe_load(args.from_search.read_text(encoding="utf-8"))
        recipe.update(eval=given["eval"], adapters=given["adapters"], reuse_eval=True,
                      rows={**given.get("rows", {}), "report": args.report_rows},
                      uncertainty=given.get("uncertainty", {}), **({"eval_results": given["eval_results"]}
                                                                    if "eval_results" in given else {}))
    path = work / f"search-prune-{str(prune).lower()}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "lf-wrap"), "merge", "search", str(path), "--force"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    manifest = json.loads((out / "manifest.json").read_text())
    board = json.loads((out / "leaderboard.json").read_text())
    candidates = sum(1 for r in board["rows"] for _ in r["trials"])
    return {"wall": time.monotonic() - started, "seconds": manifest["candidates_seconds"], "candidates": candidates,
            "per_minute": 60 * candidates / manifest["candidates_seconds"],
            "rows": manifest["generated_rows"]["search"], "pruned": manifest["pruning"]["pruned"],
            "winner": board["rows"][0]["label"], "top": [(r["label"], round(r["ranked_value"], 12))
                                                         for r in board["held"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "cache" / "search-prune-bench")
    parser.add_argument("--model", default="tiny", choices=("tiny", "smollm2"))
    parser.add_argument("--gguf", type=Path, default=None, help="SmolLM2's GGUF file (else downloaded once)")
    parser.add_argument("--louder", type=float, default=10.0, help="lora_B times this (tests/test_search.py: 10)")
    parser.add_argument("--tasks", type=int, default=2, choices=(2, 3))
    parser.add_argument("--grid", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    parser.add_argument("--search-rows", type=int, default=12)
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--rank-by", default="point", choices=("point", "lower_bound", "worst_fold"))
    parser.add_argument("--held", type=int, default=2)
    parser.add_argument("--round-size", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=["linear"])
    parser.add_argument("--from-search", type=Path, default=None,
                        help="a search recipe (the demo's search.yaml): its eval recipe, adapters, rows and ranking")
    parser.add_argument("--report-rows", type=int, default=10,
                        help="with --from-search: report rows per task (not timed; few keep the run short)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.from_search is not None:
        given = yaml.safe_load(args.from_search.read_text(encoding="utf-8"))
        eval_path, adapters = Path(given["eval"]), [Path(a["path"]) for a in given["adapters"]]
        args.tasks, args.model = len(adapters), f"demo adapters ({args.from_search})"
        args.held = given.get("rows", {}).get("held", 5)
        args.search_rows, args.folds = given.get("rows", {}).get("search", 100), given.get("rows", {}).get("folds")
        args.rank_by = given.get("uncertainty", {}).get("rank_by", "worst_fold" if args.folds else "lower_bound")
    else:
        eval_path, adapters = build(args.work, args.tasks, args.model, args.gguf, args.louder)
    results = {prune: run(args.work, eval_path, adapters, args, prune) for prune in (False, True)}
    print(f"{args.model}: grid search, {len(args.grid)}^{args.tasks} merges x {'/'.join(args.methods)}, "
          f"{args.search_rows} search rows per task, "
          f"ranked by {args.rank_by}" + (f" ({args.folds} folds)" if args.folds else "") + f", rows.held {args.held}")
    print(f"{'prune':<7}{'candidates':>11}{'seconds':>9}{'per minute':>12}{'search rows':>13}{'pruned':>8}  winner")
    for prune, r in results.items():
        print(f"{str(prune).lower():<7}{r['candidates']:>11}{r['seconds']:>9.1f}{r['per_minute']:>12.1f}"
              f"{r['rows']:>13}{r['pruned']:>8}  {r['winner']}")
    off, on = results[False], results[True]
    print(f"pruning: {on['per_minute'] / off['per_minute']:.2f}x candidates per minute, "
          f"{on['rows'] / off['rows']:.0%} of the search rows; same winner: {on['winner'] == off['winner']}; "
          f"same top {args.held}: {on['top'] == off['top']}")


if __name__ == "__main__":
    main()
