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
same folder by two paths still exclude each other. flock is advisory; across hosts it holds only
where the shared file system carries it (Linux's NFS client turns flock into the server's
byte-range locks; Lustre needs `-o flock`; some FUSE file systems keep it local).

Shared mode (`shared=True`): the workers of one shared search (lf_wrap.search.workers) each hold
the lock shared, so they admit one another and still exclude a single run, which needs it
exclusive (and a single run excludes them). A shared holder leaves the file in place when it
ends: another worker may still hold it, and a new file would let a single run in beside it."""

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
def folder_lock(folder: Path, option: str = "--out", shared: bool = False) -> Iterator[Path]:
    """Hold the folder's lock for the block, or raise one UserError naming the holder's PID."""
    path = lock_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, folder, option, shared)
    try:
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode("utf-8", "replace"), 0)
        yield path
    finally:
        if not shared:
            path.unlink(missing_ok=True)   # while still held: a waiting run then finds the file gone
        os.close(fd)                       # closing the last descriptor releases the flock


@contextmanager
def held(path: Path, shared: bool = False, wait: bool = True) -> Iterator[int | None]:
    """flock on `path` (created if missing, never removed) for the block: the descriptor, or None
    when `wait` is False and another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


def is_held(path: Path) -> bool:
    """Whether a live process holds a flock on `path` (False when the file is gone)."""
    try:
        fd = os.open(path, os.O_RDWR)      # NFS carries an exclusive flock only on a descriptor open for writing
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _acquire(path: Path, folder: Path, option: str, shared: bool = False) -> int:
    """A descriptor holding the flock of the file now at `path`. A holder removes the file before
    it releases the lock, so a run that locked a file no longer at `path` tries again."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"{option} {folder}: cannot create its lock file {path} ({err.strerror})") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
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
            os.ftruncate(fd, 0)        # shared: the last worker to join is the one named
            return fd
        os.close(fd)
