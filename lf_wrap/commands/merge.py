"""`lf-wrap merge adapters` and `lf-wrap merge recipe`."""

from pathlib import Path

import click

from lf_wrap.core.errors import UserError
from lf_wrap.merge.methods import METHODS


def _weights(ctx, param, value):
    if value is None:
        return None
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise UserError(f"--weights {value!r}: expected numbers separated by commas, e.g. 0.3,0.3,0.4") from None


@click.group()
def merge():
    """Merge LoRA adapters into one model folder or into one adapter."""


@merge.command("adapters")
@click.argument("adapters", nargs=-1, required=True)
@click.option("--base", default=None,
              help="Base model folder or Hub id (default: the adapters' base_model_name_or_path).")
@click.option("--method", type=click.Choice(list(METHODS)), default="sum", show_default=True,
              help="; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()))
@click.option("--weights", callback=_weights, help="One weight per adapter, comma-separated (not for sum).")
@click.option("--density", type=float, default=None, help="ties/dare_*: fraction of each delta kept, in (0, 1].")
@click.option("--seed", type=int, default=None, help="dare_*: seed of the random drop (default 0).")
@click.option("--rank", type=int, default=None,
              help="ties/dare_* --as adapter: SVD rank (default: sum of the adapters' ranks).")
@click.option("--as", "output_form", type=click.Choice(["model", "adapter"]), default="model", show_default=True,
              help="Write a full model folder, or one LoRA adapter (vLLM, PEFT, LLaMA-Factory).")
@click.option("--template", default="qwen", show_default=True,
              help="LLaMA-Factory template for `sum --as model` (the export writes its chat template).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def adapters_command(adapters, base, method, weights, density, seed, rank, output_form, template, out, force):
    """Merge the LoRA ADAPTERS (folders) under one METHOD.

    sum --as model runs `llamafactory-cli export` with the adapters, as the study did; the other
    methods work on the full deltas dW = scaling * B @ A, one module at a time. Writes OUT with
    merge_manifest.json (inputs and their sha256, settings, errors, timings) and merge_config.yaml."""
    from lf_wrap.merge.run import merge as run_merge, summary
    from lf_wrap.merge.config import parse_config

    config = parse_config({"adapters": list(adapters), "base": base, "method": method, "weights": weights,
                           "density": density, "seed": seed, "rank": rank, "as": output_form,
                           "out": str(out), "template": template}, source="lf-wrap merge adapters")
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
