"""The process a metric of your own runs in: `python fenced.py PATH FUNCTION FD SHOWN`, started by
lf_wrap.scoring.custom, with the standard library only (the user's file imports what it needs).

Why a process: a metric is the user's code, called in lf-wrap's own process it could end that
process (`sys.exit`), move its working directory (`os.chdir`: the eval's files then land
elsewhere) or never return. Here `sys.exit`, a `KeyboardInterrupt` it raises and any other
exception become a message for the parent; a changed working directory is reported (and
undone) after the call that changed it; the parent kills this process when a row outruns its
time limit, or when lf-wrap itself is stopped. Ctrl-C is ignored here: it reaches lf-wrap too,
which decides.

One socket to the parent (multiprocessing.connection, pickled tuples):

    child  -> ("ready", description) | ("refused", message)      once, after loading the file
    parent -> ("rows", predictions, references)
    child  -> ("row", float) for each row, or ("failed", message) and the batch stops there"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import sys
from multiprocessing.connection import Connection
from numbers import Real
from pathlib import Path

AGGREGATIONS = ("mean", "median")
DEFAULT_TIME_LIMIT = 60.0     # seconds per row; docs/tasks.md says why


def _fenced(call):
    """(result, None), or (None, what went wrong) for anything the call raised, exits included."""
    try:
        return call(), None
    except SystemExit as err:
        return None, f"called sys.exit({err.code!r})"
    except BaseException as err:  # noqa: BLE001 - the user's code: every way out is reported
        return None, f"raised {type(err).__name__}" + (f": {err}" if str(err) else "")


def _moved(start: str) -> str | None:
    """What the call did to the working directory, undone; None when it left it alone."""
    try:
        now = os.getcwd()
    except OSError:
        now = "(a folder that no longer exists)"
    if now == start:
        return None
    os.chdir(start)
    return f"changed the working directory to {now!r} (a metric must leave it alone)"


def _describe(function, name: str, shown: str) -> dict | str:
    """The function's attributes, checked: a description, or what is wrong with them."""
    if function is None:
        return f"{shown} has no function '{name}'"
    if not callable(function) or isinstance(function, type):
        return f"'{name}' in {shown} is a {type(function).__name__}, not a function"
    higher = getattr(function, "higher_is_better", True)
    aggregation = getattr(function, "aggregation", "mean")
    limit = getattr(function, "time_limit", DEFAULT_TIME_LIMIT)
    if not isinstance(higher, bool):
        return f"{name}.higher_is_better must be True or False, not {higher!r}"
    if not isinstance(aggregation, str) or aggregation not in AGGREGATIONS:
        return f"{name}.aggregation must be one of {', '.join(AGGREGATIONS)}, not {aggregation!r}"
    if isinstance(limit, bool) or not isinstance(limit, Real) or not math.isfinite(limit) or limit <= 0:
        return f"{name}.time_limit must be a positive number of seconds, not {limit!r}"
    doc = getattr(function, "__doc__", None)
    return {"higher_is_better": higher, "aggregation": aggregation, "time_limit": float(limit),
            "doc": (doc if isinstance(doc, str) else "").strip().split("\n")[0]}


def _load(path: Path, name: str, shown: str, start: str) -> tuple[object, dict | str]:
    spec = importlib.util.spec_from_file_location("lf_wrap_user_metric", path)
    if spec is None or spec.loader is None:
        return None, f"{path} cannot be loaded as a Python file"
    module = importlib.util.module_from_spec(spec)
    _, failed = _fenced(lambda: spec.loader.exec_module(module))
    moved = _moved(start)
    if failed or moved:
        return None, f"loading {path} {failed or moved}"
    function = getattr(module, name, None)
    return function, _describe(function, name, shown)


def _score(function, prediction: str, references: list[str], start: str) -> tuple[str, object]:
    value, failed = _fenced(lambda: function(prediction, references))
    failed = failed or _moved(start)
    if failed:
        return "failed", failed
    if not isinstance(value, Real) or isinstance(value, complex):
        return "failed", f"returned {type(value).__name__} {str(value)[:40]!r}, not a number"
    if not math.isfinite(value):
        return "failed", f"returned {value}, not a finite number"
    return "row", float(value)


def main(path: str, name: str, fd: str, shown: str) -> None:
    """Load `name` from the file at `path` (`shown`: the path as the user wrote it, for messages),
    then score each batch the parent sends on descriptor `fd`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(fd))
    start = os.getcwd()
    function, description = _load(Path(path), name, shown, start)
    conn.send(("ready", description) if isinstance(description, dict) else ("refused", description))
    if not isinstance(description, dict):
        return
    while True:
        try:
            _, predictions, references = conn.recv()
        except EOFError:                      # lf-wrap closed its end: nothing more to score
            return
        for prediction, refs in zip(predictions, references):
            kind, value = _score(function, prediction, list(refs), start)
            conn.send((kind, value))
            if kind == "failed":
                break


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]                       # this folder's modules must not shadow the user's imports
    main(*sys.argv[1:5])
