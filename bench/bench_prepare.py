"""Benchmark: `lf-wrap data prepare` on a 5-million-row wmt19-like Parquet file.

Prints rows/s and the peak RSS of the prepare process. Target on a 2-core machine: under 60 s
and under 1 GB peak RSS (the study samples 6,000 of wmt19's 26 million pairs).

    .venv/bin/python bench/bench_prepare.py [--rows 5000000] [-n 6000]

The generated file is kept in cache/bench/ (ignored by git) and reused."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def make_parquet(path: Path, rows: int, chunk: int = 250_000) -> None:
    schema = pa.schema([("translation", pa.struct([("en", pa.string()), ("zh", pa.string())]))])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, chunk):
            ids = range(start, min(start + chunk, rows))
            pairs = [{"en": f"Sentence number {i} went to the park with a friend.",
                      "zh": f"第{i}个句子和朋友去了公园。"} for i in ids]
            writer.write_table(pa.table({"translation": pairs}, schema=schema))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("-n", type=int, default=6000)
    args = parser.parse_args()
    source = ROOT / "cache" / "bench" / f"wmt19_like_{args.rows}.parquet"
    if not source.exists():
        start = time.monotonic()
        make_parquet(source, args.rows)
        print(f"generated {source} ({source.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - start:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_DATASETS_CACHE": str(Path(tmp) / "hf"), "HF_HUB_OFFLINE": "1"}
        argv = [str(Path(sys.executable).parent / "lf-wrap"), "data", "prepare", "translate",
                "--source", str(source), "--split", "train", "-n", str(args.n), "--dataset-dir", str(Path(tmp) / "ds")]
        start = time.monotonic()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(proc.stdout.strip())
    print(f"prepare: {args.rows:,} source rows, n={args.n}: {seconds:.1f}s wall "
          f"({args.rows / seconds:,.0f} source rows/s), peak RSS {peak_mib:.0f} MiB "
          f"(target < 60 s and < 1024 MiB)")


if __name__ == "__main__":
    main()
