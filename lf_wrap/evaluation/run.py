"""`lf-wrap eval`: generate every missing prediction, score every file, write the results folder.

    <out>/predictions/<model>/<task>.jsonl   one line per row (lf_wrap.evaluation.predictions)
    <out>/predictions/<model>/<task>.scores.jsonl   each row's scores (lf_wrap.evaluation.uncertainty)
    <out>/metrics.json                       every metric of every (model, task), higher_is_better,
                                             intervals, paired tests against base and compare_to
    <out>/manifest.json                      recipe, models, datasets, engines, versions, git commit
    <out>/recipe.yaml                        the recipe verbatim
    <out>/table.{md,csv,json}, chart.png, loss_curves.png   (lf_wrap.evaluation.report)

All checks (models, adapters' base, datasets, prompt lengths, existing files) run before an
engine starts. Rows already in a predictions file are not generated again; an engine whose
models have nothing left to generate is not started. How many engines serve the models is
engine.serve (lf_wrap.serving.server): with `patch`, one, whose weights each model is
patched into in turn."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lf_wrap import __version__
from lf_wrap.core.console import tools_to_log
from lf_wrap.core.files import check_output_folder
from lf_wrap.core.identity import engine_generation, generation_identity, model_identity
from lf_wrap.core.interrupts import on_interrupt, stoppable
from lf_wrap.core.manifest import INTERRUPTED, StageRecord
from lf_wrap.core.models import resolve_base
from lf_wrap.evaluation import predictions as pred
from lf_wrap.evaluation.generate import generate
from lf_wrap.evaluation.models import (ResolvedModel, check_lora_servable, lora_settings, resolve_models,
                                      tasks_from_training_runs)
from lf_wrap.evaluation.recipe import EvalRecipe
from lf_wrap.evaluation.requests import Request, TaskData, live_requests, load_task
from lf_wrap.serving import server as serving
from lf_wrap.serving.engine import engine_spec, load_tokenizer
from lf_wrap.core.locks import folder_lock
from lf_wrap.evaluation.results import score_all, uncertainty_section, versions, write_manifest
from lf_wrap.core.files import atomic_write_json, atomic_write_text
from lf_wrap.core.process import RECORDED_ENV
from lf_wrap.tasks.prompts import get_template, rendering_id, stop_token_ids
from lf_wrap.scoring.registry import METRICS
from lf_wrap.tasks import TASKS

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class EvalResult:
    out: Path
    metrics: dict
    generated: int = 0
    reused: int = 0
    notes: list[str] = field(default_factory=list)


def _described(data: dict[str, TaskData]) -> list:
    """The metrics metrics.json describes: the study's, then those of the tasks scored otherwise
    (chrf, a function of your own). A metric the study has keeps the study's description."""
    extra = {m.name: m for d in data.values() for m in d.definition.family.metrics if m.name not in METRICS}
    return [*METRICS.values(), *extra.values()]


def default_out(recipe_path: Path) -> Path:
    return Path("eval/results") / Path(recipe_path).stem


log = logging.getLogger(__name__)


def _say(message: str) -> None:
    log.info(f"eval: {message}")


def tokenizer_of(model: ResolvedModel, base: str) -> str:
    """The tokenizer a model is served with: a full model's own when it has one, else the base's."""
    own = model.kind == "full" and any((Path(model.path) / f).is_file() for f in TOKENIZER_FILES)
    return model.path if own else base


def _engine_groups(models: list[ResolvedModel], base: str,
                   patched: serving.PatchedModels | None) -> list[tuple[str, str, list[ResolvedModel], bool]]:
    """(model to load, tokenizer, models it serves, is the base's engine): base + adapters (+ the
    full models patched into the base) first, then each other full model."""
    groups: dict[str, list[ResolvedModel]] = {}
    for model in models:
        key = "base" if patched is not None and model.name in patched.full else model.engine_key
        groups.setdefault(key, []).append(model)
    return [(base if key == "base" else members[0].path, base if key == "base" else tokenizer_of(members[0], base),
             members, key == "base") for key, members in groups.items()]


