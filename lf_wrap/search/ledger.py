"""Every score the search has computed, one JSON line each, in `<search>/scores.jsonl`: what lets
a killed search go on without scoring a finished candidate again.

A line is {identity, rows ("search" | "report"), key, candidate, metrics, per_row, seconds}:
per_row holds each task's per-row scores (for lower bounds and intervals) and, for the report
rows, each row's prediction. A line is reused only
when its identity is this search's: a digest of the base model's and every adapter's content
(in the search's order), both sets of rows (ids and prompt hashes), the datasets' sha256, the
template's rendering, the generation settings, the stop tokens and the lf-wrap version. Lines
are appended and fsynced one at a time; a torn last line (a kill while writing) is ignored and
cut off before the next append."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lf_wrap.core.files import dump_json

LEDGER = "scores.jsonl"
FORMAT = 2          # part of every identity: lines of another format are never reused


def identity(parts: dict) -> str:
    return hashlib.sha256(dump_json({"ledger_format": FORMAT, **parts}).encode("utf-8")).hexdigest()


class Ledger:
    def __init__(self, folder: Path, identity: str):
        self.path = Path(folder) / LEDGER
        self.identity = identity
        self.entries: dict[tuple[str, str], dict] = {}
        self.foreign = 0                       # lines of another identity (ignored)
        self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except ValueError:
                break                           # a torn last line: everything after it is cut
            if not line.endswith(b"\n"):
                break
            good += len(line)
            if entry.get("identity") != self.identity:
                self.foreign += 1
                continue
            self.entries[(entry["rows"], entry["key"])] = entry
        if good < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def get(self, rows: str, key: str) -> dict | None:
        return self.entries.get((rows, key))

    def add(self, entry: dict) -> dict:
        entry = {"identity": self.identity, **entry}
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.entries[(entry["rows"], entry["key"])] = entry
        return entry
