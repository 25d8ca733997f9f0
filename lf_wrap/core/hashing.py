"""Content hashes of files and folders, remembered by file identity, so that saved predictions
are reused only for the very same weights, and an unchanged 6 GB base model is read once, not
on every run.

The hash is BLAKE3 (`blake3:<64 hex>`). It is a cryptographic hash, so a digest written into a
manifest cannot be matched by a crafted file; xxh3-128 is about three times faster on one core
but promises nothing against a deliberate collision. BLAKE3 is also the fastest cryptographic
hash installed (two to three times sha256 on one core), and with `max_threads=AUTO` it may spread
each 4 MiB block over several cores, so that hashing keeps up with a fast disk. Files are read
in 4 MiB blocks rather than memory-mapped (`update_mmap`): both measured the same speed, but a
mapped file that another process truncates while it is being hashed (a merge search rewriting a
model in place) kills the hashing process with SIGBUS, where `read` just returns fewer bytes.

The cache. A digest is stored in one SQLite table against the file's real path and identity,
(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns), and reused only while all six match. Every
write through the kernel sets mtime and ctime to the current time; a user can set mtime back
(`touch -d`, `os.utime`) but not ctime (setting a time changes ctime too); a file replaced by a
rename has another inode, and a file deleted and re-created (even if the inode number is reused)
has a new ctime. So any difference in identity means a re-hash.

Two more guards make that hold with coarse timestamps. A timestamp is taken from a clock that
ticks every few milliseconds (whole seconds on some filesystems), so a file changed within the
same tick as the write before it keeps its ctime. A digest is therefore stored only when the
file's ctime is at least RACY_WINDOW_NS older than the moment hashing began (git's "racily clean"
rule): any later write then necessarily gets a later ctime. A file written in the last two
seconds is simply hashed again next time. And a file whose identity changed while it was read
is read again (a merge may still be writing it), so that the digest describes one state of
the file; after three unstable reads the last digest is returned, and not stored.

What remains (be honest): a change that leaves size, mtime_ns, ctime_ns and inode all unchanged
cannot happen through write(), truncate() or rename(); it takes writing under the filesystem
(a raw block device, debugfs, bit rot, a clock set backwards by root), further writes through a
shared writable mmap to a page that is already dirty (Linux updates the times only at the first
write fault), a filesystem whose ctime does not follow writes (some FUSE mounts), or NFS, whose
attribute cache can show a client stale times for up to `acregmax` seconds after another host
rewrote a file (and whose server clock may be skewed against ours). Where weights are rewritten
in place on another host, or for a check that must read every byte, set LF_WRAP_HASH_CACHE=0.
The cache is also trusted as written: anyone who can write it can make a digest lie.

Location: $LF_WRAP_CACHE/hashes.sqlite, by default <repo>/cache/ (lf_wrap.core.environments.cache_root).
The database uses WAL and a 30 s busy timeout, so concurrent processes share it; any error in
opening, reading or writing it only costs a re-hash, and a corrupt file is deleted and rebuilt."""

from __future__ import annotations

import fnmatch
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Callable, Iterable, Union

import blake3

from lf_wrap.core.environments import cache_root

ALGORITHM = "blake3"
# A file is remembered only once its ctime is this much older than the start of hashing; it
# must cover the filesystem's timestamp granularity (ext4: the kernel tick, FAT: 2 s).
RACY_WINDOW_NS = 2_000_000_000
_BLOCK = 4 << 20
_SCHEMA = "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, identity TEXT NOT NULL, digest TEXT NOT NULL)"

Include = Union[Callable[[str], bool], Iterable[str], str, None]


def cache_file() -> Path | None:
    """Where digests are remembered, or None when LF_WRAP_HASH_CACHE=0 turns the cache off."""
    if os.environ.get("LF_WRAP_HASH_CACHE", "").strip().lower() in ("0", "false", "no", "off"):
        return None
    return cache_root() / "hashes.sqlite"


def file_digest(path: str | os.PathLike) -> str:
    """`blake3:<hex>` of the file's bytes (symlinks followed), from the cache while the file's
    identity is unchanged."""
    with _DigestCache(cache_file()) as cache:
        return _digest(Path(path), cache)