def _plan_group(recipe: EvalRecipe, out: Path, members: list[ResolvedModel], tokenizer, data: dict[str, TaskData],
                force: bool, counts: dict, identities: dict[str, dict], stop_ids: list[int],
                engine_kwargs: dict, model_by_model: bool) -> tuple[dict, list[tuple[ResolvedModel, Request]]]:
    files: dict[tuple[str, str], pred.PredictionFile] = {}
    pending: list[tuple[ResolvedModel, Request]] = []
    shared = engine_generation(template=recipe.template, prompt_rendering=rendering_id(recipe.template),
                               stop_token_ids=stop_ids, engine_kwargs=engine_kwargs, long_prompts=recipe.long_prompts)
    for task, task_data in data.items():
        entry = recipe.tasks[task]
        live, too_long = live_requests(task_data, recipe, tokenizer, entry.max_new_tokens)
        expected = {r.row: r.prompt_sha256 for r in live}
        for model in members:
            generation = generation_identity(shared, entry.max_new_tokens, task_data.no_answer_text)
            meta = {"model": model.name, "kind": model.kind, "model_path": model.path,
                    **identities[model.name], "task": task, "dataset": task_data.dataset,
                    "dataset_sha256": task_data.sha256, **generation, "dtype": recipe.engine.dtype,
                    "max_model_len": recipe.engine.max_model_len, "lf_wrap_version": __version__}
            file = pred.PredictionFile(out / "predictions" / model.name / f"{task}.jsonl", meta, force)
            file.check_prompts(expected)
            if file.repaired:
                _say(f"{file.path}: cut a torn last line (a killed run); that row is generated again")
            files[(model.name, task)] = file
            counts[model.name][task] = {"rows": len(live), "skipped_too_long": len(too_long),
                                        "truncated": sum(r.truncated for r in live)}
        if too_long:
            _say(f"{task}: {len(too_long)} of {len(live) + len(too_long)} prompts have more than max_model_len - "
                 "max_new_tokens "
                 f"= {recipe.engine.max_model_len - entry.max_new_tokens} tokens; skipped (long_prompts: skip)")
        for request in live:          # row by row, every model: all models' requests in each batch
            for model in members:
                if request.row not in files[(model.name, task)].done:
                    pending.append((model, request))
    if model_by_model:                # patched: one model's weights at a time, so its rows together
        order = {m.name: i for i, m in enumerate(members)}
        pending.sort(key=lambda item: order[item[0].name])
    return files, pending


def _serving_entry(members: list[ResolvedModel], is_base: bool, mode: str,
                   patched: serving.PatchedModels | None) -> dict:
    """How this engine served its models, for the manifest's engines entry."""
    if not is_base:
        why = (patched.refused.get(members[0].name) if patched is not None else None) or "engine.serve is lora"
        return {"serve": "own engine", "why": why}
    if patched:
        return {"serve": "patch", "patched": [m.name for m in members if m.name in patched.names()],
                "lora": [m.name for m in members if m.kind == "adapter" and m.name not in patched.names()]}
    return {"serve": "lora" if mode == "lora" or any(m.kind == "adapter" for m in members) else mode}


def plan_eval(recipe: EvalRecipe, out: Path) -> tuple[EvalRecipe, list[ResolvedModel], dict, Path]:
    """Every check `lf-wrap eval` runs before it touches a folder or starts an engine (also what
    `lf-wrap validate` runs on an eval recipe): template, models, adapters' base, tasks and
    their datasets, the base's folder, `--out`'s place, the serving mode."""
    get_template(recipe.template)
    models = resolve_models(recipe)
    recipe, from_runs = tasks_from_training_runs(recipe, models)
    for note in from_runs:
        _say(note)
    data = {task: load_task(recipe, task) for task in recipe.tasks}
    base_folder = resolve_base(recipe.model_name_or_path)    # what is hashed is what vLLM loads
    check_output_folder(out, "--out", {**{f"model '{m.name}'": Path(m.path) for m in models if m.kind != "base"},
                                       "the base model": base_folder,
                                       "the dataset folder": Path(recipe.dataset_dir),
                                       **{f"dataset '{d.dataset}'": d.file for d in data.values()}})
    serving.resolve_serve(recipe.engine)
    return recipe, models, data, base_folder


def evaluate(recipe: EvalRecipe, recipe_path: Path, recipe_text: str, out: Path | None = None,
             force: bool = False, overrides: tuple[str, ...] = ()) -> EvalResult:
    """Ctrl-C, SIGTERM or SIGHUP: the manifest says interrupted, the lock goes, one Error line,
    exit 130/143/129 (lf_wrap.core.interrupts); the same command goes on from the rows written."""
    record = StageRecord("eval")
    given = Path(out or default_out(recipe_path))
    with stoppable(f"the predictions written so far are kept in {given}: run the same command to go on"):
        recipe, models, data, base_folder = plan_eval(recipe, given)
        out = given.absolute()        # the run's files land in --out, whatever becomes of the working directory
        with folder_lock(out):
            result = _evaluate(recipe, recipe_path, recipe_text, out, force, overrides, record, models, data,
                               base_folder)
    result.out = given
    return result


