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
    return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


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

            self._bar = tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True, file=sys.stderr,
                             leave=True)

    def set_total(self, total: int) -> None:
        if total and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def update(self, done: int, note: str = "") -> None:
        done = max(done, self.done)
        self.note = note or self.note
        if self._bar is not None:
            self._bar.update(done - self.done)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self.done = done
            return
        self.done = done
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
