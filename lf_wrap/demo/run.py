"""`lf-wrap demo`: the whole study at small scale, offline, on CPU, in one run folder.

prepare the three sample sets -> train three LoRA adapters with LLaMA-Factory (the shipped
recipes with a documented override set; SmolLM2: and the joint reference adapter on all three
sets at once) -> merge them (the study's 3-in-1 sum through
LLaMA-Factory's export, and a weighted linear merge as one adapter) -> score base, adapters
and merges on all three tasks with vLLM -> print the table -> (SmolLM2) search merges of the three
adapters and print the best one's retained gains beside the sum merge's, on rows the search never
saw. Every stage writes what it ran into the run folder, so each can be re-run by hand with the
files there."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lf_wrap.core.console import tools_to_log

from lf_wrap.core.environments import REPO_ROOT
from lf_wrap.core.files import atomic_write_text

TASK_SOURCES = {"translate": "wmt19_zh-en", "summarize": "cnn_dailymail", "qa": "squad_v2"}


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is for one model: rows, training steps, generation lengths."""

    train_rows: int
    validation_rows: int
    train_sets: tuple[str, ...]       # `--set` overrides on top of each recipe's smoke set
    max_new_tokens: dict = field(default_factory=dict)
    merge_weights: tuple[float, ...] = (0.5, 0.5, 0.5)
    search_budget: int = 0            # merge search candidates (0: no search step)
    search_rows: int = 0              # of validation_rows per task; the others are the report rows
    search_methods: tuple[str, ...] = ("linear",)
    search_spaces: tuple[str, ...] = ("full",)     # where the methods may run (full, knots, core)
    search_blocks: int = 1            # layer-wise weights: blocks of layers per adapter
    search_weight_high: float = 1.0   # each weight in [0, this]
    search_folds: int = 0             # rows.folds of the search (0: ranked by the lower bound)
    samples_validation: int = 60      # validation rows per source in the written samples
    held: int = 5                     # the search's rows.held: the top candidates checked on the report rows
    enforce_eager: bool = False       # the eval's engine.enforce_eager
    joint: bool = False               # train the joint reference adapter on all three sets at once


SCALES = {
    # The tiny random model: proves the plumbing in about three minutes; its scores mean nothing
    # (its adapters gain nothing over the base, so there is no gain for a merge search to keep).
    # Its engine runs eager: a compiled start costs 15-70 s on 2 cores, its 8 rows a task a second.
    "tiny": DemoScale(train_rows=40, validation_rows=8, train_sets=(),
                      max_new_tokens={"translate": 16, "summarize": 24, "qa": 8}, enforce_eager=True),
    # SmolLM2-135M-Instruct: a real instruct model; each adapter should beat base on its task.
    "smollm2": DemoScale(
        train_rows=240, validation_rows=140,
        # Gradient checkpointing (LLaMA-Factory's default) costs 5x per step on CPU: 30 s vs 6 s.
        train_sets=("max_steps=30", "per_device_train_batch_size=4", "gradient_accumulation_steps=1",
                    "learning_rate=1.0e-3", "cutoff_len=384", "lr_scheduler_type=cosine", "warmup_steps=3",
                    "save_steps=1000", "lora_rank=8", "disable_gradient_checkpointing=true"),
        max_new_tokens={"translate": 40, "summarize": 64, "qa": 16},
        # 140 validation rows per task: 30 to search on (3 folds of 10: a candidate is ranked by its
        # worst fold), the other 110 to report on (103 for translate, whose keyword filter drops 7).
        # The space: three methods, each in full or core space, two blocks of layers per adapter
        # (6 weights, each 0 to 1.5). About 11.5 s per candidate on 2 cores with exact pruning (a
        # whole one, 90 rows in one patched engine, about 15 s); the base's and the specialists'
        # answers come from the eval. Each candidate on the report rows costs about 45 s: the top 3
        # are checked there (held), not 5. Measured with seeds 0, 1, 2 (docs/search.md): the best
        # keeps 90.8-93.2% of the worst task's gain on the report rows; 24 candidates of one weight
        # per adapter up to 1 in full space kept 77.2%.
        search_budget=40, search_rows=30, search_folds=3, samples_validation=140, held=3,
        search_methods=("linear", "tsv", "iso_cts"), search_spaces=("full", "core"), search_blocks=2,
        search_weight_high=1.5, joint=True),
}