def _evaluate(recipe: EvalRecipe, recipe_path: Path, recipe_text: str, out: Path, force: bool,
              overrides: tuple[str, ...], record: StageRecord, models: list[ResolvedModel], data: dict,
              base_folder: Path) -> EvalResult:
    identities: dict[str, dict] = {}
    lora: dict = {}
    this_run = {"recipe": str(recipe_path), "overrides": list(overrides), "force": force, "engines": [],
                "generated": 0, "reused": 0, "versions": versions(),
                "env": {k: os.environ[k] for k in (*RECORDED_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING")
                        if k in os.environ}}

    def interrupted() -> None:        # what ran so far; the rerun finds the rows in the predictions files
        record.finish(INTERRUPTED)
        write_manifest(out, record, recipe, models, identities, data, lora, this_run)

    with on_interrupt(interrupted):
        counts = _generate_all(recipe, out, force, models, data, base_folder, identities, lora, this_run)
        results = _score_and_write(recipe, recipe_text, out, models, data, counts)
    record.finish()
    write_manifest(out, record, recipe, models, identities, data, lora, this_run)
    from lf_wrap.evaluation.report import write_report

    write_report(out)
    return EvalResult(out=out, metrics=results, generated=this_run["generated"], reused=this_run["reused"],
                      notes=lora["notes"])


def _generate_all(recipe: EvalRecipe, out: Path, force: bool, models: list[ResolvedModel], data: dict,
                  base_folder: Path, identities: dict[str, dict], lora: dict, this_run: dict) -> dict:
    """Every missing row of every (model, task), engine by engine; `identities`, `lora` and
    `this_run` (engines, generated, reused) filled as it goes, for the manifest. The row counts
    of each model's tasks."""
    mode, why = serving.resolve_serve(recipe.engine)
    patched = serving.plan_patches(models, base_folder) if mode == "patch" else None
    _say(f"serving: {mode} ({why})" + (f"; patched into the base's engine: {', '.join(patched.names())}"
                                       if patched else ""))
    lora_served = [m for m in models if not (patched and m.name in patched.adapters)]
    check_lora_servable(lora_served, base_folder)
    rank, slots, notes = lora_settings(lora_served, recipe.engine.max_lora_rank, recipe.engine.max_loras)
    lora.update(max_lora_rank=rank, max_loras=slots, notes=notes)
    for note in notes:
        _say(note)
    counts: dict = defaultdict(dict)
    plans = []
    for model_path, tokenizer_path, members, is_base in _engine_groups(models, str(base_folder), patched):
        tokenizer = load_tokenizer(tokenizer_path)
        stop_ids = stop_token_ids(tokenizer, recipe.template)
        for model in members:
            identities[model.name] = model_identity(model.kind, model.path, base_folder,
                                                    Path(tokenizer_of(model, str(base_folder))))
            if model.kind == "adapter":    # W0 + s*B@A in the weights and a LoRA request round apart
                identities[model.name]["adapter_served_as"] = (
                    "patch" if patched and model.name in patched.adapters else "lora")
        server = patched if is_base and patched else None
        lora_adapters = {m.name: m.path for m in members if m in lora_served and m.kind == "adapter"}
        spec = engine_spec(lora_adapters, model_path, tokenizer_path, recipe.engine, (rank, slots), stop_ids)
        files, pending = _plan_group(recipe, out, members, tokenizer, data, force, counts, identities, stop_ids,
                                     spec.kwargs, model_by_model=server is not None)
        how = _serving_entry(members, is_base, mode, patched)
        plans.append((model_path, members, files, pending, spec, server, how))
    for number, (model_path, members, files, pending, spec, server, how) in enumerate(plans, 1):
        names = ", ".join(m.name for m in members)
        total = sum(c["rows"] for m in members for c in counts[m.name].values())
        this_run["reused"] += total - len(pending)
        if not pending:
            _say(f"engine {number}/{len(plans)} ({names}): all {total} predictions already written; not started")
            continue
        _say(f"engine {number}/{len(plans)}: {model_path} serving {names}: {len(pending)} rows to generate"
             + (f", {total - len(pending)} already written" if total > len(pending) else ""))
        with tools_to_log(out / "eval.log", "eval"):
            timing = generate(recipe, spec, files, pending, f"engine {number}/{len(plans)}", server)
        this_run["engines"].append({"models": [m.name for m in members], **how, "vllm_args": spec.kwargs,
                                    "data_parallel_size": recipe.engine.data_parallel_size, **timing})
        this_run["generated"] += len(pending)
    return counts


def _score_and_write(recipe: EvalRecipe, recipe_text: str, out: Path, models: list[ResolvedModel],
                     data: dict, counts: dict) -> dict:
    """Score every predictions file; metrics.json and the recipe written. The metrics."""
    results = score_all(out, models, data)
    metric_doc = {
        "metrics": results,
        "counts": dict(counts),
        "headline": {**{t.name: t.headline for t in TASKS.values()},
                     **{t: d.definition.headline for t, d in data.items()}},
        "tasks": {t: d.definition.declaration() for t, d in data.items()},
        "higher_is_better": {m.name: m.higher_is_better for m in _described(data)},
        "definitions": {m.name: m.definition for m in _described(data)},
        **uncertainty_section(out, models, data, results, recipe.bootstrap),
    }
    atomic_write_json(out / "metrics.json", metric_doc)
    atomic_write_text(out / "recipe.yaml", recipe_text)
    return results
