"""Benchmark: generation speed of lf-wrap's vLLM path against transformers `generate`.

1. The same prompts (the three tasks' sample validation rows, rendered with the qwen template),
   greedy, through `lf-wrap eval`'s engine (base model only) and through transformers
   `generate` in batches with left padding (what LLaMA-Factory's `do_predict` runs; in its own
   process). Both in float32, so both produce the same tokens; prints generated tokens/s for
   each and the ratio.
2. Base + 3 LoRA adapters scored by `lf-wrap eval` in one engine, against four separate engine
   loads (base alone, then base + each adapter alone): wall time of each, and the ratio.

    .venv/bin/python bench/bench_generate.py [--model PATH] [--rows 20] [--max-new-tokens 32]
        [--hf-batch-size 8] [--dtype float32] [--threads N] [--json OUT.json]

Default model: the tiny Qwen2 built on the spot (CPU); on a GPU machine pass a real one, e.g.
--model Qwen/Qwen2.5-0.5B-Instruct --dtype bfloat16 --rows 200 --max-new-tokens 128."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

TASKS = {"translate": "wmt19_zh-en", "summarize": "cnn_dailymail", "qa": "squad_v2"}


def prepare_data(folder: Path, rows: int) -> Path:
    from lf_wrap.data.prepare import PrepareOptions, prepare
    from lf_wrap.data.samples import write_samples

    sources = folder / "samples"
    write_samples(sources)
    for task, source in TASKS.items():
        prepare(task, str(sources / source / "validation.jsonl"), "validation", rows,
                options=PrepareOptions(name=f"bench_{task}", dataset_dir=folder / "data"))
    return folder / "data"


def make_adapters(base: Path, folder: Path, n: int = 3) -> list[Path]:
    from test_eval import make_adapter   # the tests' seeded random PEFT LoRA adapters

    return [make_adapter(base, folder / f"adapter_{i}", seed=10 + i) for i in range(n)]


def recipe(model: str, data: Path, models: list[dict], args):
    from lf_wrap.evaluation.recipe import EvalRecipe

    return EvalRecipe.model_validate({
        "model_name_or_path": model, "template": "qwen", "dataset_dir": str(data), "models": models,
        "tasks": {t: {"dataset": f"bench_{t}", "max_new_tokens": args.max_new_tokens} for t in TASKS},
        "engine": {"dtype": args.dtype, "max_model_len": args.max_model_len,
                   "gpu_memory_utilization": args.gpu_memory_utilization, "max_lora_rank": 8},
        "batch_size": 4096})


def lf_wrap_eval(r, out: Path) -> tuple[float, dict]:
    from lf_wrap.evaluation.run import evaluate

    start = time.monotonic()
    evaluate(r, out / "recipe.yaml", "", out=out)
    wall = time.monotonic() - start
    return wall, json.loads((out / "manifest.json").read_text())


def transformers_generate(model: str, r, args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lf_wrap.evaluation.requests import build_requests, load_task
    from lf_wrap.tasks.prompts import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.monotonic()
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
    load = time.monotonic() - start
    prompts = [encode_prompt(tokenizer, q.prompt) for t in TASKS for q in build_requests(load_task(r, t), "qwen")]
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.pad_token_id
    tokens = 0
    start = time.monotonic()
    for i in range(0, len(prompts), args.hf_batch_size):
        batch = prompts[i:i + args.hf_batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            out = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                              do_sample=False, eos_token_id=[stop], pad_token_id=pad)
        for row in out[:, width:].tolist():
            tokens += row.index(stop) + 1 if stop in row else len(row)
    seconds = time.monotonic() - start
    return {"rows": len(prompts), "tokens": tokens, "load_seconds": round(load, 2), "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="base model (default: build the tiny one)")
    parser.add_argument("--rows", type=int, default=20, help="rows per task")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--hf-batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both paths (OMP_NUM_THREADS; vLLM: VLLM_CPU_OMP_THREADS_BIND=0-N). "
                             "On a shared machine 1 gives stable figures: idle OpenMP threads spin while "
                             "other processes hold the cores")
    parser.add_argument("--transformers-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{args.threads - 1}" if args.threads > 1 else "0"
    if args.transformers_only:   # the child process of step 1
        print(json.dumps(transformers_generate(args.model, recipe(args.model, args.transformers_only,
                                                                  [{"name": "base"}], args), args)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model is None:
            from lf_wrap.demo.tiny_model import build_tiny_model
            args.model = str(build_tiny_model(tmp / "tiny"))
        data = prepare_data(tmp, args.rows)
        adapters = make_adapters(Path(args.model), tmp)

        # 1. the same prompts, base model: transformers generate (in a fresh process, so that no
        # thread binding left by a vLLM CPU engine slows it down), then vLLM (lf-wrap eval)
        hf = json.loads(subprocess.run(
            [sys.executable, __file__, "--transformers-only", str(data), "--model", args.model,
             "--max-new-tokens", str(args.max_new_tokens), "--hf-batch-size", str(args.hf_batch_size),
             "--dtype", args.dtype], check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        wall, manifest = lf_wrap_eval(recipe(args.model, data, [{"name": "base"}], args), tmp / "vllm-base")
        vllm = manifest["engines"][0]

        # 2. base + 3 adapters: one engine, against four engine loads
        every = [{"name": "base"}] + [{"name": f"lora_{i}", "path": str(p)} for i, p in enumerate(adapters)]
        one_wall, one_manifest = lf_wrap_eval(recipe(args.model, data, every, args), tmp / "one-engine")
        separate = []
        for entry in every:   # an adapter alone still loads the base, with LoRA enabled
            seconds, _ = lf_wrap_eval(recipe(args.model, data, [entry], args), tmp / f"alone-{entry['name']}")
            separate.append(seconds)

    figures = {
        "model": args.model if not args.model.startswith(tempfile.gettempdir()) else "tiny Qwen2 (lf_wrap.demo.tiny_model)",
        "dtype": args.dtype, "threads": args.threads, "prompts": vllm["rows"], "max_new_tokens": args.max_new_tokens,
        "vllm": {"tokens": vllm["completion_tokens"], "engine_start_seconds": vllm["engine_start_seconds"],
                 "generate_seconds": vllm["generate_seconds"], "tokens_per_second": vllm["tokens_per_second"],
                 "wall_seconds_with_start": round(wall, 2)},
        "transformers": {**hf, "batch_size": args.hf_batch_size},
        "vllm_over_transformers": round(vllm["tokens_per_second"] / hf["tokens_per_second"], 2),
        "one_engine_4_models_seconds": round(one_wall, 2),
        "four_engine_loads_seconds": round(sum(separate), 2),
        "four_engine_loads_each": [round(s, 2) for s in separate],
        "separate_over_one_engine": round(sum(separate) / one_wall, 2),
        "one_engine_rows": one_manifest["generated"],
    }
    print(f"prompts: {figures['prompts']} ({args.rows} per task), greedy, max_new_tokens {args.max_new_tokens}, "
          f"{args.dtype}, model: {figures['model']}, threads: {args.threads or 'default'}")
    print(f"vLLM (lf-wrap eval engine): {vllm['completion_tokens']} tokens in {vllm['generate_seconds']} s = "
          f"{vllm['tokens_per_second']} tokens/s (engine start {vllm['engine_start_seconds']} s, not counted)")
    print(f"transformers generate (batch {args.hf_batch_size}): {hf['tokens']} tokens in {hf['seconds']} s = "
          f"{hf['tokens_per_second']} tokens/s (model load {hf['load_seconds']} s, not counted)")
    print(f"ratio vLLM / transformers: {figures['vllm_over_transformers']}x")
    print(f"base + 3 adapters in one engine: {figures['one_engine_4_models_seconds']} s wall; four separate engine "
          f"loads: {figures['four_engine_loads_seconds']} s ({', '.join(map(str, figures['four_engine_loads_each']))})"
          f"; ratio {figures['separate_over_one_engine']}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
