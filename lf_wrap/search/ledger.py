"""Every score the search has computed, one JSON line each, in `<search>/scores.jsonl`: what lets
a killed search go on without scoring a finished candidate again.

A line is {identity, rows ("search" | "report"), key, candidate, metrics, per_row, seconds}:
per_row holds each task's per-row scores (for lower bounds and intervals) and, for the report
rows, each row's prediction. A line is reused only
when its identity is this search's: a digest of the base model's and every adapter's content
(in the search's order), both sets of rows (ids and prompt hashes), the datasets' sha256, the
template's rendering, the generation settings, the stop tokens and the lf-wrap version. Lines
are appended and fsynced one at a time, so only the last line can be torn (a kill while
writing): it is cut off before the next append. A damaged line anywhere else is refused with
its line number, never skipped or cut: the lines after it are scores, and dropping them would
change the leaderboard without a word. A line deleted by hand is simply scored again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import dump_json

LEDGER = "scores.jsonl"
FORMAT = 2          # part of every identity: lines of another format are never reused
# What the search reads of its own lines; a line of this search without them cannot be used.
FIELDS = {"rows": str, "key": str, "metrics": dict, "per_row": dict}


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
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise UserError(f"{self.path}: not a file; it should hold the search's scores (one JSON line each): "
                            "move it away, and the scores are computed again")
        data = self.path.read_bytes()
        lines = data.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):
            with open(self.path, "r+b") as handle:      # a torn last line (a kill while writing)
                handle.truncate(len(data) - len(lines[-1]))
            lines.pop()
        for number, line in enumerate(lines, 1):
            if line.strip():
                self._take(number, line)

    def _take(self, number: int, line: bytes) -> None:
        try:
            entry = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            self._refuse(number, "not UTF-8 text")
        except ValueError as err:
            self._refuse(number, f"not a JSON object ({err})")
        if not isinstance(entry, dict):
            self._refuse(number, f"not a JSON object (a {type(entry).__name__})")
        if entry.get("identity") != self.identity:
            self.foreign += 1
            return
        for name, kind in FIELDS.items():
            if not isinstance(entry.get(name), kind):
                self._refuse(number, f"a score of this search without a valid '{name}'")
        if entry["rows"] not in ("search", "report") or not isinstance(entry.get("candidate"), (dict, type(None))):
            self._refuse(number, "a score of this search with invalid 'rows' or 'candidate'")
        self.entries[(entry["rows"], entry["key"])] = entry

    def _refuse(self, number: int, what: str):
        raise UserError(f"{self.path}:{number}: {what}; the other lines hold scores the search reuses, so nothing "
                        "was cut: delete or fix that line (a deleted score is computed again) and run the same "
                        "command")

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
