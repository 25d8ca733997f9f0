"""`lf-wrap`: the command line. Each group lives in `lf_wrap.commands.<group>`."""

import click

from lf_wrap import __version__
from lf_wrap.commands.data import data


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lf-wrap")
def cli():
    """Prepare, train (LLaMA-Factory), merge and evaluate (vLLM) LoRA adapters, as in the study."""


cli.add_command(data)


def main():
    cli()
