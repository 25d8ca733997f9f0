"""Every score the search has computed, one JSON line each, in `<search>/scores.jsonl`: what lets
a killed search go on without scoring a finished candidate again.

A line is {identity, rows ("search" | "report"), key, candidate, metrics, per_row, seconds}:
per_row holds each task's per-row scores (for lower bounds and intervals) and, for the report
rows, each row's prediction. A candidate scored in stages (lf_wrap.search.pruning) has a line
per stage marked `partial`, each holding every search row scored so far: per_row[task] is then
{rows: the indices of the task's search rows scored, row_scores: theirs}, metrics only the tasks
scored whole, `parts` the stages' names; its last stage writes a plain line. A line without
`partial` (every line of an older ledger) is a whole score, as before. A line is reused only
when its identity is this search's: a digest of the base model's and every adapter's content
(in the search's order), both sets of rows (ids and prompt hashes), the datasets' sha256, the
template's rendering, the generation settings, the stop tokens and the lf-wrap version. Lines
are appended and fsynced one at a time, so only the last line can be torn (a kill while
writing): it is cut off before the next append. A damaged line anywhere else is refused with
its line number, never skipped or cut: the lines after it are scores, and dropping them would
change the leaderboard without a word. A line deleted by hand is simply scored again.

Several workers of one shared search (lf_wrap.search.workers) write one ledger: each append
holds an exclusive flock on the file (a torn last line, left by a worker killed mid-write, is
cut under that lock, never while another worker is writing), `refresh` takes the complete lines
the others appended since the last read, and a worker about to score a candidate first claims
it (a flock on `workers/claims/<digest>.lock`, held while it scores): a candidate another worker
is scoring is waited for and reused, and a claim of a killed worker is free at once (the kernel
drops its locks), so its candidate is scored by the next worker that needs it. A line of a
shared search names the worker that wrote it ("worker")."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from lf_wrap.core import jsonlines
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import dump_json
from lf_wrap.core.locks import held

LEDGER = "scores.jsonl"
FORMAT = 2          # part of every identity: lines of another format are never reused
# What the search reads of its own lines; a line of this search without them cannot be used.
FIELDS = {"rows": str, "key": str, "metrics": dict, "per_row": dict}


def identity(parts: dict) -> str:
    return hashlib.sha256(dump_json({"ledger_format": FORMAT, **parts}).encode("utf-8")).hexdigest()


class Ledger:
    def __init__(self, folder: Path, identity: str, worker: str | None = None):
        self.path = Path(folder) / LEDGER
        self.identity = identity
        self.worker = worker                   # a shared search's worker id: claims and a "worker" key per line
        self.claims = Path(folder) / "workers" / "claims"
        self.entries: dict[tuple[str, str], dict] = {}
        self.partials: dict[tuple[str, str], dict] = {}     # candidates scored on some stages only
        self.foreign = 0                       # lines of another identity (ignored)
        self._offset = self._lines = 0         # what has been read: bytes, lines
        self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise UserError(f"{self.path}: not a file; it should hold the search's scores (one JSON line each): "
                            "move it away, and the scores are computed again")
        try:                   # opened for writing: NFS carries an exclusive flock only on such a descriptor
            handle = open(self.path, "r+b")
        except PermissionError:               # a read-only ledger: read (a torn last line is never read)
            handle = None
        if handle is not None:
            with handle:
                fcntl.flock(handle, fcntl.LOCK_EX)     # no worker is writing a line while it is cut
                jsonlines.cut_torn(handle)
        self.refresh()

    def refresh(self) -> int:
        """Take the complete lines appended since the last read (by other workers too): how many."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return 0
        data = jsonlines.complete(data)       # a line being written is read once it is whole
        lines = data.count(b"\n")
        for number, line in jsonlines.split(data):
            self._take(self._lines + number, line)
        self._lines += lines
        self._offset += len(data)
        return lines

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
        self._keep(entry)

    def _keep(self, entry: dict) -> None:
        """A whole score replaces any partial one; a partial one never replaces a whole one."""
        where = (entry["rows"], entry["key"])
        if not entry.get("partial"):
            self.entries[where] = entry
            self.partials.pop(where, None)
        elif where not in self.entries:
            self.partials[where] = entry

    def _refuse(self, number: int, what: str):
        raise UserError(f"{self.path}:{number}: {what}; the other lines hold scores the search reuses, so nothing "
                        "was cut: delete or fix that line (a deleted score is computed again) and run the same "
                        "command")

    def get(self, rows: str, key: str) -> dict | None:
        """The whole score of `key` on these rows (a partial one is `partial`'s)."""
        return self.entries.get((rows, key))

    def partial(self, rows: str, key: str) -> dict | None:
        """The score of a candidate scored on some stages only (pruned, or stopped mid-way)."""
        return self.partials.get((rows, key))

    def add(self, entry: dict) -> dict:
        entry = {"identity": self.identity, **entry, **({"worker": self.worker} if self.worker else {})}
        line = jsonlines.dumps(entry, sort_keys=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)        # one append at a time, whichever worker
            jsonlines.cut_torn(handle)
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        self._keep(entry)
        return entry

    @contextmanager
    def claim(self, rows: str, keys: list[str]) -> Iterator[list[str]]:
        """The keys this process may score now, claimed for the block: all of them in a single run;
        in a shared search those no other worker is scoring (each claim a flock, dropped by the
        kernel if this process dies)."""
        if self.worker is None:
            yield list(keys)
            return
        with ExitStack() as stack:
            yield [k for k in keys if stack.enter_context(held(self._claim_file(rows, k), wait=False)) is not None]

    def wait(self, rows: str, key: str) -> None:
        """Until the worker scoring `key` has written it or died (its claim is then free)."""
        with held(self._claim_file(rows, key)):
            pass
        self.refresh()

    def _claim_file(self, rows: str, key: str) -> Path:
        return self.claims / f"{hashlib.sha256(f'{rows}/{key}'.encode()).hexdigest()[:24]}.lock"

