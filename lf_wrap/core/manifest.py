"""What every manifest records about when and from which code a stage ran."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

from lf_wrap.core.environments import REPO_ROOT


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
