"""What the terminal shows while a stage runs: lf-wrap's own lines and one progress bar for the
long part (training steps, rows generated, candidates scored). The tools' own output
(LLaMA-Factory's config dumps and step bars, vLLM's engine logs) goes to the stage's log file
only; `lf-wrap -v` (or LF_WRAP_VERBOSE=1) streams it to the terminal as well, as before.

A bar is drawn with tqdm when stderr is a terminal. Anything else (CI, a pipe, a file) gets
plain lines instead of redraws: one at the start, one each time another tenth is done or a
minute has passed, and one at the end."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger("lf_wrap")

PLAIN_EVERY_SECONDS = 60.0


def verbose() -> bool:
    """Stream the tools' own output to the terminal too (`lf-wrap -v`)."""
    return os.environ.get("LF_WRAP_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


def set_verbose(flag: bool) -> None:
    """Set by the command line; an environment variable, so child lf-wrap processes see it too."""
    if flag:
        os.environ["LF_WRAP_VERBOSE"] = "1"


def interactive() -> bool:
    return console_stream().isatty() and os.environ.get("TERM", "") != "dumb"


_console: IO[str] | None = None      # the terminal's stderr while the tools' output goes to a log
_redirected = False
_announced: set[Path] = set()     # a log's path is said once per process


def console_stream() -> IO[str]:
    """Where lf-wrap's own lines and bars go: the terminal, also while `tools_to_log` holds the
    process's stdout and stderr."""
    return _console if _console is not None else sys.stderr


@contextmanager
def tools_to_log(log_path: Path, label: str) -> Iterator[Path]:
    """Send everything the libraries in this process print (vLLM's logger and its engine's own
    output, transformers' notices, C-level prints of torch and oneDNN, worker processes started
    meanwhile) to `log_path`, at the file-descriptor level; lf-wrap's own lines still reach the
    terminal (console_stream). With `lf-wrap -v` nothing is redirected. A failure other than
    lf-wrap's own errors shows the log's last lines with its path."""
    global _console, _redirected
    log_path = Path(log_path)
    if verbose() or _redirected:
        yield log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path not in _announced:
        _announced.add(log_path)
        log.info(f"{label}: the libraries' own output goes to {log_path} (lf-wrap -v shows it here too)")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    if _is_fd(sys.stderr, 2):       # else (a test's CliRunner) sys.stderr is no descriptor: it stays ours
        _console = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    _redirected = True
    console = console_stream()
    try:
        for fd in (1, 2):
            os.dup2(target, fd)
        yield log_path
    except BaseException as err:
        from lf_wrap.core.errors import LfWrapError

        if not isinstance(err, (LfWrapError, KeyboardInterrupt, SystemExit)):
            console.write(f"--- last lines of {log_path} ---\n{tail(log_path)}\n")
        raise
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(target)
        if _console is not None:
            _console.close()
        _console, _redirected = None, False


def _is_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip("\n")
    except OSError:
        return "(no log)"


class Progress:
    """One bar for the long part of a stage: `update(done, note)` sets the count (absolute),
    `close()` ends it. `total` may be unknown at first (`set_total`)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "step"):
        self.label, self.total, self.unit = label, total, unit
        self.done, self.note = 0, ""
        self._bar = None
        self._last_tenth, self._last_time, self._last_text = -1, time.monotonic(), ""
        if interactive():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True, file=console_stream(),
                             leave=True)

    def set_total(self, total: int) -> None:
        if total and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def update(self, done: int, note: str = "", line: str | None = None) -> None:
        """Set the count; `line`: what a plain (non-terminal) output says for this update instead
        of the periodic count line."""
        done = max(done, self.done)
        self.note = note or self.note
        if self._bar is not None:
            self._bar.update(done - self.done)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self.done = done
            return
        self.done = done
        if line is not None:
            self._last_text = line
            log.info(line)
            return
        tenth = int(10 * done / self.total) if self.total else -1
        now = time.monotonic()
        if tenth > self._last_tenth or now - self._last_time >= PLAIN_EVERY_SECONDS:
            self._last_tenth, self._last_time = tenth, now
            self._plain()

    def _plain(self) -> None:
        of = f"/{self.total}" if self.total else ""
        text = f"{self.label}: {self.done}{of} {self.unit}s" + (f" ({self.note})" if self.note else "")
        if text != self._last_text:
            self._last_text = text
            log.info(text)

    def close(self) -> None:
        """The last state: the bar's final draw, or a plain line unless the last one said it all."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self._plain()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
