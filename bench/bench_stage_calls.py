"""Benchmark: what one engine call costs, by its rows: the demo's three tasks on SmolLM2, 10 rows of
each in one call and in three calls, 30 of each in one call and in three. It is why a pruning stage
is one fold of one task (lf_wrap.search.pruning): if a call's cost followed its decode steps rather
than its rows, small stages would cost a surviving candidate far more than one pass.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_stage_calls.py --dataset-dir runs/demo-smollm2-<time>/dataset_info

Prints each call's rows, seconds and new tokens (greedy, each task's max_new_tokens as the demo sets
them; the prefix cache reset before every call)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"translate": 40, "summarize": 64, "qa": 16}      # the demo's max_new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", type=Path, required=True, help="the demo's dataset_info folder")
    parser.add_argument("--model", type=Path, default=ROOT / "cache" / "models" / "SmolLM2-135M-Instruct")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from lf_wrap.tasks.prompts import encode_prompt, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    llm = LLM(model=str(args.model), dtype="float32", max_model_len=2048, gpu_memory_utilization=0.3,
              disable_log_stats=True)
    rows = {t: json.loads((args.dataset_dir / f"demo_{t}_validation.json").read_text(encoding="utf-8"))[:30]
            for t in TASKS}

    def requests(task: str, count: int) -> list:
        return [({"prompt_token_ids": encode_prompt(tokenizer, render_prompt(r, "qwen"))},
                 SamplingParams(max_tokens=TASKS[task], temperature=0, stop_token_ids=[tokenizer.eos_token_id]))
                for r in rows[task][:count]]

    def call(batch: list, name: str) -> float:
        llm.reset_prefix_cache()
        started = time.perf_counter()
        out = llm.generate([p for p, _ in batch], [s for _, s in batch], use_tqdm=False)
        seconds = time.perf_counter() - started
        print(f"{name:<30}{len(batch):>5} rows {seconds:7.2f} s {sum(len(o.outputs[0].token_ids) for o in out):>6} "
              "new tokens", flush=True)
        return seconds

    call(requests("qa", 10), "warm-up")
    for count in (10, 30):
        apart = sum(call(requests(t, count), f"{t}, {count} rows") for t in TASKS)
        together = call(sum((requests(t, count) for t in TASKS), []), f"the three tasks, {count} rows each")
        print(f"{count} rows of each task: {apart:.2f} s in three calls, {together:.2f} s in one "
              f"({apart / together:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
