"""The search's inputs as the eval stage reads them, and their split: the specialists (each with
its own task) and, for each task, the rows candidates are scored on and the disjoint rows the
final figures come from.

Rows are the eval recipe's prepared validation sets, rendered and tokenized by lf-wrap eval's
own code (lf_wrap.evaluation.requests), so a search row is exactly the request `lf-wrap eval`
would send. The split is a seeded draw of whole prompts: two rows with the same prompt always
land on the same side. Where a separate search set is named, a row found in both sets (same id
or same prompt) is refused: a merge chosen on rows is flattered by them."""

from __future__ import annotations

import random
from dataclasses import dataclass

from lf_wrap.core.errors import UserError
from lf_wrap.evaluation import (EvalRecipe, ModelEntry, Request, ResolvedModel, TaskData, live_requests, load_task,
                                resolve_models, tasks_from_training_runs, training_run)
from lf_wrap.search.recipe import SearchRecipe


@dataclass
class TaskRows:
    task: str
    data: TaskData                # the eval recipe's dataset (the report rows come from it)
    max_new_tokens: int
    search: list[Request]
    report: list[Request]
    search_dataset: str           # where the search rows come from
    search_sha256: str
    skipped_too_long: int = 0
    folds: list[int] | None = None  # the fold of each search row (rows.folds), else None


def specialists(recipe: SearchRecipe, eval_recipe: EvalRecipe) -> tuple[EvalRecipe, list[ResolvedModel], list[str]]:
    """(the eval recipe with any task added from a training run, one resolved adapter per task in
    the search's order, notes). Each adapter is read by the eval stage's reader (same base rule)."""
    entries = [ModelEntry(name="base")]
    entries += [ModelEntry(name=f"adapters.{i}", path=a.path, task=a.task) for i, a in enumerate(recipe.adapters)]
    with_models = eval_recipe.model_copy(update={"models": entries})
    models = resolve_models(with_models)[1:]
    for i, model in enumerate(models):
        if model.kind != "adapter":
            raise UserError(f"adapters.{i}.path: {model.path} is not a LoRA adapter folder (no adapter_config.json)")
        if model.task is None:
            trained_on = (training_run(model.path) or {}).get("tasks") or []
            if len(trained_on) > 1:
                raise UserError(f"adapters.{i}: {model.path} is a joint adapter (its `lf-wrap train` run trained on "
                                f"{', '.join(trained_on)} at once), not a specialist of one task; give it as `joint:`, "
                                "the reference the merges are compared with")
            raise UserError(f"adapters.{i}.task: no task for {model.path}: name it (`task:` in the recipe, "
                            "--tasks in the direct form); it is not the adapter of an `lf-wrap train` run")
    seen: dict[str, int] = {}
    for i, model in enumerate(models):
        if model.task in seen:
            raise UserError(f"adapters.{i}.task: adapters {seen[model.task]} and {i} are both '{model.task}' "
                            "specialists; a retained gain needs one specialist per task")
        seen[model.task] = i
    with_tasks, notes = tasks_from_training_runs(with_models, models)
    for i, model in enumerate(models):
        if model.task not in with_tasks.tasks:
            raise UserError(f"adapters.{i}.task: '{model.task}' is not a task of {recipe.eval} (tasks: "
                            f"{', '.join(with_tasks.tasks)})")
    return with_tasks, models, notes


def _draw(requests: list[Request], count: int, seed: int, task: str) -> tuple[list[Request], list[Request]]:
    """`count` rows drawn by whole prompts (seeded), and the others; both in dataset order."""
    groups: dict[str, list[Request]] = {}
    for request in requests:
        groups.setdefault(request.prompt_sha256, []).append(request)
    order = sorted(groups)
    random.Random(f"{seed}:{task}").shuffle(order)
    chosen: set[int] = set()
    for key in order:
        if len(chosen) >= count:
            break
        chosen.update(r.row for r in groups[key])
    return [r for r in requests if r.row in chosen], [r for r in requests if r.row not in chosen]