log = logging.getLogger(__name__)


def _say(stage: str, message: str, start: float) -> None:
    log.info(f"[demo {time.monotonic() - start:6.0f}s] {stage}: {message}")


def demo_model(kind: str, out: Path) -> Path:
    if kind == "tiny":
        from lf_wrap.demo.tiny_model import build_tiny_model

        folder = out / "model"
        return folder if (folder / "config.json").exists() else build_tiny_model(folder)
    from lf_wrap.demo.smollm2 import ensure_smollm2

    return ensure_smollm2()


def prepare_data(out: Path, scale: DemoScale) -> Path:
    from lf_wrap.data.prepare import PrepareOptions, prepare
    from lf_wrap.data.samples import write_samples

    write_samples(out / "samples", validation=scale.samples_validation)
    dataset_dir = out / "dataset_info"
    for task, source in TASK_SOURCES.items():
        for split, n in (("train", scale.train_rows), ("validation", scale.validation_rows)):
            prepare(task, str(out / "samples" / source / f"{split}.jsonl"), split, n,
                    options=PrepareOptions(name=f"demo_{task}_{split}", dataset_dir=dataset_dir))
    return dataset_dir


def train_adapters(out: Path, model: Path, dataset_dir: Path, scale: DemoScale) -> dict[str, Path]:
    from lf_wrap.train.run import train

    adapters = {}
    for task in TASK_SOURCES:
        sets = [f"model_name_or_path={model}", f"lf_wrap.dataset=demo_{task}_train",
                f"lf_wrap.dataset_dir={dataset_dir}", *scale.train_sets]
        result = train(REPO_ROOT / "recipes" / f"{task}.yaml", sets=sets, run_dir=out / "runs" / task, smoke=True)
        adapters[task] = result.run_dir / "adapter"
    return adapters


def train_joint(out: Path, model: Path, dataset_dir: Path, scale: DemoScale) -> Path:
    """recipes/joint.yaml on the three training sets at once (LLaMA-Factory's mix_strategy concat),
    with the specialists' overrides and three times their steps: the same rows per task."""
    from lf_wrap.train.run import train

    sets = [f"model_name_or_path={model}", "lf_wrap.dataset=" + ",".join(f"demo_{t}_train" for t in TASK_SOURCES),
            f"lf_wrap.dataset_dir={dataset_dir}"]
    for item in scale.train_sets:
        key, _, value = item.partition("=")
        sets.append(f"max_steps={int(value) * len(TASK_SOURCES)}" if key == "max_steps" else item)
    result = train(REPO_ROOT / "recipes" / "joint.yaml", sets=sets, run_dir=out / "runs" / "joint", smoke=True)
    return result.run_dir / "adapter"


def merge_adapters(out: Path, adapters: dict[str, Path], scale: DemoScale) -> dict[str, Path]:
    from lf_wrap.merge.run import merge
    from lf_wrap.merge.config import MergeConfig

    paths = [str(p) for p in adapters.values()]
    merges = {
        "merge_3in1": MergeConfig(adapters=paths, method="sum", out=str(out / "merges" / "3in1"), **{"as": "model"}),
        # As a model: a rank-24 adapter would raise the LoRA engine's max_lora_rank to 32 for every
        # adapter, and vLLM's LoRA kernels on CPU are plain torch, paid per token and per rank.
        "merge_linear": MergeConfig(adapters=paths, method="linear", weights=list(scale.merge_weights),
                                    out=str(out / "merges" / "linear"), **{"as": "model"}),
    }
    for config in merges.values():
        merge(config)
    return {name: Path(config.out) for name, config in merges.items()}


