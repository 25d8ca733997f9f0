"""The one manifest header: every stage's manifest (prepare, train, merge, eval, search) opens
with the same keys, made here, so one reader tells what ran, from which code, and how it ended.

    stage           "prepare" | "train" | "merge" | "eval" | "search"
    lf_wrap_version
    git             {"commit": sha, "dirty": bool} of lf-wrap's checkout, or null outside one
    argv            the command line as typed (["lf-wrap", "train", ...])
    started, ended  UTC, ISO 8601 to the second (ended null while running)
    seconds         wall time (null while running)
    status          "running" | "finished" | "failed" | "interrupted"

The stage's own keys follow the header."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lf_wrap import __version__
from lf_wrap.core.environments import REPO_ROOT

HEADER_KEYS = ("stage", "lf_wrap_version", "git", "argv", "started", "ended", "seconds", "status")
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict | None:
    """{"commit": sha, "dirty": bool} of lf-wrap's checkout, or None outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], check=False,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def command_line() -> list[str]:
    """The command as the user typed it: the console script's name, then its arguments."""
    return [Path(sys.argv[0]).name or "lf-wrap", *sys.argv[1:]]


class StageRecord:
    """The header of one stage's run: `header` while it runs, `finish(status)` when it ends."""

    def __init__(self, stage: str, argv: list[str] | None = None):
        self._start = time.monotonic()
        self.header: dict = {"stage": stage, "lf_wrap_version": __version__, "git": git_state(),
                             "argv": list(argv) if argv is not None else command_line(),
                             "started": now_utc(), "ended": None, "seconds": None, "status": RUNNING}

    def finish(self, status: str = FINISHED) -> dict:
        self.header.update(ended=now_utc(), seconds=round(time.monotonic() - self._start, 1), status=status)
        return self.header

    def manifest(self, body: dict) -> dict:
        """The header, then the stage's own keys (a key of the header is never overwritten)."""
        clash = sorted(set(body) & set(self.header))
        if clash:
            raise ValueError(f"manifest keys {clash} belong to the header")
        return {**self.header, **body}



def read_manifest_file(path: Path) -> dict:
    """A manifest (or any JSON object) as written, or {} when it is missing, unreadable or not an
    object: what a stage asks of an earlier output before deciding to reuse or replace it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
