"""A command started and stopped as a user does it from a terminal: Ctrl-C (SIGINT to the whole
process group) or SIGTERM (to the process), for the tests of what an interrupted stage leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def started_from_a_terminal(argv: list[str], log: Path):
    """`argv` in a session of its own with SIGINT not ignored (a background child inherits SIG_IGN),
    stderr to `log`; killed with its group on the way out if it is still running."""
    with open(log, "w") as handle:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)


def wait_until(child: subprocess.Popen, ready, log: Path, timeout: float) -> None:
    """Poll `ready()` until it holds; the child must still be running then."""
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.1)
    assert child.poll() is None, "it ended before it could be stopped: " + log.read_text()[-3000:]


def stop(child: subprocess.Popen, sig: signal.Signals) -> int:
    """SIGINT as Ctrl-C sends it (the whole group), SIGTERM as `kill` does (the process); the exit code."""
    (os.killpg if sig == signal.SIGINT else os.kill)(child.pid, sig)
    return child.wait(timeout=120)
