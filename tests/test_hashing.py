"""Content hashes and their identity cache: a changed byte is never missed, an unchanged file
is not read twice, and a broken or shared cache never fails the caller."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from lf_wrap.core import hashing
from lf_wrap.core.hashing import file_digest, tree_digest

REPO = Path(__file__).resolve().parents[1]
# Tests shrink the racy window from 2 s to 50 ms (well above the kernel's timestamp tick) and
# wait out twice that after writing a file they expect to be remembered.
WINDOW_NS = 50_000_000
EMPTY = "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LF_WRAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LF_WRAP_HASH_CACHE", raising=False)
    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", WINDOW_NS)
    return tmp_path / "cache"


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The paths whose bytes were actually read, one entry per read."""
    calls: list[str] = []
    real = hashing._read_and_hash

    def counting(path: str, size_hint: int) -> str:
        calls.append(path)
        return real(path, size_hint)

    monkeypatch.setattr(hashing, "_read_and_hash", counting)
    return calls


def settle() -> None:
    time.sleep(2 * WINDOW_NS / 1e9)


def expected(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


def test_same_bytes_same_digest(tmp_path):
    data = os.urandom(3 << 20)  # several read blocks
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "b.bin").write_bytes(data)
    (tmp_path / "c.bin").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    (tmp_path / "empty").write_bytes(b"")
    assert file_digest(tmp_path / "a.bin") == file_digest(tmp_path / "b.bin") == expected(data)
    assert file_digest(tmp_path / "c.bin") != file_digest(tmp_path / "a.bin")
    assert file_digest(tmp_path / "empty") == EMPTY


def test_second_call_does_not_read_the_file(tmp_path, cache_dir, reads):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(os.urandom(1 << 20))
    settle()
    first = file_digest(path)
    assert file_digest(path) == file_digest(str(path)) == first
    assert reads == [str(path)]
    assert (cache_dir / "hashes.sqlite").is_file()


def test_a_file_written_just_now_is_not_remembered(tmp_path, reads, monkeypatch):
    """Within the racy window a same-size rewrite could keep the ctime, so nothing is stored."""
    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", 2_000_000_000)
    path = tmp_path / "merged.safetensors"
    path.write_bytes(b"x" * 1000)
    file_digest(path)
    file_digest(path)
    assert len(reads) == 2


def test_in_place_change_with_mtime_restored_is_detected(tmp_path, reads):
    path = tmp_path / "model.safetensors"
    data = bytearray(os.urandom(1 << 20))
    path.write_bytes(data)
    settle()
    before = os.stat(path)
    old = file_digest(path)
    assert file_digest(path) == old and len(reads) == 1  # remembered

    with open(path, "r+b") as handle:  # one byte, in place: same inode, same size
        handle.seek(500_000)
        handle.write(bytes([data[500_000] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns

    data[500_000] ^= 0xFF
    assert file_digest(path) == expected(bytes(data)) != old
    assert len(reads) == 2


def test_replace_by_rename_is_detected(tmp_path, reads):
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(b"a" * 4096)
    settle()
    before = os.stat(path)
    old = file_digest(path)
    (tmp_path / ".new.tmp").write_bytes(b"b" * 4096)
    os.utime(tmp_path / ".new.tmp", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp_path / ".new.tmp", path)
    assert file_digest(path) == expected(b"b" * 4096) != old
    assert len(reads) == 2


def test_a_file_changed_while_being_read_is_read_again(tmp_path, monkeypatch):
    path = tmp_path / "shard.safetensors"
    path.write_bytes(b"a" * 4096)
    settle()
    real, calls = hashing._read_and_hash, []

    def read_then_append(name: str, size_hint: int) -> str:
        calls.append(name)
        digest = real(name, size_hint)
        if len(calls) == 1:  # another process appends while the first read runs
            with open(name, "ab") as handle:
                handle.write(b"tail")
        return digest

    monkeypatch.setattr(hashing, "_read_and_hash", read_then_append)
    assert file_digest(path) == expected(b"a" * 4096 + b"tail")
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["garbage", "malformed"])
def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path, cache_dir, reads, damage):
    files = [tmp_path / f"f{i}" for i in range(50)]
    for i, file in enumerate(files):
        file.write_bytes(str(i).encode() * 100)
    settle()
    db = cache_dir / "hashes.sqlite"
    if damage == "garbage":
        cache_dir.mkdir()
        db.write_bytes(os.urandom(10_000))
    else:  # a valid header over pages of noise
        tree_digest(tmp_path, include="f*")
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        with open(db, "r+b") as handle:
            handle.seek(100)
            handle.write(os.urandom(db.stat().st_size - 100))
        reads.clear()

    digest, digests = tree_digest(tmp_path, include="f*")
    assert digests == {f.name: expected(f.read_bytes()) for f in sorted(files, key=lambda f: f.name)}
    assert len(reads) == 50
    assert tree_digest(tmp_path, include="f*")[0] == digest and len(reads) == 50  # rebuilt, and used
    assert sqlite3.connect(db).execute("SELECT count(*) FROM digests").fetchone() == (50,)


def test_an_unusable_cache_location_only_costs_rehashing(tmp_path, monkeypatch, reads):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("LF_WRAP_CACHE", str(tmp_path / "not-a-folder"))
    path = tmp_path / "config.json"
    path.write_text("{}")
    settle()
    assert file_digest(path) == file_digest(path) == expected(b"{}")
    assert len(reads) == 2


def test_cache_off_reads_every_time(tmp_path, cache_dir, monkeypatch, reads):
    monkeypatch.setenv("LF_WRAP_HASH_CACHE", "0")
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"w" * 5000)
    settle()
    assert len({file_digest(path) for _ in range(3)}) == 1
    assert len(reads) == 3
    assert not cache_dir.exists()


