"""`lf-wrap validate FILE`: one check for every kind of file lf-wrap reads, like torchtune's
`tune validate`. It tells the kind from the file's keys and runs exactly the checks the kind's
command runs before any work (no training, no engine, no folder written):

    training recipe   lf-wrap train          plan_training: recipe, --smoke, LLaMA-Factory's own arguments, data, model
    eval recipe       lf-wrap eval           plan_eval: models, adapters' base, tasks and datasets, --out, serving
    merge recipe      lf-wrap merge recipe   check_inputs: adapters, base, shapes, method, hyper-parameters
    search recipe     lf-wrap merge search   plan_search: the eval recipe, adapters, tasks, rows, methods' ranks
    task file         lf-wrap data prepare   read_task_file: keys, slots, metric, name"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from lf_wrap.core.errors import UserError

KINDS = ("training recipe", "eval recipe", "merge recipe", "search recipe", "task file")


@dataclass
class Checked:
    kind: str
    summary: str          # one line: what was resolved
    resolved: dict        # what --show prints


def kind_of(path: Path) -> str:
    """The kind of a recipe or task file, from its top-level keys."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot be read as YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe or task file is a YAML mapping")
    keys = set(data)
    if {"prompt", "response"} <= keys:
        return "task file"
    if "eval" in keys and "adapters" in keys:
        return "search recipe"
    if "adapters" in keys:
        return "merge recipe"
    if "models" in keys and "lf_wrap" not in keys and "stage" not in keys:
        return "eval recipe"
    if "lf_wrap" in keys or "stage" in keys or "finetuning_type" in keys:
        return "training recipe"
    raise UserError(f"{path}: not a recipe lf-wrap knows (keys: {', '.join(sorted(map(str, keys)))}); a training "
                    "recipe has an lf_wrap section, an eval recipe models, a merge recipe adapters, a search recipe "
                    "eval and adapters, a task file prompt and response")


def check(path: Path, sets: tuple[str, ...] = (), smoke: bool = False) -> Checked:
    kind = kind_of(path)
    if smoke and kind != "training recipe":
        raise UserError(f"--smoke: only a training recipe has a smoke set; {path} is a {kind}")
    if kind == "training recipe":
        from lf_wrap.train.run import plan_training

        plan = plan_training(path, sets, smoke)
        names = ", ".join(f"{n} ({p})" if p else n for n, p in plan.datasets.items())
        if len(plan.train_datasets) > 1:
            names += (f"; {len(plan.train_datasets)} training sets mixed by LLaMA-Factory "
                      f"(mix_strategy {plan.args.get('mix_strategy', 'concat')}; tasks: {', '.join(plan.tasks)})")
        return Checked(kind, f"{len(plan.args)} LLaMA-Factory keys checked against llamafactory "
                             f"{plan.versions.get('llamafactory')}; data: {names}; model: {plan.model}",
                       {**plan.train_args(Path("runs")), "output_dir": "<run_dir>/adapter"})
    if kind == "eval recipe":
        from lf_wrap.evaluation.recipe import load_eval_recipe
        from lf_wrap.evaluation.run import default_out, plan_eval

        recipe, _ = load_eval_recipe(path, sets)
        recipe, models, data, base = plan_eval(recipe, default_out(path))
        return Checked(kind, f"{len(models)} models ({', '.join(m.name for m in models)}) on {base}; tasks: "
                             + ", ".join(f"{t} ({d.dataset}, {d.definition.metric})" for t, d in data.items()),
                       recipe.model_dump(mode="json"))
    if kind == "merge recipe":
        from lf_wrap.merge.checks import check_inputs
        from lf_wrap.merge.config import load_recipe

        config, _ = load_recipe(path, tuple(sets))
        plan = check_inputs(config, force=True)
        return Checked(kind, f"{len(plan.adapters)} adapters, {len(plan.modules)} modules, base {plan.base_dir}, "
                             f"method {config.method}, as {config.output_form} -> {plan.out}",
                       config.model_dump(mode="json", by_alias=True))
    if kind == "search recipe":
        from lf_wrap.search.recipe import load_search_recipe
        from lf_wrap.search.run import plan_search

        recipe, _ = load_search_recipe(path, tuple(sets))
        return Checked(kind, plan_search(recipe).describe().removeprefix("OK: "),
                       recipe.model_dump(mode="json", by_alias=True))
    from lf_wrap.tasks import read_task_file

    task = read_task_file(path, tuple(sets))
    return Checked(kind, f"task '{task.name}', metric {task.metric}, max_new_tokens {task.max_new_tokens}",
                   task.spec.model_dump(mode="json"))
