"""Benchmark: lf_wrap.core.hashing.file_digest on a large file, first and cached, against sha256.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_hashing.py            # 1 GiB in a temporary folder
    PYTHONPATH=$PWD .venv/bin/python bench/bench_hashing.py --size-mib 6144 --dir /data/tmp

Writes a file of random bytes, waits out the racy window (a file changed in the last two seconds
is not remembered), then times:
  first    file_digest with an empty cache: reads and hashes every byte, stores the digest.
           The file was just written, so it is hot in the page cache: this is the hashing
           speed, not the disk's.
  cached   file_digest again: one stat and one SQLite lookup, no byte read.
  sha256   hashlib.sha256 over the same hot file in 1 MiB blocks (today's lf_wrap.files.sha256_file).
  disk     file_digest with the cache off after asking the kernel to drop the file's pages
           (posix_fadvise DONTNEED, advisory): roughly a cold read from the disk.
The file, its folder and the benchmark's own cache are removed at the end; MB is 10^6 bytes."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path


def write_random(path: Path, size: int) -> None:
    block = 64 << 20
    with open(path, "wb") as handle:
        for start in range(0, size, block):
            handle.write(os.urandom(min(block, size - start)))
        handle.flush()
        os.fsync(handle.fileno())


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def timed(label: str, size: int, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:8s} {seconds * 1000:10.1f} ms  {size / seconds / 1e6:12,.0f} MB/s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024 MiB = 1 GiB)")
    parser.add_argument("--dir", default=None, help="where the temporary folder goes (default: the system's)")
    args = parser.parse_args()
    size = args.size_mib << 20

    work = Path(tempfile.mkdtemp(prefix="bench-hashing-", dir=args.dir))
    os.environ["LF_WRAP_CACHE"] = str(work / "cache")
    os.environ.pop("LF_WRAP_HASH_CACHE", None)
    from lf_wrap.core import hashing

    try:
        path = work / "weights.bin"
        print(f"writing {size / 1e9:.2f} GB of random bytes to {path}")
        write_random(path, size)
        time.sleep(hashing.RACY_WINDOW_NS / 1e9 + 0.1)
        print(f"{hashing.ALGORITHM}, {os.cpu_count()} cpu cores")
        results = {}
        first = timed("first", size, lambda: results.setdefault("first", hashing.file_digest(path)))
        cached = timed("cached", size, lambda: results.setdefault("cached", hashing.file_digest(path)))
        assert results["first"] == results["cached"]
        sha = timed("sha256", size, lambda: sha256_file(path))
        drop_from_page_cache(path)
        os.environ["LF_WRAP_HASH_CACHE"] = "0"
        timed("disk", size, lambda: hashing.file_digest(path))
        print(f"first is {sha / first:.1f}x sha256's speed; the cached call is {first / cached:,.0f}x faster "
              f"than the first ({cached * 1e6:.0f} us)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
