"""The one subprocess runner: output teed to a log, failures carry the log's tail, and a
SIGTERM to lf-wrap stops the child instead of orphaning it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lf_wrap.core.process import ProcessFailed, run_logged

WRAPPER = """
import sys
from lf_wrap.core.process import run_logged
try:
    run_logged([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(120)"],
               sys.argv[1], echo=True)      # echoed: the test reads the child's pid from it
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_failure_carries_exit_code_and_log_tail(tmp_path):
    log = tmp_path / "child.log"
    with pytest.raises(ProcessFailed) as err:
        run_logged([sys.executable, "-c", "print('step 1'); print('boom: bad key'); raise SystemExit(3)"],
                   log, echo=False)
    assert err.value.exit_code == 3
    assert "boom: bad key" in err.value.message and str(log) in err.value.message
    assert "boom: bad key" in log.read_text()


def test_success_records_command_and_environment(tmp_path):
    record = run_logged([sys.executable, "-c", "print('hello')"], tmp_path / "ok.log",
                        env={"FORCE_TORCHRUN": "1"}, echo=False)
    assert record.exit_code == 0 and record.argv[0] == sys.executable
    assert record.env["FORCE_TORCHRUN"] == "1"
    assert "hello" in (tmp_path / "ok.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_terminating_lf_wrap_stops_the_child(tmp_path, sig):
    wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, str(tmp_path / "c.log")],
                               stdout=subprocess.PIPE, text=True)
    child_pid = int(wrapper.stdout.readline())
    wrapper.send_signal(sig)
    assert wrapper.wait(timeout=60) == 130
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the child outlived lf-wrap")


def test_stages_nest_the_innermost_tells_the_interrupt_with_the_signal_and_what_was_kept():
    """lf_wrap.core.interrupts: the click layer's block around a stage's own (eval) around a child
    run's (run_logged): a SIGTERM in the middle is told once, by the stage, as SIGTERM (exit 143),
    after the stage's on_interrupt ran; an error that is not an interrupt passes untouched."""
    from lf_wrap.core.errors import Interrupted
    from lf_wrap.core.interrupts import on_interrupt, stoppable
    from lf_wrap.core.process import terminate_as_interrupt

    marked = []
    with pytest.raises(Interrupted) as told:
        with stoppable():                                   # the click layer
            with stoppable("the rows so far are kept"):    # the stage
                with on_interrupt(lambda: marked.append("interrupted")):
                    with terminate_as_interrupt():          # a child run inside
                        os.kill(os.getpid(), signal.SIGTERM)
                        time.sleep(5)
    assert (str(told.value), told.value.exit_code) == ("interrupted (SIGTERM); the rows so far are kept", 143)
    assert marked == ["interrupted"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # every handler restored
    with pytest.raises(Interrupted) as told:
        with stoppable():
            raise KeyboardInterrupt
    assert (str(told.value), told.value.exit_code) == ("interrupted (Ctrl-C)", 130)
    with pytest.raises(ValueError):
        with stoppable(), on_interrupt(lambda: marked.append("again")):
            raise ValueError("not an interrupt")
    assert marked == ["interrupted"]
