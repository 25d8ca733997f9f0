"""The click layer: one module per command group, each only parsing options and calling the
stage function of the same name in `lf_wrap`.

This is the one place that speaks to the console. The core raises `LfWrapError`s (plain
exceptions with an exit code) and logs to `logging.getLogger("lf_wrap")`; `LfWrapGroup` prints
an error as one `Error: <message>` line with its exit code, Ctrl-C, SIGTERM and SIGHUP as
one `Error: interrupted (...)` line and exit code 130, 143 and 129 whatever the stage
(lf_wrap.core.interrupts), and `console_logging` shows log records as `lf-wrap: <message>` on
stderr."""

from __future__ import annotations

import logging

import click

from lf_wrap.core.console import console_stream
from lf_wrap.core.errors import LfWrapError
from lf_wrap.core.interrupts import stoppable


class _ConsoleHandler(logging.Handler):
    """Log records on stderr through click (so CliRunner and pipes see them), one prefix."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"warning: {text}"
            click.echo(f"lf-wrap: {text}", file=console_stream())
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def console_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("lf_wrap")
    logger.setLevel(level)
    logger.propagate = False    # a library that configures the root logger must not print our lines twice
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())


def _to_click(err: LfWrapError) -> click.ClickException:
    exc = click.ClickException(err.message)
    exc.exit_code = err.exit_code
    return exc


class LfWrapGroup(click.Group):
    """A click group whose commands' LfWrapErrors (and Ctrl-C) become console errors."""

    def invoke(self, ctx):
        console_logging()
        try:
            with stoppable():         # SIGTERM/SIGHUP as Ctrl-C, whatever the command: one line, 143/129/130
                return super().invoke(ctx)
        except LfWrapError as err:
            raise _to_click(err) from None