def split_rows(recipe: SearchRecipe, eval_recipe: EvalRecipe, tasks: list[str], tokenizer) -> dict[str, TaskRows]:
    for task in recipe.rows.search_datasets:          # a typo here would silently search on a draw instead
        if task not in tasks:
            raise UserError(f"rows.search_datasets.{task}: not a task of this search (tasks: {', '.join(tasks)})")
    out = {}
    for task in tasks:
        entry = eval_recipe.tasks[task]
        data = load_task(eval_recipe, task)
        live, too_long = live_requests(data, eval_recipe, tokenizer, entry.max_new_tokens)
        skipped = len(too_long)
        other = recipe.rows.search_datasets.get(task)
        if other is None:
            if recipe.rows.search >= len(live):
                raise UserError(f"rows.search: {recipe.rows.search} search rows of {task}'s {len(live)} usable rows "
                                f"({data.dataset}) leave none to report on; lower rows.search or name a separate "
                                f"set under rows.search_datasets.{task}")
            search, report = _draw(live, recipe.rows.search, recipe.rows.seed, task)
            source, source_sha = data.dataset, data.sha256
        else:
            search_entry = entry.model_copy(update={"dataset": other})
            search_data = load_task(eval_recipe.model_copy(update={"tasks": {**eval_recipe.tasks, task: search_entry}}),
                                    task)
            search, more = live_requests(search_data, eval_recipe, tokenizer, entry.max_new_tokens)
            skipped += len(more)
            search = search[:recipe.rows.search]
            report, source, source_sha = live, search_data.dataset, search_data.sha256
            _refuse_overlap(task, search, report, source, data.dataset)
        if recipe.rows.report is not None:
            report = report[:recipe.rows.report]
        if not search or not report:
            raise UserError(f"{task}: no {'search' if not search else 'report'} rows left (prompts longer than "
                            "engine.max_model_len - max_new_tokens are skipped)")
        folds = deal_folds(search, recipe.rows.folds, recipe.rows.seed, task) if recipe.rows.folds else None
        out[task] = TaskRows(task, data, entry.max_new_tokens, search, report, source, source_sha, skipped, folds)
    return out


def deal_folds(search: list[Request], k: int, seed: int, task: str) -> list[int]:
    """The fold (0..k-1) of each search row, in order: whole prompts shuffled (seeded by the rows'
    seed and the task, apart from the draw's) and dealt round-robin, so folds differ in size by
    one prompt at most and two rows with the same prompt share a fold. Only the rows' ids decide
    it: scores on record are re-ranked under other folds without generating anything again."""
    order = sorted({r.prompt_sha256 for r in search})
    if len(order) < k:
        raise UserError(f"rows.folds: {k} folds of {task}'s {len(search)} search rows ({len(order)} distinct "
                        f"prompts) would leave a fold empty; give at most {len(order)} folds, or more search rows")
    random.Random(f"{seed}:{task}:folds").shuffle(order)
    fold = {prompt: i % k for i, prompt in enumerate(order)}
    return [fold[r.prompt_sha256] for r in search]


def fold_record(rows: dict[str, TaskRows], k: int | None, seed: int) -> dict | None:
    """What the manifest and leaderboard record of the folds (not part of the search's identity)."""
    if not k:
        return None
    return {"folds": k, "seed": seed, "rows_per_fold": {t: [r.folds.count(f) for f in range(k)]
                                                         for t, r in rows.items()}}


def _refuse_overlap(task: str, search: list[Request], report: list[Request], search_name: str,
                    report_name: str) -> None:
    ids = {r.id: r for r in report}
    prompts = {r.prompt_sha256: r for r in report}
    for request in search:
        twin = ids.get(request.id) or prompts.get(request.prompt_sha256)
        if twin is not None:
            same = "id" if twin.id == request.id else "prompt"
            raise UserError(f"rows.search_datasets.{task}: row {request.row} (id {request.id}) of {search_name} "
                            f"has the same {same} as row {twin.row} (id {twin.id}) of {report_name}, the report rows; "
                            "search and report rows must not overlap")


def scoring_ids(rows: dict[str, TaskRows]) -> dict:
    """How each task's rows are scored (part of a stored score's identity): its metric family,
    a function of your own by its file's content, and the no-answer text read as ""."""
    return {task: {"metric": r.data.definition.metric, **r.data.definition.family.identity(),
                   "no_answer_text": r.data.no_answer_text} for task, r in rows.items()}


def row_ids(rows: dict[str, TaskRows]) -> dict:
    """What the manifest records of the rows (and what a reused score's identity includes)."""
    return {task: {"search_dataset": r.search_dataset, "search_dataset_sha256": r.search_sha256,
                   "report_dataset": r.data.dataset,
                   "report_dataset_sha256": r.data.sha256, "max_new_tokens": r.max_new_tokens,
                   "search": [[q.id, q.prompt_sha256] for q in r.search],
                   "report": [[q.id, q.prompt_sha256] for q in r.report],
                   "skipped_too_long": r.skipped_too_long}
            for task, r in rows.items()}