def tree_digest(folder: str | os.PathLike, include: Include = None) -> tuple[str, dict[str, str]]:
    """One digest for a folder, and each file's digest by relative name ("sub/name", `/` on
    every platform).

    The digest is BLAKE3 over the lines `<relative name>\\0<file digest>\\n` in sorted name
    order, so a renamed, added or removed file changes it as well as changed content. Symlinks
    (to files and to folders) are followed; names starting with "." (temporary files of atomic
    writes, `.cache/` folders) are skipped at any depth. `include` narrows the files: a predicate
    on the relative name, or shell patterns matched against it (`*` also crosses `/`, so
    `"*.safetensors"` finds shards in sub-folders)."""
    root = Path(folder)
    names = [name for name in _walk(root) if _wanted(name, include)]
    with _DigestCache(cache_file()) as cache:
        files = {name: _digest(root / name, cache) for name in sorted(names)}
    combined = blake3.blake3()
    for name, digest in files.items():
        combined.update(f"{name}\0{digest}\n".encode())
    return f"{ALGORITHM}:{combined.hexdigest()}", files


def _read_and_hash(path: str, size_hint: int) -> str:
    """The only place that reads file content; tests count its calls."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buffer = bytearray(min(_BLOCK, size_hint + 1))
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            hasher.update(view[:count])
    return f"{ALGORITHM}:{hasher.hexdigest()}"


def _identity(st: os.stat_result) -> str:
    # Text, not five INTEGER columns: st_ino and st_dev may exceed SQLite's signed 64 bits.
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _digest(path: Path, cache: _DigestCache) -> str:
    """From the cache, or read; a file that changed while it was read is read again (three
    reads at most), so the digest is of one state of the file, not a mix of two."""
    real = os.path.realpath(path)
    for _ in range(3):
        started = time.time_ns()
        before = os.stat(real)
        if not stat.S_ISREG(before.st_mode):
            raise ValueError(f"{path} is not a regular file")
        identity = _identity(before)
        known = cache.get(real, identity)
        if known is not None:
            return known
        digest = _read_and_hash(real, before.st_size)
        if _identity(os.stat(real)) == identity:
            if before.st_ctime_ns < started - RACY_WINDOW_NS:
                cache.put(real, identity, digest)
            break
    return digest


def _walk(root: Path) -> list[str]:
    """Relative names of the regular files under `root`, links followed, hidden names skipped,
    each real folder visited once (a link loop ends instead of recursing forever)."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    names, seen = [], set()
    for current, dirs, files in os.walk(root, followlinks=True, onerror=_raise):
        st = os.stat(current)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(current).relative_to(root)
        for name in files:
            if not name.startswith(".") and stat.S_ISREG(os.stat(os.path.join(current, name)).st_mode):
                names.append((rel / name).as_posix())
    return names


def _raise(err: OSError) -> None:
    raise err


def _wanted(name: str, include: Include) -> bool:
    if include is None:
        return True
    if callable(include):
        return bool(include(name))
    patterns = [include] if isinstance(include, str) else include
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class _DigestCache:
    """The SQLite table of known digests. It never fails its caller: a cache that cannot be
    opened, read or written behaves as an empty one, and a corrupt file is replaced."""

    def __init__(self, file: Path | None):
        self.file = file
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> _DigestCache:
        if self.file is not None:
            self.db = self._open()
        return self

    def __exit__(self, *exc) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def get(self, path: str, identity: str) -> str | None:
        row = self._run("SELECT digest FROM digests WHERE path = ? AND identity = ?", (path, identity))
        digest = row[0] if row else None
        return digest if isinstance(digest, str) and digest.startswith(f"{ALGORITHM}:") else None

    def put(self, path: str, identity: str, digest: str) -> None:
        self._run("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)", (path, identity, digest))

    def _open(self) -> sqlite3.Connection | None:
        for attempt in range(2):
            db = None
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.file, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
                return db
            except sqlite3.Error as err:
                if db is not None:
                    db.close()
                if not (_corrupt(err) and attempt == 0 and self._remove()):
                    return None
            except OSError:
                return None
        return None

    def _run(self, sql: str, args: tuple) -> tuple | None:
        if self.db is None:
            return None
        try:
            return self.db.execute(sql, args).fetchone()
        except sqlite3.Error as err:
            if _corrupt(err):
                self.db.close()
                self.db = self._open() if self._remove() else None
            return None

    def _remove(self) -> bool:
        try:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.file}{suffix}").unlink(missing_ok=True)
            return True
        except OSError:
            return False


def _corrupt(err: sqlite3.Error) -> bool:
    # "file is not a database" and "database disk image is malformed" are plain DatabaseError;
    # a busy or locked database is an OperationalError, and must not cost the file.
    return type(err) is sqlite3.DatabaseError
