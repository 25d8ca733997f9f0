"""vLLM's compile cache on the CPU backend: how long an engine start takes the first time and the
second time (same cache folder), with vLLM's default AOT artifacts and with the settings lf-wrap
could use instead. Each start is its own process (SmolLM2-135M-Instruct, float32, in-process
engine core, as lf-wrap runs it) with its own fresh cache folders per setting (vLLM's and
Inductor's), so the second start of a setting finds only what its first start saved.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_compile_cache.py

What it showed (docs/serving.md): vLLM 0.32's AOT artifact does not load back on CPU ('function'
object has no attribute 'finalize_loading'), so every start compiled again; with
VLLM_USE_AOT_COMPILE=0 a second start loaded the compiled model: 25 s against 92 s for the
first, and 62 s for a second start on vLLM's default."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "vLLM's default (AOT)": {},
    "VLLM_USE_MEGA_AOT_ARTIFACT=0": {"VLLM_USE_MEGA_AOT_ARTIFACT": "0", "VLLM_USE_AOT_COMPILE": "1"},
    "VLLM_USE_AOT_COMPILE=0 (lf-wrap's)": {"VLLM_USE_AOT_COMPILE": "0"},
}

CHILD = r"""
import os, sys, time
start = time.monotonic()
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=2048, seed=0)
started = time.monotonic() - start
out = llm.generate(["Summarize: the council will close two old schools."] * 8, SamplingParams(max_tokens=16, temperature=0),
                   use_tqdm=False)
print(f"START {started:.1f} {out[0].outputs[0].token_ids[:4]}", flush=True)
"""


def start_once(model: str, env: dict, cache: str) -> tuple[float, float | None, bool]:
    """(seconds to a started engine, vLLM's own engine-init seconds, whether it compiled again)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_USE_")}
    child_env.update(env, VLLM_CACHE_ROOT=cache, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
                     VLLM_ENABLE_V1_MULTIPROCESSING="0",
                     VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    done = subprocess.run([sys.executable, "-c", CHILD, model], env=child_env, capture_output=True, text=True)
    text = done.stdout + done.stderr
    found = re.search(r"START ([0-9.]+)", text)
    if done.returncode or not found:
        raise SystemExit(f"engine start failed ({done.returncode}):\n{text[-3000:]}")
    init = re.search(r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s", text)
    return float(found.group(1)), float(init.group(1)) if init else None, "Compiling model again" in text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: the demo's SmolLM2, converted once)")
    args = parser.parse_args()
    if args.model is None:
        from lf_wrap.demo.smollm2 import ensure_smollm2

        args.model = str(ensure_smollm2())
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name, env in SETTINGS.items():
        with tempfile.TemporaryDirectory(prefix="vllm-cache-") as cache:
            first = start_once(args.model, env, cache)
            second = start_once(args.model, env, cache)
        rows.append((name, first, second))
        print(f"  {name}: first {first[0]:.1f} s, second {second[0]:.1f} s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"{'setting':<36}{'first start s':>15}{'second start s':>16}{'second: init s':>16}  second compiled again?")
    for name, first, second in rows:
        init = f"{second[1]:.1f}" if second[1] is not None else "-"
        print(f"{name:<36}{first[0]:>15.1f}{second[0]:>16.1f}{init:>16}  {'yes' if second[2] else 'no'}")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"\n{time.monotonic() - started:.0f} s in all")
