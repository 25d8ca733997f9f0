"""`lf-wrap eval`, `lf-wrap score` and `lf-wrap report`."""

import json
from pathlib import Path

import click

from lf_wrap.evaluation.metrics import FAMILIES


@click.command("eval")
@click.argument("recipe", type=click.Path(path_type=Path), default=Path("recipes/eval.yaml"))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Results folder [default: eval/results/<recipe name>].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set engine.dtype=float32 --set tasks.qa.max_new_tokens=32.")
@click.option("--force", is_flag=True, help="Regenerate predictions already written in the results folder.")
def eval_command(recipe, out, overrides, force):
    """Score every model of RECIPE on every task with vLLM, then write the table.

    Base model and all adapters share one engine; each full model folder gets its own. Rows
    already in the results folder are not generated again (a killed run resumes)."""
    from lf_wrap.evaluation.recipe import load_eval_recipe
    from lf_wrap.evaluation.run import evaluate

    parsed, text = load_eval_recipe(recipe, overrides)
    result = evaluate(parsed, recipe, text, out=out, force=force, overrides=overrides)
    click.echo((result.out / "table.md").read_text(encoding="utf-8"))
    click.echo(f"{result.generated} predictions generated, {result.reused} reused; results in {result.out}/")


@click.command("score")
@click.argument("predictions", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--task", required=True,
              help="translate, summarize or qa; or the name of a task of your own, with --metric.")
@click.option("--metric", type=click.Choice(list(FAMILIES)), default=None,
              help="A task of your own: how it is scored (as `metric:` in the eval recipe).")
@click.option("--no-answer-text", default=None,
              help="qa (or --metric squad_v2): the model's answer for an unanswerable question, scored as \"\" "
                   "[default: recorded beside the file by lf-wrap eval, else 'unanswerable'].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object keyed by metric name.")
def score_command(predictions, task, metric, no_answer_text, as_json):
    """Score a predictions JSONL (one object a line: `prediction`, `references` list; [] for an
    unanswerable question) with the task's metrics, offline."""
    from lf_wrap.core.errors import UserError
    from lf_wrap.evaluation.metrics import METRICS
    from lf_wrap.evaluation.predictions import score_file
    from lf_wrap.tasks import resolve_task

    try:
        definition = resolve_task(task, metric, "--metric")
    except ValueError as err:
        raise UserError(str(err)) from None
    scores = score_file(predictions, definition, no_answer_text)
    if as_json:
        click.echo(json.dumps(scores))
        return
    for name, value in scores.items():
        info = METRICS[name]
        click.echo(f"{name:<12} {value:.4f}   ({FAMILIES[definition.metric].describe(name)}; "
                   f"higher is better: {info.higher_is_better})")


@click.command("report")
@click.argument("results", type=click.Path(path_type=Path, file_okay=False), default=Path("eval/results/eval"))
def report_command(results):
    """Rewrite the table (Markdown, CSV, JSON), chart.png and loss_curves.png of a results folder."""
    from lf_wrap.evaluation.report import write_report

    written = write_report(results)
    click.echo((results / "table.md").read_text(encoding="utf-8"))
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))
