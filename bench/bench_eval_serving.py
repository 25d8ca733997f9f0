"""Benchmark: one `lf-wrap eval` of six models (SmolLM2-135M-Instruct base, 3 LoRA adapters,
2 merged models) served three ways, side by side in one run (CPU; vLLM in the eval's process).

    make bench-eval                                                   # the figures in docs/serving.md
    PYTHONPATH=$PWD .venv/bin/python bench/bench_eval_serving.py --rows 6 --max-new-tokens 32

(a) engine.serve: patch  - one engine; each adapter and merged model patched into the base in turn;
(b) engine.serve: lora   - today's way: base + adapters (LoRA requests) in one engine, each merged
                           model in an engine of its own (three loads);
(c) six engine loads     - one eval per model, each loading its own engine (the adapter's a LoRA one).

Each way is `lf-wrap eval` run as a user runs it (a fresh process, the same recipe, its own --out),
timed from start to exit; the manifest's engine start and generation seconds are shown beside.
Before the three, one untimed eval of the base alone fills vLLM's compile cache for the base (so
no way pays a cold cache the others do not). Adapters: seeded random LoRA (r 8, q_proj/v_proj, as
the study's recipes), made with PEFT: speed does not depend on what they learned. Merged models:
`lf-wrap merge` of the three (linear 0.5 each; ties density 0.5), written as model folders.
Rows: --rows of each task's validation sample (translate, summarize, qa); every model answers the
same rows greedily, so every way does the same work (the answers are the same: test_eval_patched).
The machine is shared: the load average before and after is printed with the figures."""

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
TASKS = {"translate": "wmt19_zh-en", "summarize": "cnn_dailymail", "qa": "squad_v2"}


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A PEFT LoRA adapter (r 8, alpha 16, q_proj/v_proj) with seeded small random A and B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out / "adapter_config.json").is_file():
        return out
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                      task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(out)
    return out


def setup(work: Path, rows: int) -> tuple[Path, Path, dict[str, Path]]:
    """(base folder, dataset folder, {model name: path}) for the six models."""
    from lf_wrap.data.prepare import PrepareOptions, prepare
    from lf_wrap.data.samples import write_samples
    from lf_wrap.demo.smollm2 import ensure_smollm2
    from lf_wrap.merge.config import MergeConfig
    from lf_wrap.merge.run import merge

    base = ensure_smollm2()
    write_samples(work / "samples")
    dataset_dir = work / f"dataset_info-{rows}"
    for task, source in TASKS.items():
        if not (dataset_dir / f"bench_{task}_validation.json").is_file():
            prepare(task, str(work / "samples" / source / "validation.jsonl"), "validation", rows,
                    options=PrepareOptions(name=f"bench_{task}_validation", dataset_dir=dataset_dir))
    adapters = {f"lora_{task}": make_adapter(base, work / "adapters" / task, seed=i)
                for i, task in enumerate(TASKS)}
    paths = [str(p) for p in adapters.values()]
    merges = {"merge_linear": MergeConfig(adapters=paths, method="linear", weights=[0.5] * 3,
                                          out=str(work / "merges" / "linear")),
              "merge_ties": MergeConfig(adapters=paths, method="ties", weights=[1.0] * 3, density=0.5,
                                        out=str(work / "merges" / "ties"))}
    for config in merges.values():
        merge(config)                       # skips when the folder already holds this merge
    return base, dataset_dir, {**adapters, **{name: Path(c.out) for name, c in merges.items()}}


def recipe(work: Path, name: str, base: Path, dataset_dir: Path, models: dict[str, Path], serve: str,
           max_new_tokens: int) -> Path:
    data = {"model_name_or_path": str(base), "template": "qwen", "dataset_dir": str(dataset_dir),
            "models": [{"name": "base"} if path is None else {"name": model, "path": str(path)}
                       for model, path in models.items()],
            "tasks": {t: {"dataset": f"bench_{t}_validation", "max_new_tokens": max_new_tokens} for t in TASKS},
            "engine": {"dtype": "float32", "max_model_len": 2048, "serve": serve},
            "bootstrap": {"resamples": 100}}
    path = work / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run_eval(recipe_path: Path, out: Path) -> dict:
    """`lf-wrap eval` in a fresh process (--force: every row generated); its wall seconds and engines."""
    exe = Path(sys.executable).parent / "lf-wrap"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([str(exe), "eval", str(recipe_path), "--out", str(out), "--force"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"lf-wrap eval {recipe_path} failed:\n{done.stderr[-4000:]}")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return {"wall": wall, "engines": manifest["engines"], "generated": manifest["generated"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=6, help="rows of each of the three tasks")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--work", type=Path, default=ROOT / "cache" / "bench-eval-serving")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    work = args.work.resolve()
    base, dataset_dir, models = setup(work, args.rows)
    everyone = {"base": None, **models}
    load_before = os.getloadavg()
    print(f"[bench] {len(everyone)} models x {len(TASKS)} tasks x {args.rows} rows, max_new_tokens "
          f"{args.max_new_tokens}; {os.cpu_count()} CPUs, load average {load_before[0]:.2f}", flush=True)
    run_eval(recipe(work, "warm-up", base, dataset_dir, {"base": None}, "lora", 4), work / "out" / "warm-up")

    ways: dict[str, list[dict]] = {}
    for serve in ("patch", "lora"):
        print(f"[bench] engine.serve: {serve} ...", flush=True)
        ways[f"serve: {serve}"] = [run_eval(recipe(work, serve, base, dataset_dir, everyone, serve,
                                                   args.max_new_tokens), work / "out" / serve)]
    print("[bench] six engine loads ...", flush=True)
    ways["six engine loads"] = [run_eval(recipe(work, f"alone-{name}", base, dataset_dir, {name: path}, "lora",
                                                args.max_new_tokens), work / "out" / f"alone-{name}")
                                for name, path in everyone.items()]
    load_after = os.getloadavg()

    six = sum(r["wall"] for r in ways["six engine loads"])
    print(f"\n{'':<20} {'engines':>7} {'start s':>8} {'generate s':>10} {'patch s':>8} {'wall s':>8} "
          f"{'vs six loads':>12}")
    summary = {}
    for label, runs in ways.items():
        engines = [e for r in runs for e in r["engines"]]
        start = sum(e["engine_start_seconds"] for e in engines)
        generate = sum(e["generate_seconds"] for e in engines)
        patch = sum(e.get("patch_seconds", 0) + e.get("patch_setup_seconds", 0) for e in engines)
        wall = sum(r["wall"] for r in runs)
        summary[label] = {"engines": len(engines), "engine_start_s": round(start, 1), "generate_s": round(generate, 1),
                          "patch_s": round(patch, 1), "wall_s": round(wall, 1), "speedup": round(six / wall, 2),
                          "rows": sum(r["generated"] for r in runs)}
        print(f"{label:<20} {len(engines):>7} {start:8.1f} {generate:10.1f} {patch:8.1f} {wall:8.1f} "
              f"{six / wall:11.2f}x")
    print(f"\nload average: {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)")
    (work / "results.json").write_text(json.dumps({"args": {"rows": args.rows, "max_new_tokens": args.max_new_tokens},
                                                   "load_average": [load_before[0], load_after[0]],
                                                   "ways": summary}, indent=2))


if __name__ == "__main__":
    main()
