"""`lf-wrap validate FILE`: one check for every kind of file lf-wrap reads, like torchtune's
`tune validate`. It tells the kind from the file's keys and runs exactly the checks the kind's
command runs before any work (no training, no engine, no folder written). The kinds are one
registry (KINDS), which `lf-wrap validate --help` lists too:

    training recipe   lf-wrap train          plan_training: recipe, --smoke, LLaMA-Factory's own arguments, data, model
    eval recipe       lf-wrap eval           plan_eval: models, adapters' base, tasks and datasets, --out, serving
    merge recipe      lf-wrap merge recipe   check_inputs: adapters, base, shapes, method, hyper-parameters
    search recipe     lf-wrap merge search   plan_search: the eval recipe, adapters, tasks, rows, methods' ranks
    task file         lf-wrap data prepare   read_task_file: keys, slots, metric, name"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lf_wrap.core.errors import UserError


@dataclass
class Checked:
    kind: str
    summary: str          # one line: what was resolved
    resolved: dict        # what --show prints


def _training(path: Path, sets: tuple[str, ...], smoke: bool) -> Checked:
    from lf_wrap.train.run import plan_training

    plan = plan_training(path, sets, smoke)
    names = ", ".join(f"{n} ({p})" if p else n for n, p in plan.datasets.items())
    return Checked("training recipe", f"{len(plan.args)} LLaMA-Factory keys checked against llamafactory "
                                      f"{plan.versions.get('llamafactory')}; data: {names}; model: {plan.model}",
                   {**plan.train_args(Path("runs")), "output_dir": "<run_dir>/adapter"})


def _eval(path: Path, sets: tuple[str, ...], smoke: bool) -> Checked:
    from lf_wrap.evaluation.recipe import load_eval_recipe
    from lf_wrap.evaluation.run import default_out, plan_eval

    recipe, _ = load_eval_recipe(path, sets)
    recipe, models, data, base = plan_eval(recipe, default_out(path))
    return Checked("eval recipe", f"{len(models)} models ({', '.join(m.name for m in models)}) on {base}; tasks: "
                                  + ", ".join(f"{t} ({d.dataset}, {d.definition.metric})" for t, d in data.items()),
                   recipe.model_dump(mode="json"))


def _merge(path: Path, sets: tuple[str, ...], smoke: bool) -> Checked:
    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import load_recipe

    config, _ = load_recipe(path, tuple(sets))
    plan = check_inputs(config, force=True)
    return Checked("merge recipe", f"{len(plan.adapters)} adapters, {len(plan.modules)} modules, base "
                                   f"{plan.base_dir}, method {config.method}, as {config.output_form} -> {plan.out}",
                   config.model_dump(mode="json", by_alias=True))


def _search(path: Path, sets: tuple[str, ...], smoke: bool) -> Checked:
    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.run import plan_search

    recipe, _ = load_search_recipe(path, tuple(sets))
    return Checked("search recipe", plan_search(recipe).describe().removeprefix("OK: "),
                   recipe.model_dump(mode="json", by_alias=True))


def _task(path: Path, sets: tuple[str, ...], smoke: bool) -> Checked:
    from lf_wrap.tasks import read_task_file

    task = read_task_file(path, tuple(sets))
    return Checked("task file", f"task '{task.name}', metric {task.metric}, max_new_tokens {task.max_new_tokens}",
                   task.spec.model_dump(mode="json"))


@dataclass(frozen=True)
class Kind:
    """One kind of file lf-wrap reads: the command that reads it, the keys it is told by, and the
    checks that command runs before any work."""

    command: str
    told_by: str                                     # in words, for the error naming no kind
    recognise: Callable[[set], bool]
    check: Callable[[Path, tuple, bool], Checked]


# The registry `lf-wrap validate` reads (and its --help): told apart in this order.
KINDS: dict[str, Kind] = {
    "task file": Kind("lf-wrap data prepare", "prompt and response", lambda k: {"prompt", "response"} <= k, _task),
    "search recipe": Kind("lf-wrap merge search", "eval and adapters", lambda k: {"eval", "adapters"} <= k, _search),
    "merge recipe": Kind("lf-wrap merge recipe", "adapters", lambda k: "adapters" in k, _merge),
    "eval recipe": Kind("lf-wrap eval", "models, and no lf_wrap or stage",
                        lambda k: "models" in k and not {"lf_wrap", "stage"} & k, _eval),
    "training recipe": Kind("lf-wrap train", "an lf_wrap section, stage or finetuning_type",
                            lambda k: bool({"lf_wrap", "stage", "finetuning_type"} & k), _training),
}


def kind_of(path: Path) -> str:
    """The kind of a recipe or task file, from its top-level keys."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot be read as YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe or task file is a YAML mapping")
    keys = set(data)
    for name, kind in KINDS.items():
        if kind.recognise(keys):
            return name
    told = "; ".join(f"{'an' if name[0] in 'aeiou' else 'a'} {name} has {kind.told_by}" for name, kind in KINDS.items())
    raise UserError(f"{path}: not a recipe lf-wrap knows (keys: {', '.join(sorted(map(str, keys)))}); {told}")


def check(path: Path, sets: tuple[str, ...] = (), smoke: bool = False) -> Checked:
    kind = kind_of(path)
    if smoke and kind != "training recipe":
        raise UserError(f"--smoke: only a training recipe has a smoke set; {path} is a {kind}")
    return KINDS[kind].check(path, tuple(sets), smoke)
