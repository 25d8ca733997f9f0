"""`lf-wrap merge adapters` and `lf-wrap merge recipe`."""

from pathlib import Path

import click

from lf_wrap.commands.options import given, recipe_options
from lf_wrap.core.errors import UserError
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS


def _param_help() -> str:
    parts = []
    for name, method in METHODS.items():
        if method.params:
            keys = ", ".join(f"{key} (default {'1/T' if p.per_task else p.default}, {p.range_text(None)})"
                             if not p.choices else f"{key} ({'|'.join(p.choices)}, default {p.default})"
                             for key, p in method.params.items())
            parts.append(f"{name}: {keys}")
    return "Hyper-parameter of the method, repeatable: " + "; ".join(parts) + " (docs/merge-methods.md)."


@click.group()
def merge():
    """Merge LoRA adapters into one model folder or into one adapter."""


@merge.command("adapters")
@click.argument("adapters", nargs=-1, required=True)
@recipe_options(MergeConfig, skip=("adapters",), choices={"method": list(METHODS)},
                helps={"method": "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()),
                       "params": _param_help()})
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def adapters_command(adapters, force, **options):
    """Merge the LoRA ADAPTERS (folders) under one METHOD.

    sum --as model runs `llamafactory-cli export` with the adapters, as the study did; the other
    methods work on the full deltas dW = scaling * B @ A, one module at a time. Writes OUT with
    merge_manifest.json (inputs and their sha256, settings, errors, timings) and merge_config.yaml.
    Every option is a key of a merge recipe (lf-wrap merge recipe), with the same meaning."""
    from lf_wrap.merge.run import merge as run_merge, summary
    from lf_wrap.merge.config import parse_config

    config = parse_config({"adapters": list(adapters), **given(MergeConfig, options)}, source="lf-wrap merge adapters")
    click.echo(summary(run_merge(config, force=force)))


@merge.command("recipe")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set method=linear --set weights=[0.3,0.3,0.3].")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--check", is_flag=True, help="Only run the checks; write nothing.")
def recipe_command(recipe, overrides, force, check):
    """Run the merge described in a RECIPE YAML (recipes/merge.yaml: the study's 3-in-1).

    The recipe is copied verbatim into the output folder, beside the resolved merge_config.yaml."""
    from lf_wrap.merge.run import merge as run_merge, summary
    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import load_recipe

    config, text = load_recipe(recipe, tuple(overrides))
    if check:
        plan = check_inputs(config, force)
        click.echo(f"{recipe}: OK: {len(plan.adapters)} adapters, {len(plan.modules)} modules, base {plan.base_dir}, "
                   f"method {config.method}, as {config.output_form} -> {plan.out}")
        return
    click.echo(summary(run_merge(config, force=force, recipe_text=text)))


def _names(ctx, param, value):
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


@merge.command("search")
@click.argument("inputs", nargs=-1, required=True, metavar="RECIPE | ADAPTER...")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Recipe form: override a key, e.g. --set budget=64 --set rows.search=200.")
@click.option("--eval", "eval_recipe", type=click.Path(path_type=Path),
              help="Direct form: the eval recipe (base, template, datasets, engine).")
@click.option("--tasks", callback=_names,
              help="Direct form: each adapter's task, in order (default: its training run's).")
@click.option("--methods", callback=_names, help="Direct form: merge methods to search, e.g. linear,ties,dare_ties.")
@click.option("--budget", type=int, help="Direct form: candidates to score (default 32).")
@click.option("--sampler", type=click.Choice(["tpe", "cmaes", "random", "grid"]), help="Direct form: Optuna sampler.")
@click.option("--search-rows", type=int, help="Direct form: rows per task to search on (default 100).")
@click.option("--folds", type=int, help="Direct form: split the search rows into this many folds; rank by the worst.")
@click.option("--seed", type=int, help="Direct form: seed of the sampler and of the row draw.")
@click.option("--objective", type=click.Choice(["worst", "mean", "pareto"]),
              help="Direct form: worst task (default), mean, or pareto (one objective per task).")
@click.option("--as", "output_form", type=click.Choice(["adapter", "model"]),
              help="Direct form: how the best is written.")
@click.option("--out", type=click.Path(path_type=Path), help="Direct form: the search folder (default runs/search).")
@click.option("--workers", type=click.Choice(["single", "shared"]),
              help="Direct form: shared makes this run one worker of a search several runs share "
                   "(docs/search-workers.md; recipe form: --set workers=shared).")
