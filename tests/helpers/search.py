"""The folders a merge search runs on: three tasks whose references are each adapter's own greedy
answers (a study the search can gain on), or a planned-only study on a copy of the base, and the
search recipe and score ledger written for either."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from helpers.adapters import linked_adapter, load_model, make_adapters, model_greedy

TASKS = ("task_a", "task_b", "task_c")
TOPICS = ["the weather in Oslo", "a cat on a mat", "the price of bread", "a train to Rome", "the history of tea",
          "a song about rain", "the rules of chess", "a letter to a friend", "the colour of the sea",
          "a day at school", "the moon at night", "a walk in the park"]
NEW_TOKENS = 8


def greedy_answers(model: Path, adapter: Path | None, prompts: list[str]) -> list[str]:
    """The answers PEFT + transformers give greedily: the references of the adapter's task."""
    from transformers import AutoTokenizer

    from lf_wrap.tasks.prompts import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokens = model_greedy(load_model(model, adapter), [encode_prompt(tokenizer, p) for p in prompts], NEW_TOKENS,
                          pad_token_id=tokenizer.eos_token_id)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in tokens]


def louder(adapter: Path, factor: float) -> Path:
    """lora_B times `factor`: at make_adapters' scale the tiny model answers newlines whatever the
    adapter; louder, each adapter answers words of its own (a gain a merge can keep or lose)."""
    from safetensors.torch import load_file, save_file

    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v * factor if "lora_B" in k else v for k, v in tensors.items()}, str(weights))
    return adapter


def write_search_study(tiny_model: Path, root: Path) -> tuple[Path, Path, list[Path]]:
    """(root, eval recipe path, adapter folders): three tasks of 12 rows each, their references
    each adapter's own greedy answers."""
    from lf_wrap.tasks.prompts import render_prompt

    adapters = make_adapters(tiny_model, root / "adapters")
    folders = [louder(adapters[k], 10.0) for k in "ABC"]
    dataset_dir = root / "dataset_info"
    dataset_dir.mkdir()
    info = {}
    for task, adapter, verb in zip(TASKS, folders, ("Describe", "Explain", "Summarise")):
        rows = [{"instruction": f"{verb} {topic}.", "input": "", "output": "", "id": f"{task}-{i}"}
                for i, topic in enumerate(TOPICS)]
        answers = greedy_answers(tiny_model, adapter, [render_prompt(r, "qwen") for r in rows])
        for row, answer in zip(rows, answers):
            row["output"] = answer
        (dataset_dir / f"{task}.json").write_text(json.dumps(rows), encoding="utf-8")
        info[task] = {"file_name": f"{task}.json"}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    recipe = {"model_name_or_path": str(tiny_model), "template": "qwen", "dataset_dir": str(dataset_dir),
              "models": [{"name": "base"}],
              "tasks": {t: {"dataset": t, "metric": "rouge", "max_new_tokens": NEW_TOKENS} for t in TASKS},
              "engine": {"dtype": "float32", "max_model_len": 512, "gpu_memory_utilization": 0.2,
                         "enforce_eager": True},
              "bootstrap": {"resamples": 200}}
    path = root / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return root, path, folders


def search_recipe(study, out: Path, **extra) -> Path:
    """A search recipe on write_search_study's folders (linear and ties, 6 trials), `extra` on top."""
    root, eval_path, folders = study
    recipe = {"eval": str(eval_path), "adapters": [{"path": str(f), "task": t} for f, t in zip(folders, TASKS)],
              "methods": ["linear", "ties"], "budget": 6, "round_size": 2, "rows": {"search": 5}, "out": str(out)}
    recipe.update(extra)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def read_ledger(out: Path) -> list[dict]:
    """The search's score ledger, one entry a line."""
    return [json.loads(line) for line in (out / "scores.jsonl").read_text(encoding="utf-8").splitlines()]


def write_planned_search(tiny_model: Path, adapters: dict, root: Path) -> tuple[Path, Path]:
    """A search recipe on a copy of the base (engine-free: only planned), the adapters' weights
    linked from a store; returns (search recipe path, base)."""
    base = root / "base"
    shutil.copytree(tiny_model, base)
    data = root / "data"
    data.mkdir()
    info = {}
    for task in TASKS:
        rows = [{"instruction": f"Say {task} {i}.", "input": "", "output": f"{task} {i}", "id": f"{task}-{i}"}
                for i in range(10)]
        (data / f"{task}.json").write_text(json.dumps(rows))
        info[task] = {"file_name": f"{task}.json"}
    (data / "dataset_info.json").write_text(json.dumps(info))
    links = root / "adapters"
    for name in "ABC":
        linked_adapter(adapters[name], links / name, root / "store")
        config = json.loads((links / name / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(base)
        (links / name / "adapter_config.json").write_text(json.dumps(config))
    ev = {"model_name_or_path": str(base), "template": "qwen", "dataset_dir": str(data), "models": [{"name": "base"}],
          "tasks": {t: {"dataset": t, "metric": "rouge", "max_new_tokens": 4} for t in info},
          "engine": {"dtype": "float32", "max_model_len": 512, "enforce_eager": True}}
    (root / "eval.yaml").write_text(yaml.safe_dump(ev))
    search = {"eval": str(root / "eval.yaml"), "methods": ["linear"], "budget": 2, "rows": {"search": 4},
              "adapters": [{"path": str(links / n), "task": t} for n, t in zip("ABC", info)], "out": str(root / "out")}
    (root / "search.yaml").write_text(yaml.safe_dump(search))
    return root / "search.yaml", base
