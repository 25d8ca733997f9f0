"""`lf-wrap data add`: register a set the user already has, in one of LLaMA-Factory's formats.

The file (a JSON array or JSON Lines) is checked row by row the way LLaMA-Factory will read it,
so that a bad row is one error naming its line (JSON Lines) or index (an array) and its key, not
a `datasets` traceback after a minute of loading. The rows are then written as a JSON array into
the dataset folder with a manifest and their `dataset_info.json` entry, all three or none, as
`data prepare` writes them (lf_wrap.data.dataset_info); with --task the manifest records the
task's declaration, so that eval and the search find the task from the set alone.

    alpaca:   {"instruction": str, "output": str, "input"?: str, "system"?: str,
               "history"?: [[str, str], ...], "answers"?: [str, ...]}   (other keys are ignored)
    sharegpt: {"conversations": [{"from": "human"|"gpt"|..., "value": str}, ...], "system"?: str,
               "tools"?: str}"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import dump_json, sha256_file
from lf_wrap.core.manifest import HEADER_KEYS, StageRecord
from lf_wrap.data import dataset_info as registry
from lf_wrap.tasks import find_task

FORMATS = ("alpaca", "sharegpt")
USER_ROLES = ("human", "observation")
ASSISTANT_ROLES = ("gpt", "function_call")


@dataclass
class AddResult:
    name: str
    data_file: Path
    manifest: dict
    skipped: bool = False


class _RowProblem(ValueError):
    """What is wrong with one row; the message starts with the key."""


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON (LLaMA-Factory's reader refuses it); write a number or a string")


def _no_duplicates(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key '{key}' appears twice in one object (JSON readers keep only one of them)")
    return out


def _loads(text: str):
    """json.loads, with NaN/Infinity and a key given twice refused: what lf-wrap writes must read
    back as the same rows in LLaMA-Factory."""
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)


def _malformed(where: str, what: str, err: Exception) -> UserError:
    message = getattr(err, "msg", None) or str(err)
    if isinstance(err, RecursionError):
        message = "nested too deeply to read"
    return UserError(f"{where}: malformed {what} ({message})")


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for each row of a JSON array or a JSON Lines file (UTF-8, a BOM allowed; lines
    end at \n only, so U+2028 or U+0085 inside a string stays inside it)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    if text.lstrip().startswith("["):
        try:
            rows = _loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
        except (ValueError, RecursionError) as err:
            raise _malformed(str(path), "JSON", err) from None
        if not isinstance(rows, list):
            raise UserError(f"{path}: a JSON array of rows, or one JSON object per line, was expected")
        return [(f"{path}: row {i} (0-based index in the array)", row) for i, row in enumerate(rows)]
    out = []
    for lineno, line in jsonlines.split(text.encode("utf-8")):
        try:
            out.append((f"{path}:{lineno}", _loads(line.decode("utf-8"))))
        except (ValueError, RecursionError) as err:
            raise _malformed(f"{path}:{lineno}", "JSON line", err) from None
    return out


def _string(row: dict, key: str, required: bool) -> None:
    if key not in row:
        if required:
            raise _RowProblem(f"key '{key}': missing")
        return
    if not isinstance(row[key], str):
        raise _RowProblem(f"key '{key}': must be a string, got {type(row[key]).__name__}")


def check_alpaca(row: dict) -> None:
    _string(row, "instruction", True)
    _string(row, "output", True)
    for key in ("input", "system"):
        _string(row, key, False)
    history = row.get("history")
    if history is not None and not (isinstance(history, list) and all(
            isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn) for turn in history)):
        raise _RowProblem("key 'history': must be a list of [query, response] string pairs")
    answers = row.get("answers")
    if answers is not None and not (isinstance(answers, list) and all(isinstance(a, str) for a in answers)):
        raise _RowProblem("key 'answers': must be a list of strings (every reference)")


def check_sharegpt(row: dict) -> None:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _RowProblem("key 'conversations': "
                          + ("missing" if turns is None else "must be a non-empty list of turns"))
    for key in ("system", "tools"):
        _string(row, key, False)
    first = 0                    # a leading system turn: the others keep their place in the row's list
    if isinstance(turns[0], dict) and turns[0].get("from") == "system":
        turns, first = turns[1:], 1
    if not turns:
        raise _RowProblem("key 'conversations': a system turn alone; a row needs a human turn and a gpt turn")
    for i, turn in enumerate(turns):
        where = f"key 'conversations.{i + first}"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _RowProblem(f"{where}.value': each turn is an object with 'from' and a string 'value'")
        roles = USER_ROLES if i % 2 == 0 else ASSISTANT_ROLES
        if turn.get("from") not in roles:
            raise _RowProblem(f"{where}.from': {turn.get('from')!r}; turn {i} must be one of {', '.join(roles)} "
                              "(turns alternate human/observation and gpt/function_call)")
    if len(turns) % 2:
        raise _RowProblem("key 'conversations': the last turn must be the assistant's (gpt or function_call)")


def entry_for(fmt: str, file_name: str, rows: list[dict]) -> dict:
    """The dataset_info.json entry LLaMA-Factory reads the rows through."""
    if fmt == "alpaca":
        return registry.alpaca_entry(file_name, system=any("system" in r for r in rows),
                                     history=any("history" in r for r in rows))
    columns = {"messages": "conversations"}
    columns.update({key: key for key in ("system", "tools") if any(key in r for r in rows)})
    return {"file_name": file_name, "formatting": "sharegpt", "columns": columns}


def add(file: Path, name: str, dataset_dir: Path = Path("dataset_info"), fmt: str | None = None,
        task_ref: str | None = None) -> AddResult:
    record = StageRecord("add")
    file = Path(file)
    registry.check_name(name, "--name")
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    task = find_task(task_ref, what="--task") if task_ref is not None else None
    if not file.is_file():
        raise UserError(f"{file}: no such file")
    rows = read_rows(file)
    if not rows:
        raise UserError(f"{file}: no rows")
    if fmt is None:
        first = rows[0][1]
        fmt = "sharegpt" if isinstance(first, dict) and "conversations" in first else "alpaca"
    check = check_alpaca if fmt == "alpaca" else check_sharegpt
    for where, row in rows:
        if not isinstance(row, dict):
            raise UserError(f"{where}: a {fmt} row is a JSON object, got {type(row).__name__}")
        try:
            check(row)
        except _RowProblem as err:
            raise UserError(f"{where}: {err} ({fmt} format)") from None
    dataset_dir = Path(dataset_dir)
    registry.read_info(dataset_dir)
    registry.check_name_free(dataset_dir, name)
    data = [row for _, row in rows]
    payload = dump_json(data).encode("utf-8")
    data_file = dataset_dir / registry.data_file_name(name)
    entry = entry_for(fmt, data_file.name, data)
    body = {"written_by": registry.WRITER, "task": task.name if task else None,
            "task_file": task.origin if task else None, "source": str(file.resolve()),
            "source_sha256": sha256_file(file), "format": fmt, "rows_written": len(data),
            "file_name": data_file.name, "task_declaration": task.recorded() if task and task.spec else None,
            "sha256": hashlib.sha256(payload).hexdigest()}
    with registry.locked(dataset_dir):
        registry.check_name_free(dataset_dir, name)
        previous = registry.read_manifest(dataset_dir, name)
        if previous is not None and previous.get("stage") not in (None, "add"):
            raise UserError(f"--name {name}: {dataset_dir / registry.data_file_name(name)} is a set `lf-wrap data "
                            f"{previous.get('stage')}` wrote ({previous.get('rows_written')} rows from "
                            f"{previous.get('source')}); data add replaces only sets it added itself: choose another "
                            "--name, or delete that set first")
        same = previous is not None and {k: v for k, v in previous.items() if k not in HEADER_KEYS} == body
        if same and registry.read_info(dataset_dir).get(name) == entry and data_file.is_file() \
                and sha256_file(data_file) == body["sha256"]:
            return AddResult(name, data_file, previous, skipped=True)
        manifest = record.manifest(body)
        manifest.update(record.finish())
        registry.write_set(dataset_dir, name, payload, manifest, entry)
    return AddResult(name, data_file, manifest)


def summary(result: AddResult) -> str:
    m = result.manifest
    if result.skipped:
        return f"{result.data_file}: unchanged ({m['rows_written']} rows); '{result.name}' already registered"
    task = f", task '{m['task']}'" if m.get("task") else ""
    return (f"wrote {result.data_file} ({m['rows_written']} {m['format']} rows, checked{task}); registered "
            f"'{result.name}' in {result.data_file.parent / registry.INFO_FILE}")
