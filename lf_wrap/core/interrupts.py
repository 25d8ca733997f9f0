"""How a stage ends when it is stopped: Ctrl-C, SIGTERM (a job scheduler, `kill`) or SIGHUP (a
closed terminal). One shape for prepare, train, merge, eval and search:

    with stoppable("the predictions so far are kept in out/: run the same command to go on"):
        with folder_lock(out):
            with on_interrupt(lambda: write_manifest(status="interrupted")):
                ...

Inside `stoppable`, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread as Ctrl-C
does (lf_wrap.core.process.terminate_as_interrupt; a child program in its own session is
stopped by the runner), so every `finally` runs whatever stopped the stage: the folder's lock is
released (its file removed), an engine is shut down, a temporary folder removed. `on_interrupt`
lets the stage record that it was stopped (its manifest says "interrupted") while the lock is
still held. `stoppable` then turns the interrupt into one `Interrupted` error, printed as one
`Error: interrupted (SIGTERM); <what>` line, with the exit code a shell gives a process killed
by that signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP.
An interrupt before the stage holds its folder (while it checks its inputs) writes nothing: the
one line and the exit code only."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable, Iterator

from lf_wrap.core.errors import Interrupted
from lf_wrap.core.process import SIGNALS_CAUGHT, terminate_as_interrupt


class Stop:
    """The signals caught since it was made (none: Ctrl-C, which Python raises itself)."""

    def __init__(self) -> None:
        self._start = len(SIGNALS_CAUGHT)

    @property
    def received(self) -> list[int]:
        return SIGNALS_CAUGHT[self._start:]

    @property
    def name(self) -> str:
        return signal.Signals(self.received[0]).name if self.received else "Ctrl-C"

    def error(self, what: str = "") -> Interrupted:
        """The one error the click layer prints: `interrupted (SIGTERM); <what>`, exit 128 + the signal."""
        return Interrupted(f"interrupted ({self.name})" + (f"; {what}" if what else ""),
                           exit_code=128 + self.received[0] if self.received else None)


def stopped(err: BaseException) -> bool:
    """Whether `err` is the interrupt, not yet told: KeyboardInterrupt, or an error a library's
    cleanup raised while handling one (Optuna's journal lock, vLLM's shutdown)."""
    if isinstance(err, Interrupted):
        return False
    return isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt)


@contextmanager
def stoppable(what: str = "") -> Iterator[Stop]:
    """SIGTERM and SIGHUP stop the block as Ctrl-C does; any of the three leaves it as one
    Interrupted error saying `what` (what was kept, how to go on). Blocks nest: the innermost one
    that the interrupt leaves tells it (the stage, with its `what`; the click layer's says only
    which signal), and an outer one passes the error on."""
    stop = Stop()
    try:
        with terminate_as_interrupt():
            yield stop
    except BaseException as err:
        if not stopped(err):
            raise
        raise stop.error(what) from None


@contextmanager
def on_interrupt(action: Callable[[], None]) -> Iterator[None]:
    """Call `action` (write the manifest "interrupted") when the block is stopped; the interrupt
    goes on. Any other error passes untouched."""
    try:
        yield
    except BaseException as err:
        if stopped(err):
            action()
        raise
