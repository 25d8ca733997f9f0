"""`lf-wrap data prepare`, `lf-wrap data add` and `lf-wrap data samples`."""

from pathlib import Path

import click

from lf_wrap.data.prepare import PrepareOptions, prepare, summary


@click.group()
def data():
    """Prepare instruction sets and register them in dataset_info.json."""


@data.command("prepare")
@click.argument("task")
@click.option("--source", default=None,
              help="Hub id (wmt/wmt19, abisee/cnn_dailymail, rajpurkar/squad_v2) or a local "
                   ".json/.jsonl/.parquet/.arrow file, a folder of them, or a save_to_disk folder "
                   "[default: the task file's source.hub_id].")
@click.option("--config", default=None,
              help="Hub config [default for Hub ids: the task file's source.config].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the task file, e.g. --set max_new_tokens=32.")
@click.option("--split", required=True,
              help="Split to read from a Hub id; for a local file it only names the split.")
@click.option("-n", "n", type=int, required=True, help="Rows to sample before filtering.")
@click.option("--seed", type=int, default=42, show_default=True, help="Sampling seed.")
@click.option("--name", default=None,
              help="Dataset name (default: alpaca_<source>_<split>_<rows written>); a plain, visible file "
                   "name, not starting with '.' or '-', not ending in '.manifest', not 'dataset_info'.")
@click.option("--dataset-dir", type=click.Path(path_type=Path), default=Path("dataset_info"),
              show_default=True, help="LLaMA-Factory dataset folder holding dataset_info.json.")
@click.option("--keywords", "keywords_file", type=click.Path(path_type=Path), default=None,
              help="A task with a keyword_filter (translate): YAML file with a `drop_keywords` list "
                   "(case-insensitive) [default: the task file's list].")
@click.option("--unanswerable", type=click.Choice(["keep", "drop"]), default="keep", show_default=True,
              help="qa (a task scored with squad_v2): keep unanswerable questions (target = the no-answer text) "
                   "or drop them.")
@click.option("--no-answer-text", default=None,
              help="qa (a task scored with squad_v2): target text for an unanswerable question "
                   "[default: the task file's no_answer_text, 'unanswerable' for qa].")
@click.option("--cutoff-len", type=int, default=None,
              help="Drop rows longer than this many tokens (needs --tokenizer).")
@click.option("--tokenizer", default=None, help="Tokenizer (path or Hub id) for --cutoff-len.")
def prepare_command(task, source, config, overrides, split, n, seed, name, dataset_dir, keywords_file,
                    unanswerable, no_answer_text, cutoff_len, tokenizer):
    """Sample N rows of SOURCE with a seed, filter, and write TASK's alpaca instruction set.

    TASK is a task file (path/to/task.yaml, docs/tasks.md) or a shipped task's name (translate,
    summarize, qa). Writes <dataset-dir>/<name>.json, <name>.manifest.json beside it (with the
    task's declaration: later stages read the task from it), and the entry in
    <dataset-dir>/dataset_info.json (other entries are never touched)."""
    options = PrepareOptions(seed=seed, name=name, dataset_dir=dataset_dir, keywords_file=keywords_file,
                             unanswerable=unanswerable, no_answer_text=no_answer_text,
                             cutoff_len=cutoff_len, tokenizer=tokenizer, task_overrides=tuple(overrides))
    result = prepare(task, source, split, n, config=config, options=options)
    click.echo(summary(result))


@data.command("samples")
@click.option("--out", type=click.Path(path_type=Path), default=Path("data/samples"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def samples_command(out, seed):
    """Write the repo's own sample source files (wmt19, cnn_dailymail and squad_v2 schemas)."""
    from lf_wrap.data.samples import write_samples

    for path, rows in write_samples(out, seed=seed).items():
        click.echo(f"wrote {path} ({rows} rows)")


@data.command("add")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", required=True, help="Dataset name in dataset_info.json (a plain, visible file name).")
@click.option("--format", "fmt", type=click.Choice(["alpaca", "sharegpt"]), default=None,
              help="LLaMA-Factory's format of FILE [default: sharegpt when rows have `conversations`, else alpaca].")
@click.option("--task", default=None,
              help="The task the rows are for (a task file or a shipped name): recorded, so that eval and the "
                   "search score the set with it.")
@click.option("--dataset-dir", type=click.Path(path_type=Path), default=Path("dataset_info"),
              show_default=True, help="LLaMA-Factory dataset folder holding dataset_info.json.")
def add_command(file, name, fmt, task, dataset_dir):
    """Register FILE, a set you already have (JSON array or JSON Lines, alpaca or sharegpt).

    Every row is checked as LLaMA-Factory will read it (one error naming the row and key); the
    rows are written to <dataset-dir>/<name>.json with a manifest and their dataset_info.json
    entry (other entries are never touched)."""
    from lf_wrap.data.add import add, summary as add_summary

    click.echo(add_summary(add(file, name, dataset_dir, fmt, task)))