CHILD = """
import sys, time
from pathlib import Path
from lf_wrap.core import hashing
folder, window, me = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
hashing.RACY_WINDOW_NS = window
(folder.parent / f"ready-{me}").touch()
while not (folder.parent / "go").exists():
    time.sleep(0.001)
digest, files = hashing.tree_digest(folder)
print(digest, len(files))
"""


def test_two_processes_hashing_at_once_both_succeed(tmp_path, cache_dir, reads):
    """Both start on an empty cache at the same instant; neither fails, and every digest
    they computed is in the cache afterwards (no write lost to a locked database)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for i in range(1000):
        (folder / f"shard-{i:04d}.bin").write_bytes(os.urandom(1024))
    settle()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(WINDOW_NS), str(n)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    digest, files = tree_digest(folder)
    assert [out for out, _ in outputs] == [f"{digest} 1000\n"] * 2
    assert reads == []


def test_tree_digest_names_filters_and_links(tmp_path):
    tree, outside = tmp_path / "model", tmp_path / "elsewhere"
    (tree / "sub").mkdir(parents=True)
    (tree / ".cache").mkdir()
    outside.mkdir()
    (tree / "config.json").write_text("{}")
    (tree / "sub" / "model-00001.safetensors").write_bytes(b"w1")
    (tree / ".model.safetensors.123.tmp").write_bytes(b"half-written")
    (tree / ".cache" / "meta").write_text("x")
    (outside / "tokenizer.json").write_text("{\"v\": 1}")
    (tree / "tokenizer.json").symlink_to(outside / "tokenizer.json")
    (tree / "sub" / "loop").symlink_to(tree)

    digest, files = tree_digest(tree)
    assert list(files) == ["config.json", "sub/model-00001.safetensors", "tokenizer.json"]
    assert files["tokenizer.json"] == expected(b"{\"v\": 1}")
    lines = "".join(f"{name}\0{files[name]}\n" for name in files).encode()
    assert digest == expected(lines)

    assert list(tree_digest(tree, include=["*.safetensors"])[1]) == ["sub/model-00001.safetensors"]
    assert list(tree_digest(tree, include=lambda name: "/" not in name)[1]) == ["config.json", "tokenizer.json"]

    (outside / "tokenizer.json").write_text("{\"v\": 2}")  # a change behind a link counts
    assert tree_digest(tree)[0] != digest
    os.rename(tree / "config.json", tree / "config2.json")  # so does a rename
    assert "config2.json" in tree_digest(tree)[1]
