"""Benchmark: time and peak memory of `lf-wrap merge` with three adapters, each method, both forms.

    .venv/bin/python bench/bench_merge.py                       # the tiny model (about a minute)
    .venv/bin/python bench/bench_merge.py --shape qwen2.5-3b --runs linear:model,ties:adapter

`--shape qwen2.5-3b` writes a synthetic base with Qwen2.5-3B's tensor names and shapes (36
layers, hidden 2048, q_proj 2048x2048, v_proj 256x2048, bf16, 6.2 GB in two shards; random
q/v weights, zeros elsewhere) and three rank-8 adapters on q_proj,v_proj, as the study trained.
It has no tokenizer, so `sum --as model` (which runs llamafactory-cli export) is tiny-only.
Each merge is its own `lf-wrap` process; its peak RSS (children included) comes from wait4().
Files live under --work (default cache/bench/merge, ignored by git) and are reused.

    .venv/bin/python bench/bench_merge.py --spaces-layer --threads 1   # full vs core space, one 3B layer

`--spaces-layer` times one candidate's deltas (lf_wrap.merge.spaces.merged_delta, what `merge
adapters` and the search's patched engine compute) for ONE Qwen2.5-3B decoder layer: all seven
projections (q 2048x2048, k/v 256x2048, o 2048x2048, gate/up 11008x2048, down 2048x11008), three
random rank-8 adapters, every weighted method in full and in core space, each in its own process
(seconds, and peak RSS above what the process held before merging), with x36 for the model."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
LF_WRAP = Path(sys.executable).parent / "lf-wrap"
ALL_RUNS = [f"{m}:{f}" for m in ("sum", "linear", "ties", "dare_linear", "dare_ties") for f in ("model", "adapter")]
QWEN3B = dict(layers=36, hidden=2048, intermediate=11008, heads=16, kv_heads=2, head_dim=128, vocab=151936)


def qwen_tensors(layer: int, s: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    h, kv = s["hidden"], s["kv_heads"] * s["head_dim"]
    p = f"model.layers.{layer}."
    z = lambda *shape: torch.zeros(shape, dtype=torch.bfloat16)  # noqa: E731
    rnd = lambda *shape: (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)  # noqa: E731
    return {p + "self_attn.q_proj.weight": rnd(h, h), p + "self_attn.q_proj.bias": z(h),
            p + "self_attn.k_proj.weight": z(kv, h), p + "self_attn.k_proj.bias": z(kv),
            p + "self_attn.v_proj.weight": rnd(kv, h), p + "self_attn.v_proj.bias": z(kv),
            p + "self_attn.o_proj.weight": z(h, h), p + "mlp.gate_proj.weight": z(s["intermediate"], h),
            p + "mlp.up_proj.weight": z(s["intermediate"], h), p + "mlp.down_proj.weight": z(h, s["intermediate"]),
            p + "input_layernorm.weight": z(h), p + "post_attention_layernorm.weight": z(h)}


def make_qwen3b_base(folder: Path, shard_gb: float = 4.0) -> Path:
    """Qwen2.5-3B-shaped safetensors shards and index, written one shard at a time."""
    if (folder / "model.safetensors.index.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    s, gen = QWEN3B, torch.Generator().manual_seed(0)
    groups, current, size = [], {"model.embed_tokens.weight": torch.zeros(s["vocab"], s["hidden"], dtype=torch.bfloat16)}, 0
    size = current["model.embed_tokens.weight"].numel() * 2
    for layer in range(s["layers"]):
        tensors = qwen_tensors(layer, s, gen)
        layer_bytes = sum(t.numel() * 2 for t in tensors.values())
        if size + layer_bytes > shard_gb * 1e9:
            groups.append(current)
            current, size = {}, 0
        current.update(tensors)
        size += layer_bytes
    current["model.norm.weight"] = torch.zeros(s["hidden"], dtype=torch.bfloat16)
    groups.append(current)
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in group})
        total += sum(t.numel() * 2 for t in group.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": s["hidden"],
        "intermediate_size": s["intermediate"], "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"], "vocab_size": s["vocab"], "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"}, indent=2))
    return folder


def make_adapter(base: Path, out: Path, shapes: dict[str, tuple[int, int]], r: int, alpha: int, seed: int) -> Path:
    """A PEFT-format LoRA adapter with random A and B (what training would leave, in shape)."""
    if (out / "adapter_model.safetensors").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    gen, tensors = torch.Generator().manual_seed(seed), {}
    for name, (rows, cols) in shapes.items():
        prefix = "base_model.model." + name.removesuffix(".weight")
        tensors[prefix + ".lora_A.weight"] = torch.randn(r, cols, generator=gen) * 0.02
        tensors[prefix + ".lora_B.weight"] = torch.randn(rows, r, generator=gen) * 0.02
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"], "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "use_rslora": False, "use_dora": False, "base_model_name_or_path": str(base)}, indent=2))
    return out


def targeted_shapes(base: Path) -> dict[str, tuple[int, int]]:
    from lf_wrap.merge.checks import base_shards, safetensors_header

    shapes = {}
    for shard in base_shards(base):
        for name, info in safetensors_header(shard)[0].items():
            if name.endswith(("q_proj.weight", "v_proj.weight")):
                shapes[name] = tuple(info["shape"])
    return shapes


LAUNCHER = """
import os, subprocess, sys, tempfile
with tempfile.TemporaryFile() as err:
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=err)
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        err.seek(0); sys.stderr.write(err.read().decode(errors="replace")); sys.exit(1)
print(usage.ru_maxrss)
"""


def run_one(adapters: list[Path], run: str, out: Path) -> dict:
    method, form = run.split(":")
    argv = [str(LF_WRAP), "merge", "adapters", *map(str, adapters), "--method", method, "--as", form,
            "--out", str(out), "--force"]
    if method != "sum":
        argv += ["--weights", ",".join(["0.5"] * len(adapters))]
    if method in ("ties", "dare_linear", "dare_ties"):
        argv += ["--density", "0.5"]
    start = time.monotonic()
    # Through a small launcher: Linux carries the parent's peak RSS into a child's ru_maxrss at
    # exec, and this script (torch, a 4 GB shard while building the base) is not small.
    proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *argv], capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{run} failed:\n{proc.stderr[-3000:]}")
    peak_kib = int(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((out / "merge_manifest.json").read_text())
    return {"run": run, "wall_s": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024),
            "timings_s": manifest["timings_s"], "max_rel_error": (manifest.get("errors") or {}).get("max")}


LAYER_MODULES = {"self_attn.q_proj": (2048, 2048), "self_attn.k_proj": (256, 2048), "self_attn.v_proj": (256, 2048),
                 "self_attn.o_proj": (2048, 2048), "mlp.gate_proj": (11008, 2048), "mlp.up_proj": (11008, 2048),
                 "mlp.down_proj": (2048, 11008)}
SPACE_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "tsv", "iso_c", "iso_cts", "cart")


def layer_one(run: str) -> None:
    """In a child process: build one layer's factors, merge them as `run` (method:space), print JSON."""
    import resource

    from lf_wrap.merge.checks import LoadedAdapter, MergePlan
    from lf_wrap.merge.config import MergeConfig
    from lf_wrap.merge.methods import METHODS
    from lf_wrap.merge.spaces import merged_delta

    method, space = run.split(":")
    gen = torch.Generator().manual_seed(0)
    names = [f"model.layers.0.{m}.weight" for m in LAYER_MODULES]
    adapters = [LoadedAdapter(given=f"a{i}", path=Path(f"a{i}"), config={}, rank=8, scaling=2.0,
                              factors={name: (torch.randn(8, n, generator=gen) * 0.02,
                                              torch.randn(m, 8, generator=gen) * 0.02)
                                       for name, (m, n) in zip(names, LAYER_MODULES.values())}) for i in range(3)]
    density = 0.5 if METHODS[method].density else None
    config = MergeConfig(adapters=["a0", "a1", "a2"], method=method, space=space, weights=[0.5, 0.5, 0.5],
                         density=density, out="unused")
    plan = MergePlan(config=config, out=Path("unused"), adapters=adapters, base_name="b", base_dir=Path("b"),
                     base_shards=[], modules=names, dtype="bfloat16", weights=[0.5, 0.5, 0.5],
                     seed=0 if METHODS[method].seeded else None, rank=None)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    for name in names:
        merged_delta(plan, name)
    seconds = time.monotonic() - start
    extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"run": run, "seconds": round(seconds, 3), "extra_mib": round(extra / 1024)}))


