"""`lf-wrap merge search`: find the merge of task adapters that keeps every specialist's gain.

    <out>/manifest.json      header, inputs (sha256/BLAKE3 digests), rows (ids of both sets), seed,
                             sampler, budget, objective, identity, timings, the best merge
    <out>/search.yaml        the recipe as given (direct form: as resolved)
    <out>/optuna.journal     the optimiser's storage (Optuna JournalStorage): the single record
    <out>/scores.jsonl       every score computed (lf_wrap.search.ledger), reused on a rerun
    <out>/leaderboard.{md,csv,json}, chart.png, final.md, pareto.png   (lf_wrap.search.report.leaderboard)
    <out>/best/              the best merge, only when the verdict is confirmed (lf_wrap.search.report.verdict;
                             merge stage: adapter or model, with its own manifest)

Order: every check (eval recipe, adapters, base, rows, the folder) before the engine starts;
base and specialists on the search rows (the reference of every retained gain); rounds of
candidates from the optimiser until `budget` trials are complete; the leaderboard; the best, the
top `rows.held` (lf_wrap.search.report.held) and the study-style sum merge on the report rows; the verdict; the best
merge written when it is confirmed. A task whose specialist does not beat the base beyond noise on the
search rows stops the search before any candidate (verdict.without_signal). Ctrl-C,
SIGTERM or SIGHUP: one Error line, exit 130/143/129, the manifest says interrupted, and the same
command goes on from the journal and the ledger. `workers: shared`: each run is one worker of a
search several share (lf_wrap.search.workers, docs/search-workers.md)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lf_wrap import __version__
from lf_wrap.core.console import Progress, tools_to_log
from lf_wrap.core.errors import UserError
from lf_wrap.core.interrupts import Stop, stopped
from lf_wrap.core.files import atomic_write_json, atomic_write_text, check_output_folder
from lf_wrap.core.manifest import FAILED, INTERRUPTED, StageRecord
from lf_wrap.core.identity import engine_generation, model_identity
from lf_wrap.core.models import resolve_base
from lf_wrap.core.process import terminate_as_interrupt
from lf_wrap.serving.engine import EngineSpec, engine_spec
from lf_wrap.evaluation import EvalRecipe, load_eval_recipe
from lf_wrap.serving.engine import load_tokenizer
from lf_wrap.tasks.prompts import rendering_id, stop_token_ids
from lf_wrap.merge.checks import MergePlan, check_inputs, check_methods_fit
from lf_wrap.merge.config import MergeConfig
from lf_wrap.search import optimiser, pruning, ranking, workers
from lf_wrap.search.report import held, leaderboard, verdict
from lf_wrap.search.report.final import (SearchResult, finish, from_manifest, references, specialist,  # noqa: F401
                                  stop_without_signal, summary)
from lf_wrap.search.folder import MANIFEST, check_best, prepare_folder, search_space
from lf_wrap.search.from_eval import eval_answers
from lf_wrap.search.joint import check_joint
from lf_wrap.search.layerwise import check_layout
from lf_wrap.search.ledger import Ledger, identity
from lf_wrap.search.objective import Reference, reference
from lf_wrap.search.recipe import SearchRecipe
from lf_wrap.search.report.noise import Noise
from lf_wrap.search.splits import TaskRows, fold_record, row_ids, scoring_ids, specialists, split_rows
from lf_wrap.search.scorer import Scorer, headline_scores, row_scores

log = logging.getLogger(__name__)


def _say(message: str) -> None:
    log.info(f"search: {message}")


@dataclass
class SearchPlan:
    """Everything checked and resolved before a folder is touched or an engine starts."""

    recipe: SearchRecipe
    eval_recipe: EvalRecipe
    tasks: list[str]
    plan: MergePlan
    rows: dict[str, TaskRows]
    spec: EngineSpec
    inputs: dict
    generation: dict
    notes: list[str]
    joint: MergePlan | None = None      # the joint adapter (recipe.joint), read as a one-adapter merge

    @property
    def identity(self) -> str:
        return identity({"inputs": self.inputs, "rows": row_ids(self.rows), "generation": self.generation,
                         "scoring": scoring_ids(self.rows), "lf_wrap_version": __version__})

    def describe(self) -> str:
        r = self.recipe
        rows = ", ".join(f"{t} {len(x.search)}/{len(x.report)}" for t, x in self.rows.items())
        folds = f" ({r.rows.folds} folds, ranked by {r.uncertainty.rank_by})" if r.rows.folds else ""
        layout = ((f", spaces {', '.join(r.spaces)}" if r.spaces != ["full"] else "")
                  + (f", {r.blocks} blocks of layers" if r.blocks > 1 else "")
                  + (", attention and MLP apart" if r.per_kind else "")
                  + (f", seeds {', '.join(map(str, r.seeds))}" if r.seeds else ""))
        return (f"OK: {len(self.tasks)} adapters ({', '.join(self.tasks)}) on {self.plan.base_dir}; rows search/"
                f"report: {rows}; methods {', '.join(r.methods)}" + layout + f", sampler {r.sampler}, budget "
                f"{r.budget}, objective {r.objective}" + folds + (f"; joint reference {r.joint}" if self.joint else "")
                + f", {self.eval_recipe.engine.data_parallel_size} engine(s) -> {r.out}")


def plan_search(recipe: SearchRecipe) -> SearchPlan:
    """Read and check every input: the eval recipe, the adapters (each with its task), the base,
    the rows of each task (split, tokenized), the output folder's place. Raises UserError."""
    out = Path(recipe.out)
    eval_recipe, _ = load_eval_recipe(Path(recipe.eval), recipe.eval_overrides)
    eval_recipe, models, notes = specialists(recipe, eval_recipe)
    tasks = [m.task for m in models]
    base_dir = resolve_base(eval_recipe.model_name_or_path)
    if out.exists() and not out.is_dir():
        raise UserError(f"out {out} is a file, not a search folder; choose another out")
    check_best(out)                    # before anything is scored: best/ is the search's to write or remove
    plan = check_inputs(MergeConfig(adapters=[m.path for m in models], method="linear",
                                    base=eval_recipe.model_name_or_path, out=str(out / "best")))
    check_methods_fit(recipe.methods, plan, recipe.spaces)
    check_layout(recipe.blocks, recipe.per_kind, plan)
    joint = check_joint(recipe, eval_recipe, plan) if recipe.joint else None
    joint_path = {f"the joint adapter {recipe.joint}": Path(recipe.joint)} if recipe.joint else {}
    check_output_folder(out, "out", {**joint_path, **{f"adapter {m.path}": Path(m.path) for m in models},
                                     "the base model": base_dir, "the dataset folder": Path(eval_recipe.dataset_dir)})
    engine = eval_recipe.engine
    if engine.tensor_parallel_size > 1 or engine.pipeline_parallel_size > 1:
        notes.append(f"tensor/pipeline parallel {engine.tensor_parallel_size}/{engine.pipeline_parallel_size} of the "
                     "eval recipe not used: patching needs each engine whole on one device; data_parallel_size "
                     f"engines ({engine.data_parallel_size}) share the candidates instead")
    tokenizer = load_tokenizer(str(base_dir))
    stop_ids = stop_token_ids(tokenizer, eval_recipe.template)
    rows = split_rows(recipe, eval_recipe, tasks, tokenizer)
    settings = engine.model_copy(update={"tensor_parallel_size": 1, "pipeline_parallel_size": 1})
    spec = engine_spec({}, str(base_dir), str(base_dir), settings, (settings.max_lora_rank, 1), stop_ids)
    # The same identity as eval's: every served file of the base (weights, config, tokenizer,
    # chat template) and of each adapter by content, and every engine argument.
    base = model_identity("base", base_dir, base_dir)
    inputs = {"base": {"name": eval_recipe.model_name_or_path, "folder": str(base_dir),
                       "fingerprint": base["model_fingerprint"], "files": base["model_files"]},
              "adapters": [{"path": m.path, "task": m.task, "fingerprint": a.adapter.fingerprint()}
                           for m, a in zip(models, plan.adapters)]}
    if joint is not None:              # only when named: a search without one keeps its identity
        inputs["joint"] = {"path": recipe.joint, "fingerprint": joint.adapters[0].adapter.fingerprint()}
    # The eval's own identity (lf_wrap.core.identity): each task adds its max_new_tokens (the rows'
    # identity) and no-answer text (the scoring's).
    generation = engine_generation(template=eval_recipe.template, prompt_rendering=rendering_id(eval_recipe.template),
                                   stop_token_ids=stop_ids, engine_kwargs=spec.kwargs,
                                   long_prompts=eval_recipe.long_prompts)
    return SearchPlan(recipe, eval_recipe, tasks, plan, rows, spec, inputs, generation, notes + plan.warnings, joint)



