"""`lf-wrap demo`."""

from datetime import datetime
from pathlib import Path

import click


@click.command("demo")
@click.option("--model", "kind", type=click.Choice(["smollm2", "tiny"]), default="smollm2", show_default=True,
              help="smollm2: SmolLM2-135M-Instruct from its PyPI wheel (real scores, ~30 min on 2 cores); "
                   "tiny: a 2-layer model built on the spot (plumbing only, ~3 min).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/demo-<model>-<timestamp>]; an existing one resumes.")
def demo_command(kind, out):
    """Run the whole study at small scale on CPU, offline: prepare, train, merge, evaluate, report."""
    from lf_wrap.demo.run import run_demo

    results = run_demo(kind, out or Path("runs") / f"demo-{kind}-{datetime.now():%Y%m%d-%H%M%S}")
    click.echo((results / "table.md").read_text(encoding="utf-8"))