def eval_recipe(model: Path, dataset_dir: Path, adapters: dict[str, Path], merges: dict[str, Path],
                scale: DemoScale, joint: Path | None = None) -> dict:
    models = [{"name": "base"}]
    models += [{"name": f"lora_{task}", "path": str(path), "task": task} for task, path in adapters.items()]
    models += [{"name": "lora_joint", "path": str(joint)}] if joint is not None else []
    models += [{"name": name, "path": str(path)} for name, path in merges.items()]
    return {
        "model_name_or_path": str(model), "template": "qwen", "dataset_dir": str(dataset_dir), "models": models,
        "tasks": {task: {"dataset": f"demo_{task}_validation", "max_new_tokens": scale.max_new_tokens[task]}
                  for task in TASK_SOURCES},
        # float32 on CPU: vLLM's greedy tokens then equal transformers' (bfloat16 drifts).
        "engine": {"dtype": "float32", "max_model_len": 2048, "gpu_memory_utilization": 0.3,
                   **({"enforce_eager": True} if scale.enforce_eager else {})},
        "long_prompts": "skip",
        "batch_size": 64,                 # progress (and what a kill can lose) in steps of 64 rows
    }


def search_merges(out: Path, eval_path: Path, adapters: dict[str, Path], scale: DemoScale, joint: Path | None = None):
    """`lf-wrap merge search` on the three adapters: candidates scored on the search rows of each
    validation set, the best, the study's sum merge and linear 0.5 then on the report rows."""
    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.run import search

    # The search's base and specialists are the eval's answers (reuse_eval).
    rows = {"search": scale.search_rows, **({"folds": scale.search_folds} if scale.search_folds else {}),
            "held": scale.held}
    recipe = {"eval": str(eval_path), "eval_results": str(out / "eval"),
              "adapters": [{"path": str(p), "task": t} for t, p in adapters.items()],
              "methods": list(scale.search_methods),
              **({"spaces": list(scale.search_spaces)} if scale.search_spaces != ("full",) else {}),
              **({"blocks": scale.search_blocks} if scale.search_blocks > 1 else {}),
              "weights": {"high": scale.search_weight_high}, "budget": scale.search_budget,
              "round_size": 4, "rows": rows, "out": str(out / "search"),
              **({"joint": str(joint)} if joint is not None else {})}
    path = out / "search.yaml"
    atomic_write_text(path, f"# Written by `lf-wrap demo`; re-run with: lf-wrap merge search {path}\n"
                      + yaml.safe_dump(recipe, sort_keys=False))
    config, text = load_search_recipe(path)
    return search(config, text)


def run_demo(kind: str, out: Path) -> Path:
    """Run every stage into `out`; a stage whose outputs exist is skipped by that stage itself."""
    from lf_wrap.evaluation.recipe import load_eval_recipe
    from lf_wrap.evaluation.run import evaluate

    scale = SCALES[kind]
    start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _say("model", f"{kind}", start)
    with tools_to_log(out / "demo.log", "demo: model and data"):   # transformers' and datasets' bars
        model = demo_model(kind, out)
        _say("model", f"{model}", start)
        dataset_dir = prepare_data(out, scale)
    _say("data", f"6 instruction sets in {dataset_dir}", start)
    adapters = train_adapters(out, model, dataset_dir, scale)
    _say("train", "3 adapters: " + ", ".join(str(p) for p in adapters.values()), start)
    joint = None
    if scale.joint:
        joint = train_joint(out, model, dataset_dir, scale)
        _say("train", f"the joint reference adapter (all three sets): {joint}", start)
    merges = merge_adapters(out, adapters, scale)
    _say("merge", ", ".join(f"{k} -> {v}" for k, v in merges.items()), start)
    recipe_path = out / "eval.yaml"
    atomic_write_text(recipe_path, "# Written by `lf-wrap demo`; re-run with: lf-wrap eval " + str(recipe_path) + "\n"
                      + yaml.safe_dump(eval_recipe(model, dataset_dir, adapters, merges, scale, joint),
                                                     sort_keys=False))
    recipe, text = load_eval_recipe(recipe_path)
    result = evaluate(recipe, recipe_path, text, out=out / "eval")
    _say("eval", f"{result.generated} predictions generated, {result.reused} reused", start)
    if scale.search_budget:
        from lf_wrap.search.run import summary

        found = search_merges(out, recipe_path, adapters, scale, joint)
        _say("search", f"{scale.search_budget} candidates; best vs the study's sum merge on the report rows:", start)
        for line in summary(found).splitlines():
            log.info(f"  {line}")
    _say("done", f"total {time.monotonic() - start:.0f}s; everything is in {out}/ (table: {result.out}/table.md, "
         f"chart: {result.out}/chart.png, loss curves: {result.out}/loss_curves.png)", start)
    return result.out
