"""`lf-wrap data prepare` and `lf-wrap data samples`."""

from pathlib import Path

import click

from lf_wrap.data.prepare import DEFAULT_KEYWORDS, PrepareOptions, prepare, summary
from lf_wrap.tasks import DEFAULT_NO_ANSWER_TEXT, TASKS


@click.group()
def data():
    """Prepare instruction sets and register them in dataset_info.json."""


@data.command("prepare")
@click.argument("task", type=click.Choice(list(TASKS)))
@click.option("--source", required=True,
              help="Hub id (wmt/wmt19, abisee/cnn_dailymail, rajpurkar/squad_v2) or a local "
                   ".json/.jsonl/.parquet/.arrow file, a folder of them, or a save_to_disk folder.")
@click.option("--config", default=None,
              help="Hub config (default for Hub ids: zh-en, 3.0.0, none).")
@click.option("--split", required=True,
              help="Split to read from a Hub id; for a local file it only names the split.")
@click.option("-n", "n", type=int, required=True, help="Rows to sample before filtering.")
@click.option("--seed", type=int, default=42, show_default=True, help="Sampling seed.")
@click.option("--name", default=None,
              help="Dataset name (default: alpaca_<source>_<split>_<rows written>); a plain, visible file "
                   "name, not starting with '.' or '-', not ending in '.manifest', not 'dataset_info'.")
@click.option("--dataset-dir", type=click.Path(path_type=Path), default=Path("dataset_info"),
              show_default=True, help="LLaMA-Factory dataset folder holding dataset_info.json.")
@click.option("--keywords", "keywords_file", type=click.Path(path_type=Path),
              default=DEFAULT_KEYWORDS, show_default="the study's list",
              help="translate: YAML file with a `drop_keywords` list (case-insensitive).")
@click.option("--unanswerable", type=click.Choice(["keep", "drop"]), default="keep", show_default=True,
              help="qa: keep unanswerable questions (target = --no-answer-text) or drop them.")
@click.option("--no-answer-text", default=DEFAULT_NO_ANSWER_TEXT, show_default=True,
              help="qa: target text for an unanswerable question.")
@click.option("--cutoff-len", type=int, default=None,
              help="Drop rows longer than this many tokens (needs --tokenizer).")
@click.option("--tokenizer", default=None, help="Tokenizer (path or Hub id) for --cutoff-len.")
def prepare_command(task, source, config, split, n, seed, name, dataset_dir, keywords_file,
                    unanswerable, no_answer_text, cutoff_len, tokenizer):
    """Sample N rows of SOURCE with a seed, filter, and write an alpaca instruction set.

    Writes <dataset-dir>/<name>.json, <name>.manifest.json beside it, and the entry in
    <dataset-dir>/dataset_info.json (other entries are never touched)."""
    options = PrepareOptions(seed=seed, name=name, dataset_dir=dataset_dir, keywords_file=keywords_file,
                             unanswerable=unanswerable, no_answer_text=no_answer_text,
                             cutoff_len=cutoff_len, tokenizer=tokenizer)
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
