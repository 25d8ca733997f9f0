"""`lf-wrap validate`: every check a file's command runs before any work, and nothing else.
The kinds of file, and the checks of each, are one registry (lf_wrap.stages.STAGES)."""

from pathlib import Path

import click
import yaml

from lf_wrap.commands.train import smoke_option
from lf_wrap.stages import STAGES

HELP = """Run every check the command of RECIPE runs before any work, and run nothing.

RECIPE is one of the kinds below, told from its top-level keys:

\b
""" + "\n".join(f"  {name:<16} {kind.command:<22} (has {kind.told_by})" for name, kind in STAGES.items())


@click.command("validate", help=HELP)
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a key, as the file's command would.")
@smoke_option
@click.option("--show", is_flag=True, help="Print what the file resolves to (for a training recipe: the arguments "
                                          "llamafactory-cli would get).")
def validate_command(recipe, sets, smoke, show):
    from lf_wrap.validation import check

    checked = check(recipe, tuple(sets), smoke)
    click.echo(f"{recipe}: OK: {checked.kind}: {checked.summary}")
    if show:
        click.echo(yaml.safe_dump(checked.resolved, sort_keys=False, allow_unicode=True), nl=False)