@click.option("--storage", help="Direct form: an RDB URL for the study (postgresql://user@host/db; default: "
                                "the folder's optuna.journal).")
@click.option("--force", is_flag=True, help="Start over in a search folder that holds another search.")
@click.option("--check", is_flag=True, help="Only read and check every input (adapters, rows); start nothing.")
def search_command(inputs, overrides, eval_recipe, tasks, methods, budget, sampler, search_rows, folds, seed,
                   objective, output_form, out, workers, storage, force, check):
    """Search merges of task adapters for the one that keeps every specialist's gain.

    \b
    lf-wrap merge search recipes/search.yaml [--set key=value ...]
    lf-wrap merge search A1 A2 A3 --eval recipes/eval.yaml --tasks translate,summarize,qa \\
        --methods linear,ties --budget 32 --out runs/search

    Every candidate is scored in one running vLLM engine (its weights patched in place) on search
    rows; the best, the study's sum merge and linear 0.5 are then scored on other rows (the report rows).
    Killed, the same command goes on where it stopped. With workers: shared, the same command run
    several times (on one machine, or on nodes sharing the folder) shares the search. The summary
    opens with the verdict: confirmed (the best held on the report rows and beats the sum merge there
    beyond resampling noise: written to OUT/best), not_confirmed or no_signal (no model in best/)."""
    import yaml

    from lf_wrap.search.recipe import direct_recipe, load_search_recipe
    from lf_wrap.search.run import search, summary

    direct = {"eval": eval_recipe, "tasks": tasks, "methods": methods, "budget": budget, "sampler": sampler,
              "search_rows": search_rows, "folds": folds, "seed": seed, "objective": objective, "as": output_form,
              "out": out, "workers": workers, "storage": storage}
    # One input that is a file (adapters are folders) is a recipe, whatever its name: SEARCH.YAML, search.yml.txt.
    first = Path(inputs[0])
    recipe_form = len(inputs) == 1 and (first.suffix.lower() in (".yaml", ".yml") or first.is_file())
    if recipe_form:
        given = [f"--{k.replace('_', '-')}" for k, v in direct.items() if v is not None]
        if given:
            raise UserError(f"{', '.join(given)}: options of the direct form; with a recipe use --set "
                            "(e.g. --set budget=64)")
        recipe, text = load_search_recipe(Path(inputs[0]), tuple(overrides))
    else:
        if overrides:
            raise UserError("--set is for the recipe form (lf-wrap merge search RECIPE.yaml); give options here")
        if eval_recipe is None:
            raise UserError("--eval: the direct form needs an eval recipe (base, template, datasets, engine), "
                            "e.g. --eval recipes/eval.yaml")
        if tasks is not None and len(tasks) != len(inputs):
            raise UserError(f"--tasks: {len(tasks)} tasks for {len(inputs)} adapters; give one per adapter, in order")
        data = {"eval": str(eval_recipe),
                "adapters": [{"path": p, **({"task": tasks[i]} if tasks else {})} for i, p in enumerate(inputs)]}
        data.update({k: v for k, v in (("methods", methods), ("budget", budget), ("sampler", sampler), ("seed", seed),
                                       ("objective", objective), ("as", output_form), ("workers", workers),
                                       ("storage", storage)) if v is not None})
        if search_rows is not None or seed is not None or folds is not None:
            data["rows"] = {k: v for k, v in (("search", search_rows), ("folds", folds), ("seed", seed))
                            if v is not None}
        if out is not None:
            data["out"] = str(out)
        recipe = direct_recipe(data)
        text = "# lf-wrap merge search, direct form, as resolved\n" + yaml.safe_dump(
            recipe.model_dump(mode="json", by_alias=True), sort_keys=False)
    if check:
        from lf_wrap.search.run import plan_search

        click.echo(plan_search(recipe).describe())
        return
    if recipe.seeds:                   # once per seed, one folder (lf_wrap.search.seeds)
        from lf_wrap.search import seeds

        click.echo(seeds.summary(seeds.search_seeds(recipe, text, force=force,
                                                    recipe_path=Path(inputs[0]) if recipe_form else None)))
        return
    click.echo(summary(search(recipe, text, force=force, recipe_path=Path(inputs[0]) if recipe_form else None)))
