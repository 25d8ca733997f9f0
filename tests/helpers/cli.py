"""`lf-wrap merge adapters` in-process (click's runner), and what a refusal must look like."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lf_wrap.cli import cli


def merge_adapters(*args):
    return CliRunner().invoke(cli, ["merge", "adapters", *map(str, args)])


def assert_refused(result, needle: str, out: Path) -> None:
    """Exit 2, one `Error:` line holding `needle`, no traceback, and nothing written at `out`."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert "Traceback" not in result.output and not Path(out).exists()
