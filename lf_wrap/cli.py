"""`lf-wrap`: the command line. Each group lives in `lf_wrap.commands.<group>`."""

import click

from lf_wrap import __version__
from lf_wrap.commands import LfWrapGroup
from lf_wrap.commands.data import data
from lf_wrap.commands.demo import demo_command
from lf_wrap.commands.init import init_command
from lf_wrap.commands.eval import compare_command, eval_command, report_command, score_command
from lf_wrap.commands.merge import merge
from lf_wrap.commands.train import train_command
from lf_wrap.commands.validate import validate_command
from lf_wrap.core.console import set_verbose


@click.group(cls=LfWrapGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lf-wrap")
@click.option("-v", "--verbose", is_flag=True,
              help="Stream LLaMA-Factory's and vLLM's own output to the terminal too (it always goes to the "
                   "stage's log file); LF_WRAP_VERBOSE=1 does the same.")
def cli(verbose):
    """Prepare, train (LLaMA-Factory), merge and evaluate (vLLM) LoRA adapters, as in the study."""
    set_verbose(verbose)


cli.add_command(data)
cli.add_command(demo_command)
cli.add_command(eval_command)
cli.add_command(init_command)
cli.add_command(score_command)
cli.add_command(compare_command)
cli.add_command(report_command)
cli.add_command(merge)
cli.add_command(train_command)
cli.add_command(validate_command)


def main():
    cli()
