"""`lf-wrap train`."""

import sys
from pathlib import Path

import click

from lf_wrap.stages import STAGES

recipe_argument = click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe key (repeatable). A bare key (or train.KEY) is a LLaMA-Factory key, "
         "lf_wrap.KEY our own section; values are YAML scalars. Wins over the recipe and --smoke.")
smoke_option = click.option(
    "--smoke", is_flag=True,
    help="Apply the recipe's lf_wrap.smoke set: a few CPU steps (no bf16, small cutoff_len), for a tiny model.")


@click.command("train")
@recipe_argument
@set_option
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Run directory (default: runs/<recipe>-<YYYYmmdd-HHMMSS>).")
@click.option("--nproc", type=int, default=None,
              help="Processes (GPUs) on this node: LLaMA-Factory's torchrun launcher with FORCE_TORCHRUN=1, "
                   "NPROC_PER_NODE=N. NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT pass through.")
@smoke_option
@click.option("--force", is_flag=True,
              help="Train again from step 1 in a run directory that holds a run (finished, interrupted or "
                   "failed, any arguments): removes its adapter/ and checkpoints (kept when --set "
                   "resume_from_checkpoint names one).")
def train_command(recipe, sets, run_dir, nproc, smoke, force):
    """Check RECIPE, then run `llamafactory-cli train` on it in the training environment.

    Writes RUN_DIR/recipe.yaml (verbatim), train_args.yaml (what llamafactory-cli gets),
    train.log, adapter/ (the LoRA adapter) and manifest.json; on success points
    runs/<recipe>-latest at RUN_DIR.

    The same command again into the same RUN_DIR skips a finished run and continues an
    interrupted or failed one from its last checkpoint; other arguments are refused (naming
    them) unless --force."""
    stage = STAGES["training recipe"]
    stage.run(stage.load(recipe, sets, smoke=smoke), run_dir, force, nproc=nproc, command=["lf-wrap", *sys.argv[1:]])