def search(recipe: SearchRecipe, recipe_text: str, force: bool = False,
           recipe_path: Path | None = None, scores: Path | None = None) -> SearchResult:
    """Run (or continue) the search; one run at a time holds `out` (lf_wrap.core.locks), or each
    worker of a shared search holds it shared (lf_wrap.search.workers). `scores`: the folder of the
    score ledger when it is not `out` (one seed of lf_wrap.search.seeds)."""
    record = StageRecord("search")
    if force and recipe.workers == "shared":
        raise UserError("--force: not with workers: shared (other workers may be scoring in out); stop them, and "
                        "start over once with --force --set workers=single")
    checked = plan_search(recipe)
    for note in checked.notes:
        _say(note)
    out = Path(recipe.out).expanduser().resolve()    # a link to a folder: the folder it points to
    crew = workers.crew(recipe, out)
    with crew.hold(out):
        return _search(recipe, recipe_text, force, recipe_path, record, checked, out, crew, scores or out)


def _search(recipe: SearchRecipe, recipe_text: str, force: bool, recipe_path: Path | None, record: StageRecord,
            checked: SearchPlan, out: Path, crew: workers.Solo, scores: Path) -> SearchResult:
    ident, rows, spec = checked.identity, checked.rows, checked.spec
    space = search_space(recipe)
    reads = {"the eval recipe": Path(recipe.eval), **({"the search recipe": Path(recipe_path)} if recipe_path else {})}
    storage = optimiser.redacted(recipe.storage) if recipe.storage else None
    scoring = scoring_ids(rows)
    body = {"identity": ident, "space": space, "inputs": checked.inputs, "rows": row_ids(rows),
            "generation": checked.generation, "scoring": scoring, "eval_recipe": str(recipe.eval),
            "eval_overrides": recipe.eval_overrides,
            "budget": recipe.budget, "round_size": recipe.round_size, "engine": spec.kwargs, "notes": checked.notes,
            "storage": storage, "workers": recipe.workers,
            "folds": fold_record(rows, recipe.rows.folds, recipe.rows.seed)}
    with crew.setup():                          # shared: one worker at a time checks and writes the folder
        resumed = prepare_folder(out, ident, space, force, reads, {"inputs": checked.inputs, "rows": row_ids(rows),
                                                                   "generation": checked.generation,
                                                                   "scoring": scoring}, storage)
        ledger = Ledger(scores, ident, crew.id)    # a damaged ledger or journal: one Error, before anything runs
        if not recipe.storage:
            optimiser.check_journal(out)
        # (shared: a worker that joins before the first one created the study finds no journal yet)
        journal_lost = resumed and not crew.shared and not recipe.storage and not (out / optimiser.JOURNAL).exists()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "search.yaml", recipe_text)
        atomic_write_json(out / MANIFEST, record.manifest(body))
        crew.register()
    if resumed:
        _say(f"{'joining' if crew.shared else 'continuing'} the search in {out}: {len(ledger.entries)} scores on "
             "record are reused" + (f" (worker {crew.id})" if crew.shared else ""))
        if journal_lost:
            _say(f"{out / optimiser.JOURNAL} is missing: the optimiser starts over with a new study (any trials "
                 "it held are gone); scores on record are reused where it asks the same candidates")
    engine = checked.eval_recipe.engine
    scorer = Scorer(spec, checked.plan, rows, ledger, checked.eval_recipe.batch_size,
                    replicas=engine.data_parallel_size, answers=eval_answers(recipe, checked), joint=checked.joint)
    stop = Stop()                      # SIGTERM/SIGHUP stop the search as Ctrl-C does (exit 143/129, not 130),
    try:                               # also when caught inside a nested stage (writing best/ is a merge)
        with terminate_as_interrupt(), tools_to_log(out / "search.log", "search"):
            result = _run(recipe, out, checked.tasks, rows, scorer, checked.eval_recipe.bootstrap, record, body,
                          crew, ident)
    except BaseException as err:       # the manifest says how it ended; the journal and ledger stay
        # A Ctrl-C inside a library's cleanup (Optuna's journal lock) may surface as that cleanup's
        # own error: the interrupt is still what stopped the search.
        was_stopped = stopped(err)
        if not crew.shared:            # shared: the others go on; the folder's manifest stays theirs
            record.finish(INTERRUPTED if was_stopped else FAILED)
            body.update(scored=scorer.scored, reused=scorer.reused, error=str(err).splitlines()[0] if str(err) else
                        type(err).__name__)
            atomic_write_json(out / MANIFEST, record.manifest(body))
        scorer.close(after=err)
        if was_stopped:
            raise stop.error(f"the scores so far are kept in {out}: run the same command to go on") from None
        raise
    scorer.close()
    return result