def spaces_layer(methods: list[str], threads: int | None) -> None:
    """Each method:space in its own process. `threads`: torch's threads there (OMP_NUM_THREADS). On a
    loaded machine use 1: two OpenMP threads on two busy cores stall at every parallel region,
    which costs core space (many small operations) up to 15x and full space less (measured)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    print(f"one Qwen2.5-3B decoder layer (7 projections), 3 x rank-8 adapters, torch threads "
          f"{threads or torch.get_num_threads()}; x36: the whole model")
    print("| method | full s/layer | core s/layer | full/core | full s x36 | core s x36 | full peak +MiB | "
          "core peak +MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method in methods:
        found = {}
        for space in ("full", "core"):
            proc = subprocess.run([sys.executable, __file__, "--layer-one", f"{method}:{space}"], capture_output=True,
                                  text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{method}:{space} failed:\n{proc.stderr[-3000:]}")
            found[space] = json.loads(proc.stdout.strip().splitlines()[-1])
        full, core = found["full"], found["core"]
        print(f"| {method} | {full['seconds']:.2f} | {core['seconds']:.3f} | {full['seconds'] / core['seconds']:.0f}x | "
              f"{36 * full['seconds']:.0f} | {36 * core['seconds']:.1f} | {full['extra_mib']} | {core['extra_mib']} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=["tiny", "qwen2.5-3b"], default="tiny")
    parser.add_argument("--runs", default=None, help=f"comma-separated method:form (default: all; {ALL_RUNS[0]}...)")
    parser.add_argument("--work", type=Path, default=ROOT / "cache" / "bench" / "merge")
    parser.add_argument("--spaces-layer", action="store_true", help="full vs core space on one Qwen2.5-3B layer")
    parser.add_argument("--methods", default=",".join(SPACE_METHODS), help="--spaces-layer: the methods")
    parser.add_argument("--threads", type=int, default=None, help="--spaces-layer: torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--layer-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.layer_one:
        return layer_one(args.layer_one)
    if args.spaces_layer:
        return spaces_layer(args.methods.split(","), args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work / args.shape
    if args.shape == "tiny":
        from lf_wrap.demo.tiny_model import build_tiny_model

        base = work / "base"
        if not (base / "model.safetensors").is_file():
            build_tiny_model(base)
        specs, default_runs = [(4, 8), (8, 16), (4, 4)], ALL_RUNS
    else:
        base = make_qwen3b_base(work / "base")
        specs, default_runs = [(8, 16)] * 3, [r for r in ALL_RUNS if not r.startswith("sum:model")]
    shapes = targeted_shapes(base)
    adapters = [make_adapter(base, work / f"adapter{i}", shapes, r, a, seed=i) for i, (r, a) in enumerate(specs)]
    runs = args.runs.split(",") if args.runs else default_runs
    results = []
    print(f"| {args.shape}: method:form | wall s | peak RSS MiB | checks s | hashing s | merge s | max rel. error |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        res = run_one(adapters, run, work / "out" / run.replace(":", "-"))
        t = res["timings_s"]
        print(f"| {run} | {res['wall_s']} | {res['peak_rss_mib']} | {t['checks']} | {t['hashing']} | {t['merge']} | "
              f"{res['max_rel_error'] if res['max_rel_error'] is not None else '-'} |", flush=True)
        results.append(res)
        shutil.rmtree(work / "out" / run.replace(":", "-"))
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
