"""`lf-wrap eval`, `lf-wrap score`, `lf-wrap compare` and `lf-wrap report`."""

import json
from pathlib import Path

import click

from lf_wrap.scoring.bootstrap import MAX_RESAMPLES, MIN_RESAMPLES, Bootstrap


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
    from lf_wrap.stages import STAGES

    stage = STAGES["eval recipe"]
    click.echo(stage.summary(stage.run(stage.load(recipe, overrides), out, force)))


def _draw_options(command):
    """--resamples and --seed, shared by `score` and `compare`."""
    command = click.option("--seed", type=click.IntRange(min=0), default=Bootstrap.seed, show_default=True,
                           help="Seed of the bootstrap draw (sacrebleu's default).")(command)
    return click.option("--resamples", type=click.IntRange(MIN_RESAMPLES, MAX_RESAMPLES), default=Bootstrap.resamples,
                        show_default=True, help="Bootstrap resamples of the rows for the 95% intervals "
                        f"({MIN_RESAMPLES:,} to {MAX_RESAMPLES:,}).")(command)


def _task(task, metric):
    from lf_wrap.core.errors import UserError
    from lf_wrap.tasks import find_task, is_task_file, resolve_task, with_overrides

    try:
        if is_task_file(task):
            return with_overrides(find_task(task, what="--task"), metric, key="--metric")
        return resolve_task(task, metric, "--metric")
    except ValueError as err:
        raise UserError(str(err)) from None


_TASK_HELP = ("A task file (path/to/task.yaml), or translate, summarize or qa; or the name of a task with no "
              "file, with --metric.")
_METRIC_HELP = ("How it is scored, where not as its task file says (a task with no file needs it), as `metric:` "
                "in the eval recipe: bleu, chrf, rouge, exact_match, squad_v2, or path/to/file.py:function.")
_NO_ANSWER_HELP = ("qa (or --metric squad_v2): the model's answer for an unanswerable question, scored as \"\" "
                   "[default: recorded beside the file by lf-wrap eval, else 'unanswerable'].")


def _interval(low: float, high: float, signed: bool = False) -> str:
    return f"[{low:+.4f}, {high:+.4f}]" if signed else f"[{low:.4f}, {high:.4f}]"


@click.command("score")
@click.argument("predictions", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--task", required=True, help=_TASK_HELP)
@click.option("--metric", default=None, help=_METRIC_HELP)
@click.option("--no-answer-text", default=None, help=_NO_ANSWER_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object keyed by metric name, with <metric>_ci95: [low, high] beside each.")
@_draw_options
def score_command(predictions, task, metric, no_answer_text, as_json, resamples, seed):
    """Score a predictions JSONL (one object a line: `prediction`, `references` list; [] for an
    unanswerable question) with the task's metrics and their 95% bootstrap intervals, offline."""
    from lf_wrap.evaluation.uncertainty import intervals, score_with_rows

    definition = _task(task, metric)
    scored = score_with_rows(predictions, definition, no_answer_text)
    bounds = intervals(definition, scored.row_scores(), Bootstrap(resamples, seed))
    if as_json:
        click.echo(json.dumps({key: value for name, score in scored.metrics.items()
                               for key, value in ((name, score), (f"{name}_ci95", bounds[name]))}))
        return
    for name, value in scored.metrics.items():
        info = definition.family.metric(name)
        click.echo(f"{name:<12} {value:.4f} {_interval(*bounds[name])}   ({info.definition}; "
                   f"higher is better: {info.higher_is_better})")
    click.echo(f"[95% interval]: percentile bootstrap over the {len(scored.records)} rows, {resamples} resamples, "
               f"seed {seed}")


@click.command("compare")
@click.argument("a", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("b", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--task", required=True, help=_TASK_HELP)
@click.option("--metric", default=None, help=_METRIC_HELP)
@click.option("--no-answer-text", default=None, help=_NO_ANSWER_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (metrics keyed by name).")
@_draw_options
def compare_command(a, b, task, metric, no_answer_text, as_json, resamples, seed):
    """Is B better than A on the same rows? Each metric of two predictions files of one task,
    B - A, its 95% interval and the p-value of a paired bootstrap test (the same resampled rows
    for both). The files must hold the same rows (by `row`, else by line) with the same ids and
    references."""
    from lf_wrap.evaluation.uncertainty import compare_files

    result = compare_files(a, b, _task(task, metric), no_answer_text, Bootstrap(resamples, seed))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"A: {a}\nB: {b}\n{result['rows']} rows paired, {resamples} resamples, seed {seed}\n")
    click.echo(f"{'metric':<12} {'A':>7} {'B':>7} {'B - A':>8}  {'95% interval of B - A':<22} {'p-value':>7}")
    for name, test in result["metrics"].items():
        click.echo(f"{name:<12} {test['a']:7.4f} {test['b']:7.4f} {test['difference']:+8.4f}  "
                   f"{_interval(*test['ci95'], signed=True):<22} {test['p_value']:7.4f}"
                   + ("" if test["significant"] else "  n.s."))
    if not all(t["significant"] for t in result["metrics"].values()):
        click.echo(f"\nn.s.: p is not below {1 - result['confidence']:.2g}: this difference may be resampling noise")


@click.command("report")
@click.argument("results", type=click.Path(path_type=Path, file_okay=False), default=Path("eval/results/eval"))
def report_command(results):
    """Rewrite the table (Markdown, CSV, JSON), chart.png and loss_curves.png of a results folder."""
    from lf_wrap.evaluation.report import write_report

    written = write_report(results)
    click.echo((results / "table.md").read_text(encoding="utf-8"))
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))