def _run(recipe: SearchRecipe, out: Path, tasks, rows, scorer: Scorer, bootstrap, record, body, crew: workers.Solo,
         ident: str) -> SearchResult:
    started = time.monotonic()
    n = len(tasks)
    first = scorer.score_many("search", [None] + [specialist(i, n) for i in range(n)])
    base = headline_scores(first[0], rows)
    own = {t: headline_scores(entry, rows)[t] for t, entry in zip(tasks, first[1:])}
    noise = Noise.of(recipe.verdict.level, bootstrap.bootstrap())
    own_rows = {t: row_scores(entry)[t] for t, entry in zip(tasks, first[1:])}
    tests, without = verdict.search_rows_gate(noise, {t: rows[t].data.definition for t in tasks}, tasks,
                                              row_scores(first[0]), own_rows, recipe.objective)
    for why in without.values():
        _say(why[0].upper() + why[1:])
    body["signal"] = {"search": tests}
    if without and (recipe.verdict.without_signal == "stop" or len(without) == len(tasks)):
        with crew.finishing(out) as finished:
            if finished is not None:
                return from_manifest(out, finished, scorer)
            return stop_without_signal(recipe, out, tests, without, scorer, record, body)
    try:
        ref = reference(base, own)
    except ValueError as err:
        raise UserError(f"search rows: {err}") from None
    if without:
        ref = Reference(ref.base, ref.specialist, tuple(t for t in ref.tasks if t not in without),
                        {**ref.left_out, **{t: f"{t}: {why}; not counted (verdict.without_signal: rank_the_others)"
                                            for t, why in without.items()}})
    body["left_out"] = ref.left_out
    judge = ranking.make_judge(recipe, ref, rows, first[0], dict(zip(tasks, first[1:])))
    with crew.setup():                 # shared: the study created and the references enqueued once
        study = optimiser.open_study(out, recipe, tasks, optimiser.study_name(recipe, ident, body["space"]),
                                     objectives=len(ref.tasks) if recipe.objective == "pareto" else 1,
                                     pruner=pruning.HeldPruner(recipe.rows.held) if recipe.pruning else None)
    requeued = crew.requeue(study)
    if requeued:
        _say(f"{requeued} candidate(s) were being scored when {'their worker' if crew.shared else 'the last run'} "
             "stopped; asked again (their scores are reused where they were written)")
    scorer.ledger.refresh()            # shared: the scores other workers wrote since this one joined
    lost = optimiser.unscored(study, scorer.ledger, recipe, tasks)
    if lost:
        _say(f"{len(lost)} completed candidate(s) of {optimiser.JOURNAL} have no score in {scorer.ledger.path.name} "
             "(deleted?); scoring them again")
        scorer.score_many("search", lost)
    done = len(optimiser.finished(study))
    total = optimiser.budget(recipe, tasks)
    if total < recipe.budget:
        _say(f"the grid has {total} points: {total} candidates instead of budget {recipe.budget}")
    if done > total:
        _say(f"budget {total}: the search already holds {done} completed candidates; none is asked, and the "
             f"leaderboard keeps all {done}")
    round_number = 0
    bar = Progress("search", total, "candidate")
    bar.update(done)
    first_done, loop_started = done, time.monotonic()
    stages = pruning.Stages(judge, rows, study, scorer.ledger) if recipe.pruning else None
    while done < total:
        trials = crew.ask(study, recipe.round_size, total)
        if not trials:                 # shared: the rest of the budget is being scored by other workers
            crew.wait(study)
            done = len(optimiser.finished(study))
            bar.update(done)
            continue
        round_number += 1
        candidates = [optimiser.suggest(trial, recipe, tasks) for trial in trials]
        for trial, candidate in zip(trials, candidates):
            trial.set_user_attr("candidate", candidate.label())
        if recipe.pruning:             # stage by stage, each candidate dropped once it cannot reach the top held
            pruning.score_round(study, trials, candidates, scorer, judge, recipe, rows, stages)
        else:
            for trial, entry in zip(trials, scorer.score_many("search", candidates)):
                optimiser.tell(study, trial, ranking.told(recipe, judge, rows, entry))
        done = len(optimiser.finished(study))
        scorer.ledger.refresh()
        best = leaderboard.best_row(leaderboard.rows(study, scorer.ledger, judge, rows))
        elapsed = time.monotonic() - started
        pruned = f", {len(optimiser.pruned(study))} pruned" if recipe.pruning else ""
        per = elapsed / max(done - first_done, 1)        # seconds per candidate (pruned ones cost less)
        bar.update(done, f"best {best['label']} {best['value']:.1%}",
                   line=f"search: round {round_number}: {done}/{total} candidates ({scorer.scored} scored, "
                        f"{scorer.reused} reused{pruned}); best so far {best['label']}: {held.ranked_by(judge)} "
                        f"{best['value']:.1%} (worst task kept {best['worst']:.1%}, mean {best['mean']:.1%}); "
                        f"{elapsed:.0f}s elapsed, about {per * (total - done):.0f}s left")
    bar.close()
    body["candidates_seconds"] = round(time.monotonic() - loop_started, 2)   # the rounds of candidates alone
    if optimiser.pruned(study):        # a resume with other folds or rows.held: the pruned that may now place
        settled = pruning.settle(leaderboard.rows(study, scorer.ledger, judge, rows), scorer, recipe.rows.held)
        if settled:
            _say(f"{settled} pruned candidate(s) could enter the top {recipe.rows.held} under these settings: "
                 "scored whole")
    body["pruning"] = {"on": recipe.pruning, "pruned": len(optimiser.pruned(study)),
                       "stages": [p.name for p in pruning.stages(judge, rows)] if recipe.pruning else None}
    with crew.finishing(out) as finished:      # shared: once, by the first worker to take the lock
        if finished is not None:
            return from_manifest(out, finished, scorer)
        return finish(recipe, out, tasks, rows, scorer, noise, record, body, crew, study, judge)
