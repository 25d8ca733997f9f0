"""One writer per output folder: eval, merge and search hold an exclusive lock on the folder they
write while they run, so that two runs into one folder cannot both append the same rows, mark
each other's trials failed, or rename a merge over one another.

The lock is `fcntl.flock` on a small file beside the folder, `.<name>.lock` in its parent (the
folder itself may not exist yet, and a merge replaces it by a rename, which would drop a lock
held inside it). The kernel releases a flock when its process exits, however it exits (kill -9
included), so a lock left by a dead process is never in the way: the next run simply takes it.
The file holds the holder's PID and command line, read only to say who holds it, and is removed
when the run ends (a kill -9 leaves it: harmless, the next run takes it and removes it).

A folder reached through a symlink is locked under its real path, so two runs that name the
same folder by two paths still exclude each other. flock is advisory and local: it does not
exclude a run on another host writing to the same NFS folder (NFS locks through fcntl, not flock)."""

from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lf_wrap.core.errors import UserError


def lock_file(folder: Path) -> Path:
    real = Path(folder).expanduser().resolve()
    return real.parent / f".{real.name}.lock"


@contextmanager
def folder_lock(folder: Path, option: str = "--out") -> Iterator[Path]:
    """Hold the folder's lock for the block, or raise one UserError naming the holder's PID."""
    path = lock_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, folder, option)
    try:
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode("utf-8", "replace"), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)   # while still held: a waiting run then finds the file gone
        os.close(fd)                   # closing the last descriptor releases the flock


def _acquire(path: Path, folder: Path, option: str) -> int:
    """A descriptor holding the flock of the file now at `path`. A holder removes the file before
    it releases the lock, so a run that locked a file no longer at `path` tries again."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"{option} {folder}: cannot create its lock file {path} ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{option} {folder} is being written by another lf-wrap run ({holder}); wait for it "
                            f"to finish, or choose another {option} (lock: {path})") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            return fd
        os.close(fd)
