"""`lf-wrap init`: scaffold a study of your own tasks."""

from pathlib import Path

import click

from lf_wrap.core.errors import UserError


@click.command("init")
@click.argument("study", type=click.Path(path_type=Path))
@click.option("--task", "tasks", multiple=True, required=True,
              help="A task of the study: a task file (path/to/task.yaml, docs/tasks.md) or a shipped task's name. "
                   "Repeat for each task.")
@click.option("--model", required=True, help="The base model (Hub id or local folder) every adapter is trained on.")
@click.option("--template", default="qwen", show_default=True, help="LLaMA-Factory chat template of the model.")
def init_command(study, tasks, model, template):
    """Write a study for TASKs into the folder STUDY: one training recipe per task (the study's
    hyper-parameters as the starting point), a merge, an eval and, for several tasks, a joint
    training recipe (every task's set in one adapter) and a merge search recipe.

    The recipes are yours to edit; each opens with the command that runs it. Their paths are
    relative to STUDY: run every command from there. Task files are named by absolute path, not
    copied. Nothing is written if any of the files exists."""
    from lf_wrap.tasks.scaffold import scaffold, write

    plan = scaffold(study, list(tasks), model, template)
    try:
        written = write(plan)
    except OSError as err:     # a read-only place, a file where the study needs a folder (<study>/train)
        raise _not_writable(plan, err) from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"\nNext, from {study}/: prepare each task's sets (the commands at the top of each training "
               "recipe), then:")
    for step in plan.steps():
        click.echo(f"  {step}")


def _not_writable(plan, err: OSError) -> UserError:
    """One line for a study folder that cannot be written, naming the path and what was written
    before the failure (write() refuses when any file exists, so a file there now is this run's)."""
    where = err.filename or plan.folder
    why = ("a file is where the study needs a folder" if isinstance(err, (FileExistsError, NotADirectoryError))
           else err.strerror)
    done = [str(plan.folder / p) for p in plan.files if (plan.folder / p).is_file()]
    return UserError(f"init: cannot write the study into {plan.folder}: {where}: {why}; "
                     + (f"written before that: {', '.join(done)}" if done else "nothing was written"))
