"""The one way lf-wrap runs another program.

An argument list (never a shell string, so paths with spaces survive), output written to a
log file (and streamed to the console too with `lf-wrap -v`; otherwise the stage shows one
progress bar, fed by `on_line`), and a record of what ran: the command, the environment
switches that change behaviour, the exit code and the duration. A failure raises with the
tail of the log and its path. Ctrl-C is passed to the child, which gets time to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lf_wrap.core.console import verbose
from lf_wrap.core.errors import LfWrapError
from lf_wrap.core.manifest import now_utc

# Variables that change what a launch does; whichever are set are written into the record.
RECORDED_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "FORCE_TORCHRUN",
    "NPROC_PER_NODE",
    "NNODES",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "USE_RAY",
    "DISABLE_VERSION_CHECK",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "VLLM_CPU_KVCACHE_SPACE",
    "OMP_NUM_THREADS",
)


@dataclass
class ProcessRecord:
    argv: list[str]
    env: dict[str, str]
    log: str
    started: str
    ended: str = ""
    seconds: float = 0.0
    exit_code: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class ProcessFailed(LfWrapError):
    """A child program failed: its exit code becomes lf-wrap's."""

    def __init__(self, record: ProcessRecord, tail: str):
        self.record = record
        self.exit_code = record.exit_code if record.exit_code and record.exit_code > 0 else 1
        super().__init__(
            f"{record.argv[0]} exited with code {record.exit_code} after {record.seconds:.1f}s.\n"
            f"--- last lines of {record.log} ---\n{tail}"
        )


def run_logged(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
               cwd: Path | None = None, echo: bool | None = None, tail_lines: int = 40,
               on_line: Callable[[str], None] | None = None) -> ProcessRecord:
    """Run `argv`, its output into `log_path` (and the console when `echo`, by default with
    `lf-wrap -v`); `on_line` sees each line (a progress bar); raise ProcessFailed on failure,
    with the log's last lines."""
    argv = [str(a) for a in argv]
    echo = verbose() if echo is None else echo
    full_env = dict(os.environ)
    full_env.update(env or {})
    recorded = {k: full_env[k] for k in RECORDED_ENV if k in full_env}
    recorded.update(env or {})
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    record = ProcessRecord(argv=argv, env=recorded, log=str(log_path), started=now_utc())
    tail: deque[str] = deque(maxlen=tail_lines)
    start = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        with terminate_as_interrupt():
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=cwd, start_new_session=True, text=True, errors="replace", bufsize=1)
            try:
                for line in child.stdout:
                    log.write(line)
                    tail.append(line.rstrip("\n"))
                    if echo:
                        sys.stdout.write(line)
                        sys.stdout.flush()
                    if on_line is not None:
                        on_line(line)
                child.wait()
            except KeyboardInterrupt:
                _stop(child)
                record.exit_code = child.returncode
                record.ended, record.seconds = now_utc(), round(time.monotonic() - start, 3)
                log.write("\n[lf-wrap] interrupted (Ctrl-C, SIGTERM or SIGHUP); child stopped\n")
                raise
    record.exit_code = child.returncode
    record.ended, record.seconds = now_utc(), round(time.monotonic() - start, 3)
    if child.returncode != 0:
        raise ProcessFailed(record, "\n".join(tail))
    return record


# Every SIGTERM or SIGHUP turned into a KeyboardInterrupt, in order, whichever block caught it
# (blocks nest: a stage around a child run): lf_wrap.core.interrupts names the signal from it.
SIGNALS_CAUGHT: list[int] = []


@contextmanager
def terminate_as_interrupt(received: list[int] | None = None):
    """While a child runs, SIGTERM and SIGHUP (a job scheduler, a closed terminal) stop it the
    way Ctrl-C does, instead of killing lf-wrap and leaving the child (in its own session) alive.
    `received` collects the signals caught, for a stage that exits with the shell's code (143)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        SIGNALS_CAUGHT.append(signum)
        if received is not None:
            received.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(child: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGINT the child's whole process group (torchrun workers too), then SIGKILL after `grace`."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
