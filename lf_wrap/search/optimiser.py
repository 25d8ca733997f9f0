"""The optimiser: an Optuna study in a journal file inside the search folder, driven through
Optuna's ask/tell interface, one round of candidates at a time.

Why Optuna: seeded samplers (TPE, CMA-ES, random, grid) behind one interface, conditional
parameters (density exists only for ties/dare), and storage that is the single record of a
search: the journal is appended to as trials are asked and told, so a killed search is
continued by opening the same file (`JournalFileBackend`, no database server). A trial that was
asked but never told (the process died while scoring it) is marked failed and its parameters
enqueued again, so the next round asks it first; its score is taken from the search's score
ledger when it had been written (lf_wrap.search.ledger). In a search shared by several workers
(lf_wrap.search.workers) only a dead worker's trials are (`requeue_stale`), and the study may
live in a database instead (`storage`: an RDB URL, Optuna's RDBStorage).

Parameters: `method` (when more than one), `weight.<task>` per adapter on the recipe's step
(layer-wise: `weight.<task>[.<kind>][.<block>]`, candidates.weight_params),
`density` for ties/dare_*, `space` (when more than one; `space.<method>` for a method that runs
in only some of them). The study-style sum (every weight 1) and linear 0.5 are enqueued
first when they lie in the space: the optimiser starts from the merges people already use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.errors import UserError
from lf_wrap.merge.methods import METHODS
from lf_wrap.search.candidates import Candidate, gather, weight_params
from lf_wrap.search.recipe import SearchRecipe

STUDY_NAME = "merge-search"
JOURNAL = "optuna.journal"


def _quiet() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)     # lf-wrap prints one line per round
    # TPE's `group` (conditional parameters: density exists for ties/dare only) is marked experimental.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _grid_values(low: float, high: float, step: float | None) -> list[float]:
    if step is None:
        return [low, high]
    count = int(round((high - low) / step))
    return [round(low + k * step, 6) for k in range(count + 1) if low + k * step <= high + 1e-9]


def _grid_space(recipe: SearchRecipe, tasks: list[str]) -> dict[str, list]:
    space: dict[str, list] = {name: list(recipe.grid) for t in tasks
                              for name, _, _ in weight_params(t, recipe.blocks, recipe.per_kind)}
    if len(recipe.methods) > 1:
        space["method"] = list(recipe.methods)
    if len(recipe.spaces) > 1:
        space["space"] = list(recipe.spaces)
    if any(METHODS[m].density for m in recipe.methods):
        space["density"] = _grid_values(recipe.density.low, recipe.density.high, recipe.density.step)
    return space


def budget(recipe: SearchRecipe, tasks: list[str]) -> int:
    """The trials a search runs: `budget`, or fewer when a grid has fewer points."""
    if recipe.sampler != "grid":
        return recipe.budget
    points = 1
    for values in _grid_space(recipe, tasks).values():
        points *= len(values)
    return min(recipe.budget, points)


def tell(study, trial, value: float | list[float] | None = None, state=None) -> None:
    """study.tell (a value, or `state` PRUNED); Optuna's GridSampler calls `study.stop()` once the
    grid is walked, which raises outside `study.optimize` after the trial is stored: the search ends
    there anyway."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def make_sampler(recipe: SearchRecipe, tasks: list[str]):
    import optuna

    if recipe.sampler == "random":
        return optuna.samplers.RandomSampler(seed=recipe.seed)
    if recipe.sampler == "grid":
        return optuna.samplers.GridSampler(_grid_space(recipe, tasks), seed=recipe.seed)
    if recipe.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=recipe.seed, warn_independent_sampling=False,
                                            n_startup_trials=min(4, recipe.budget))
    _quiet()
    return optuna.samplers.TPESampler(seed=recipe.seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=max(2, min(10, recipe.budget // 3)))


def check_journal(folder: Path) -> None:
    """Read the journal before any engine starts: a damaged line is one Error naming it (Optuna
    would raise a JSONDecodeError mid-search), and a torn last line (a kill while Optuna wrote it,
    which Optuna skips) is cut, so the next append does not glue a new line onto it."""
    path = Path(folder) / JOURNAL
    if not path.exists():
        return
    if not path.is_file():
        raise UserError(f"{path}: not a file; it should hold the optimiser's trials: move it away to start the "
                        "optimiser over, or pass --force to start the whole search over")
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._storage import JournalOperation   # the op codes Optuna replays (else: assert)

    lock = JournalFileSymlinkLock(str(path))      # Optuna's own: no worker of a shared search is mid-append
    lock.acquire()
    try:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as handle:
                jsonlines.cut_torn(handle)
            data = jsonlines.complete(data)
    finally:
        lock.release()
    for number, line in jsonlines.split(data):
        try:
            entry = json.loads(line.decode("utf-8"))
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or "op_code" not in entry:
            _damaged(path, f"{path}:{number}: not a line Optuna wrote")
        if not any(entry["op_code"] == op for op in JournalOperation):
            _damaged(path, f"{path}:{number}: op_code {json.dumps(entry['op_code'])} is no operation Optuna knows")


def _damaged(path: Path, what: str):
    raise UserError(f"{what}; the search cannot go on from a damaged journal: restore it, or delete {path} to "
                    f"start the optimiser over (the scores on record in {path.parent}/scores.jsonl are reused where "
                    "it asks the same candidates), or pass --force to start the whole search over")


def study_name(recipe: SearchRecipe, ident: str, space: dict) -> str:
    """The journal holds one study, `merge-search`; a database may hold many searches' studies:
    there the name says which search (its identity and space), so every worker finds the same."""
    if not recipe.storage:
        return STUDY_NAME
    digest = hashlib.sha256(json.dumps({"identity": ident, "space": space}, sort_keys=True).encode()).hexdigest()
    return f"{STUDY_NAME}-{digest[:16]}"


def rdb_storage(url: str, study_name: str):
    """Optuna's RDBStorage on `url` (SQLAlchemy's form: sqlite:///path, postgresql://user@host/db,
    mysql+pymysql://user@host/db); one UserError when SQLAlchemy or the database cannot be reached."""
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        raise UserError(f"storage {redacted(url)}: an RDB URL needs SQLAlchemy: pip install sqlalchemy (and the "
                        "database's driver: psycopg2-binary for PostgreSQL, PyMySQL for MySQL); or leave storage "
                        "out to keep the study in the search folder's optuna.journal") from None
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:            # a driver missing, a refused connection, a bad URL
        raise UserError(f"storage {redacted(url)}: Optuna cannot open it ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); study {study_name}") from None


def redacted(url: str) -> str:
    """The URL without its password (what a manifest, a message or a log may show)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..." if "@" in url else url


def open_study(folder: Path, recipe: SearchRecipe, tasks: list[str], study_name: str = STUDY_NAME,
               objectives: int = 1, pruner=None):
    """The study in `folder`/optuna.journal, or in the recipe's `storage` (an RDB URL, where several
    searches may keep studies: `study_name` tells them apart): created, or loaded to go on.
    `objectives` > 1: a multi-objective study (objective pareto: one per counted task, each maximised);
    `pruner`: lf_wrap.search.pruning's (recipe `prune`), else none."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    _quiet()
    if recipe.storage:
        storage, where = rdb_storage(recipe.storage, study_name), f"storage {redacted(recipe.storage)}"
    else:
        check_journal(folder)
        storage, where = JournalStorage(JournalFileBackend(str(folder / JOURNAL))), str(folder / JOURNAL)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, sampler=make_sampler(recipe, tasks),
                                    directions=["maximize"] * objectives, load_if_exists=True,
                                    pruner=pruner or optuna.pruners.NopPruner())
    except (ValueError, KeyError, TypeError, IndexError) as err:    # JSON lines Optuna cannot replay
        if recipe.storage:
            raise UserError(f"{where}: Optuna cannot read study {study_name} ({type(err).__name__}: {err})") from None
        _damaged(folder / JOURNAL, f"{folder / JOURNAL}: Optuna cannot read it ({type(err).__name__}: {err})")
    if not study.trials:
        for params in reference_params(recipe, tasks):
            study.enqueue_trial(params)
    return study


def reference_params(recipe: SearchRecipe, tasks: list[str]) -> list[dict]:
    """sum (every weight 1) and linear 0.5, where `linear` is searched and the values are in the space."""
    if "linear" not in recipe.methods or recipe.sampler == "grid":
        return []
    out = []
    for value in (1.0, 0.5):
        if recipe.weights.low <= value <= recipe.weights.high and _on_step(value, recipe):
            params = {name: value for t in tasks for name, _, _ in weight_params(t, recipe.blocks, recipe.per_kind)}
            if len(recipe.methods) > 1:
                params["method"] = "linear"
            if len(recipe.spaces) > 1:
                params["space"] = "full" if "full" in recipe.spaces else recipe.spaces[0]
            out.append(params)
    return out


def _on_step(value: float, recipe: SearchRecipe) -> bool:
    step = recipe.weights.step
    return step is None or abs(round((value - recipe.weights.low) / step) * step + recipe.weights.low - value) < 1e-9


def requeue_unfinished(study) -> int:
    """Trials asked but never told (a killed run): failed, and their parameters asked again first."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        _ask_again(study, trial)
    return len(stale)


def _ask_again(study, trial) -> None:
    """Fail a stopped trial and enqueue its parameters, if it had any. A run killed inside `ask`,
    after Optuna made the trial and before the sampler gave it anything (with the grid sampler: no
    grid point), leaves nothing to ask again: an empty enqueued trial makes the grid sampler refuse
    ("All parameters must be specified"), and any sampler asks a new trial the same."""
    from optuna.trial import TrialState

    study.tell(trial.number, state=TrialState.FAIL)
    params = _asked_params(study, trial)
    if params:
        study.enqueue_trial(params, skip_if_exists=False)


def _asked_params(study, trial) -> dict:
    """The parameters to ask again for a trial that was stopped: its own, and with the grid sampler
    the rest of its grid point (a run killed between asking a round and suggesting its parameters
    leaves trials without them, and the grid sampler refuses an enqueued trial that lacks any)."""
    import optuna

    params, grid_id = dict(trial.params), trial.system_attrs.get("grid_id")
    if isinstance(study.sampler, optuna.samplers.GridSampler) and grid_id is not None:
        point = study.sampler._all_grids[grid_id]      # the sampler's own (seeded) order of its grid
        params = {**dict(zip(study.sampler._param_names, point)), **params}
    return params


def requeue_stale(study, alive) -> int:
    """A shared search's version of requeue_unfinished: only the trials of workers no longer alive
    (`alive(worker id)` False; a trial without a worker was asked by a run that has ended) are
    failed and asked again. A trial a live worker is scoring is never touched."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if not alive(t.user_attrs.get("worker"))]
    for trial in stale:
        _ask_again(study, trial)
    return len(stale)


def running(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def completed(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def finished(study) -> list:
    """The trials that count against the budget: complete or pruned (lf_wrap.search.pruning)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def pruned(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))


def suggest(trial, recipe: SearchRecipe, tasks: list[str]) -> Candidate:
    """The trial's candidate: method, one weight per adapter (or per block and kind), density and
    seed where the method has them."""
    method = trial.suggest_categorical("method", recipe.methods) if len(recipe.methods) > 1 else recipe.methods[0]
    weights = []
    for task in tasks:
        values: dict[str | None, list[float]] = {}
        for name, kind, _ in weight_params(task, recipe.blocks, recipe.per_kind):
            if recipe.sampler == "grid":
                value = float(trial.suggest_categorical(name, list(recipe.grid)))
            else:
                value = round(trial.suggest_float(name, recipe.weights.low, recipe.weights.high,
                                                  step=recipe.weights.step), 6)
            values.setdefault(kind, []).append(value)
        weights.append(gather(values))
    weights = tuple(weights)
    info = METHODS[method]
    density = None
    if info.density:
        density = round(trial.suggest_float("density", recipe.density.low, recipe.density.high,
                                            step=recipe.density.step), 6)
    return Candidate(method, weights, density, recipe.seed if info.seeded else None, _space(trial, recipe, method))


def _space(trial, recipe: SearchRecipe, method: str) -> str:
    """The candidate's space, among the recipe's spaces the method runs in: `space` for a method
    that runs in all of them, `space.<method>` for one that runs in some (Optuna keeps one set of
    choices per parameter name); no parameter where there is one choice."""
    allowed = [s for s in recipe.spaces if s in METHODS[method].spaces]
    if len(allowed) == 1:
        return allowed[0]
    name = "space" if allowed == list(recipe.spaces) else f"space.{method}"
    return trial.suggest_categorical(name, allowed)


def unscored(study, ledger, recipe: SearchRecipe, tasks: list[str]) -> list[Candidate]:
    """Completed trials whose score the ledger lacks (scores.jsonl deleted or a line removed by hand),
    rebuilt from the parameters the journal keeps: scored again, so the leaderboard never loses them."""
    import optuna

    lost: dict[str, Candidate] = {}
    for trial in completed(study):
        candidate = suggest(optuna.trial.FixedTrial(trial.params), recipe, tasks)
        key = trial.user_attrs.get("candidate") or candidate.label()
        if ledger.get("search", key) is None:
            lost[key] = candidate
    return list(lost.values())
