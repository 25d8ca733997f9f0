"""JSON lines, read and written one way: lines end at b"\\n" and nowhere else.

`str.splitlines()` also ends a line at U+2028, U+2029, U+0085, \\x1c-\\x1e and \\r, and
`json.dumps(ensure_ascii=False)` leaves U+2028, U+2029 and U+0085 raw inside strings (JSON allows
them), so a model answer or a reference holding one was split in two and its file called
damaged. Here the bytes are split on b"\\n" only (a \\r before it is dropped: CRLF files read the
same), then each line is decoded and parsed.

Two modes:
- strict (`records`): lf-wrap's own files (predictions, per-row scores, the search's
  ledger) and the user's files it checks (`data add`): a line that is not UTF-8 or not a JSON
  object is an error naming file and line;
- tolerant (`tolerant`): another tool's log (LLaMA-Factory's trainer_log.jsonl): a bad line is
  skipped and counted.

A writer killed mid-line leaves a last line without its newline; `complete` gives the bytes up
to the last whole line and `cut_torn` truncates a file there (the row is written again)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from lf_wrap.core.errors import UserError


def dumps(record: Any, **kwargs) -> str:
    """One line, newline included. UTF-8 stays readable (ensure_ascii=False); a string holding a
    lone surrogate, which UTF-8 cannot encode, is written \\u-escaped and reads back the same."""
    line = json.dumps(record, ensure_ascii=False, **kwargs)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True, **kwargs)
    return line + "\n"


def encode(records) -> bytes:
    """Many records as the bytes of a JSON-lines file."""
    return "".join(dumps(r) for r in records).encode("utf-8")


def complete(data: bytes) -> bytes:
    """`data` up to and including its last newline: a torn last line is left out."""
    return data[:data.rfind(b"\n") + 1]


def split(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, the line's bytes without b"\\n" or a b"\\r" before it); blank lines skipped."""
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            yield number, line


def parse(path: Path, number: int, line: bytes, what: str = "not a JSON object") -> dict:
    """One line as a dict; anything else is an error naming `path:number`."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}:{number}: not UTF-8 text (byte 0x{line[err.start]:02x} at column "
                        f"{err.start + 1}); JSON lines are UTF-8") from None
    except RecursionError:
        raise UserError(f"{path}:{number}: {what} (nested too deeply to read)") from None
    except ValueError as err:           # JSONDecodeError, and int()'s digit limit
        raise UserError(f"{path}:{number}: {what} ({getattr(err, 'msg', None) or err})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}:{number}: {what} (a {type(record).__name__})")
    return record


def records(path: Path, data: bytes) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each line of `data`, strictly."""
    for number, line in split(data):
        yield number, parse(path, number, line)


def tolerant(data: bytes) -> tuple[list[dict], int]:
    """Another tool's log: the lines that are JSON objects, and how many were not."""
    out, bad = [], 0
    for _, line in split(complete(data)):
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            bad += 1
            continue
        if isinstance(record, dict):
            out.append(record)
        else:
            bad += 1
    return out, bad


def cut_torn(handle) -> bool:
    """A file open for reading and writing: cut a last line without its newline (a writer killed
    mid-line); True when something was cut. Callers hold whatever lock keeps writers out."""
    size = os.fstat(handle.fileno()).st_size
    if not size or os.pread(handle.fileno(), 1, size - 1) == b"\n":
        return False
    handle.seek(0)
    keep = len(complete(handle.read()))
    handle.truncate(keep)
    handle.flush()
    os.fsync(handle.fileno())
    return True
