"""The stages a recipe drives, one contract and one registry (STAGES), which `lf-wrap validate`
and the commands (`train`, `eval`, `merge recipe`, `merge search`) both read:

    loaded = stage.load(path, sets)            the recipe read, `--set` applied, validated
    stage.check(loaded) -> Checked             every check the stage runs before any work
    stage.run(loaded, out, force) -> result    the work (out: None for the recipe's own)
    stage.summary(result) -> str               what the command prints

A kind is told from a file's top-level keys (`recognise`), in the registry's order. The task
file is a kind with checks and no run of its own (`lf-wrap data prepare` takes a task and a
source). Adding a recipe kind is one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Loaded:
    """A recipe as a stage reads it: the validated model, its verbatim text (copied into the
    output folder), where it came from (None: built from command-line options) and the `--set`s."""

    kind: str
    recipe: Any
    text: str
    path: Path | None = None
    sets: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)     # how it was read (training: smoke)


@dataclass
class Checked:
    kind: str
    summary: str          # one line: what was resolved
    resolved: dict        # what `lf-wrap validate --show` prints


@dataclass(frozen=True)
class Stage:
    command: str
    told_by: str                                   # in words: the keys a file of this kind has
    recognise: Callable[[set], bool]
    load: Callable[..., Loaded]                    # (path, sets, **options)
    check: Callable[[Loaded], Checked]
    run: Callable[..., Any] | None = None          # (loaded, out, force, **options) -> result
    summary: Callable[[Any], str] = str


# ---------------------------------------------------------------- training


def _load_training(path: Path, sets=(), smoke: bool = False) -> Loaded:
    from lf_wrap.train.recipe import load_recipe, parse_overrides

    recipe = load_recipe(Path(path), parse_overrides(tuple(sets)))
    return Loaded("training recipe", recipe, Path(path).read_text(encoding="utf-8"), Path(path), tuple(sets),
                  {"smoke": smoke})


def _check_training(loaded: Loaded) -> Checked:
    from lf_wrap.train.run import plan_training

    plan = plan_training(loaded.path, loaded.sets, loaded.options.get("smoke", False))
    names = ", ".join(f"{n} ({p})" if p else n for n, p in plan.datasets.items())
    if len(plan.train_datasets) > 1:
        names += (f"; {len(plan.train_datasets)} training sets mixed by LLaMA-Factory "
                  f"(mix_strategy {plan.args.get('mix_strategy', 'concat')}; tasks: {', '.join(plan.tasks)})")
    return Checked("training recipe", f"{len(plan.args)} LLaMA-Factory keys checked against llamafactory "
                                      f"{plan.versions.get('llamafactory')}; data: {names}; model: {plan.model}",
                   {**plan.train_args(Path("runs")), "output_dir": "<run_dir>/adapter"})


def _run_training(loaded: Loaded, out: Path | None = None, force: bool = False, nproc: int | None = None,
                  command: list[str] | None = None):
    from lf_wrap.train.run import train

    return train(loaded.path, sets=loaded.sets, run_dir=out, nproc=nproc, smoke=loaded.options.get("smoke", False),
                 force=force, command=command)


# ---------------------------------------------------------------- eval


def _load_eval(path: Path, sets=()) -> Loaded:
    from lf_wrap.evaluation.recipe import load_eval_recipe

    recipe, text = load_eval_recipe(Path(path), tuple(sets))
    return Loaded("eval recipe", recipe, text, Path(path), tuple(sets))


def _check_eval(loaded: Loaded) -> Checked:
    from lf_wrap.evaluation.run import default_out, plan_eval

    recipe, models, data, base = plan_eval(loaded.recipe, default_out(loaded.path))
    return Checked("eval recipe", f"{len(models)} models ({', '.join(m.name for m in models)}) on {base}; tasks: "
                                  + ", ".join(f"{t} ({d.dataset}, {d.definition.metric})" for t, d in data.items()),
                   recipe.model_dump(mode="json"))


def _run_eval(loaded: Loaded, out: Path | None = None, force: bool = False):
    from lf_wrap.evaluation.run import evaluate

    return evaluate(loaded.recipe, loaded.path, loaded.text, out=out, force=force, overrides=loaded.sets)


def _eval_summary(result) -> str:
    table = (result.out / "table.md").read_text(encoding="utf-8")
    return f"{table}\n{result.generated} predictions generated, {result.reused} reused; results in {result.out}/"


# ---------------------------------------------------------------- merge


def _load_merge(path: Path, sets=()) -> Loaded:
    from lf_wrap.merge.config import load_recipe

    config, text = load_recipe(Path(path), tuple(sets))
    return Loaded("merge recipe", config, text, Path(path), tuple(sets))


def _check_merge(loaded: Loaded, force: bool = True) -> Checked:
    from lf_wrap.merge.checks import check_inputs

    config = loaded.recipe
    plan = check_inputs(config, force=force)
    return Checked("merge recipe", f"{len(plan.adapters)} adapters, {len(plan.modules)} modules, base "
                                   f"{plan.base_dir}, method {config.method}, space {config.space}, "
                                   f"as {config.output_form} -> {plan.out}",
                   config.model_dump(mode="json", by_alias=True))


def _run_merge(loaded: Loaded, out: Path | None = None, force: bool = False):
    from lf_wrap.merge.run import merge

    config = loaded.recipe if out is None else loaded.recipe.model_copy(update={"out": str(out)})
    return merge(config, force=force, recipe_text=loaded.text if loaded.path is not None else None)


def _merge_summary(result) -> str:
    from lf_wrap.merge.run import summary

    return summary(result)


# ---------------------------------------------------------------- search


def _load_search(path: Path, sets=()) -> Loaded:
    from lf_wrap.search.recipe import load_search_recipe

    recipe, text = load_search_recipe(Path(path), tuple(sets))
    return Loaded("search recipe", recipe, text, Path(path), tuple(sets))


def _check_search(loaded: Loaded) -> Checked:
    from lf_wrap.search.run import plan_search

    return Checked("search recipe", plan_search(loaded.recipe).describe().removeprefix("OK: "),
                   loaded.recipe.model_dump(mode="json", by_alias=True))


def _run_search(loaded: Loaded, out: Path | None = None, force: bool = False):
    from lf_wrap.search.run import search

    recipe = loaded.recipe if out is None else loaded.recipe.model_copy(update={"out": Path(out)})
    if recipe.seeds:                   # once per seed, into one folder (lf_wrap.search.seeds)
        from lf_wrap.search.seeds import search_seeds

        return search_seeds(recipe, loaded.text, force=force, recipe_path=loaded.path)
    return search(recipe, loaded.text, force=force, recipe_path=loaded.path)


def _search_summary(result) -> str:
    from lf_wrap.search import seeds
    from lf_wrap.search.run import summary

    return seeds.summary(result) if isinstance(result, seeds.SeedsResult) else summary(result)


# ---------------------------------------------------------------- task file


def _load_task(path: Path, sets=()) -> Loaded:
    from lf_wrap.tasks import read_task_file

    return Loaded("task file", read_task_file(Path(path), tuple(sets)), Path(path).read_text(encoding="utf-8"),
                  Path(path), tuple(sets))


def _check_task(loaded: Loaded) -> Checked:
    task = loaded.recipe
    return Checked("task file", f"task '{task.name}', metric {task.metric}, max_new_tokens {task.max_new_tokens}",
                   task.spec.model_dump(mode="json"))


# Told apart in this order: a search recipe has adapters too, an eval recipe's `models` may sit
# in a training recipe's LLaMA-Factory keys.
STAGES: dict[str, Stage] = {
    "task file": Stage("lf-wrap data prepare", "prompt and response", lambda k: {"prompt", "response"} <= k,
                       _load_task, _check_task),
    "search recipe": Stage("lf-wrap merge search", "eval and adapters", lambda k: {"eval", "adapters"} <= k,
                           _load_search, _check_search, _run_search, _search_summary),
    "merge recipe": Stage("lf-wrap merge recipe", "adapters", lambda k: "adapters" in k,
                          _load_merge, _check_merge, _run_merge, _merge_summary),
    "eval recipe": Stage("lf-wrap eval", "models, and no lf_wrap or stage",
                         lambda k: "models" in k and not {"lf_wrap", "stage"} & k,
                         _load_eval, _check_eval, _run_eval, _eval_summary),
    "training recipe": Stage("lf-wrap train", "an lf_wrap section, stage or finetuning_type",
                             lambda k: bool({"lf_wrap", "stage", "finetuning_type"} & k),
                             _load_training, _check_training, _run_training),
}
