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
