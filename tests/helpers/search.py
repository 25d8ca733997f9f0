"""The folders a merge search runs on: three tasks whose references are each adapter's own greedy
answers (a study the search can gain on), or a planned-only study on a copy of the base, and the
search recipe and score ledger written for either."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from helpers.adapters import linked_adapter
from lf_wrap.demo import search_study as study

TASKS = study.TASKS
NEW_TOKENS = study.NEW_TOKENS


def write_search_study(tiny_model: Path, root: Path) -> tuple[Path, Path, list[Path]]:
    """(root, eval recipe path, adapter folders): three tasks of 12 rows each, their references
    each adapter's own greedy answers (lf_wrap.demo.search_study)."""
    path, folders = study.write_search_study(tiny_model, root, tasks=3, rows=12)
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
