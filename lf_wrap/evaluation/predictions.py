"""Prediction files: one JSONL per (model, task), the contract between generating and scoring.

Each line is one row: `row` (index in the dataset), `id`, `prompt_sha256`, `prediction`,
`references` (a list; [] for an unanswerable question), `finish_reason`, `prompt_tokens`,
`completion_tokens`, `truncated`, `token_ids` (the generated tokens, for exact comparisons:
the text of a half-finished UTF-8 character differs between decoders). `lf-wrap score`
(lf_wrap.evaluation.uncertainty) needs only `prediction` and `references`, so a file made
anywhere else scores the same way.

Lines are appended as batches finish and fsync'ed, so a killed run leaves every finished row on
disk; at most a torn last line, which the next run cuts off. Beside each file,
`<task>.meta.json` records what the lines were generated with; a run whose settings differ
refuses to mix old and new lines unless --force. `<task>.scores.jsonl` holds each row's scores,
rewritten whenever the eval scores the file (lf_wrap.evaluation.uncertainty)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_json
from lf_wrap.tasks import DEFAULT_NO_ANSWER_TEXT, Task

# A saved row is reused only when every key of the meta file is unchanged (the served files by
# content, the dataset, and the whole generation identity, lf_wrap.core.identity), except these,
# which describe the run without deciding an answer: a key added to the meta is compared by
# default, so forgetting to list it can only regenerate, never reuse a stale answer.
NOT_COMPARED = ("model", "task", "model_files", "lf_wrap_version")


def meta_path(predictions: Path) -> Path:
    return Path(predictions).with_suffix(".meta.json")


def scores_path(predictions: Path) -> Path:
    """`<task>.scores.jsonl` beside `<task>.jsonl`: per-row scores, written when the eval scores the file."""
    return Path(predictions).with_suffix(".scores.jsonl")


def decode_lines(path: Path, data: bytes) -> str:
    """A predictions file's bytes as text; a byte that is not UTF-8 is an error naming file, line
    and byte (`lf-wrap score`, and an eval resuming onto the file, read it the same way)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                        "prediction files are UTF-8 JSON lines") from None


def read_meta(predictions: Path) -> dict | None:
    """`<task>.meta.json`, what the file's lines were generated with; None when there is none.
    Anything else than a JSON object is an error naming the meta file: which settings the rows
    came from cannot be told, so they must not be reused as if they matched."""
    path = meta_path(predictions)
    if not path.exists():
        return None
    unreadable = f"{path}: cannot tell what {Path(predictions).name} was generated with"
    hint = "; move it away, or pass --force to regenerate the predictions"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise UserError(f"{unreadable}: cannot read it ({err.strerror}){hint}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{unreadable}: not UTF-8 text (byte at offset {err.start}){hint}") from None
    except ValueError as err:
        raise UserError(f"{unreadable}: not valid JSON ({err}){hint}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{unreadable}: it holds {type(meta).__name__} {json.dumps(meta)[:40]}, not a JSON "
                        f"object{hint}")
    return meta


def read_lines(path: Path) -> list[dict]:
    """Every line as a dict; a malformed line is an error naming file and line number."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read predictions ({err.strerror})") from None
    decode_lines(path, data)
    return [record for _, record in jsonlines.records(path, data)]


def checked(path: Path, records: list[dict], task: Task) -> tuple[list[str], list[list[str]]]:
    """The predictions and reference lists of the records; a malformed line is a UserError naming it."""
    preds, refs = [], []
    for number, record in enumerate(records, 1):
        prediction, references = record.get("prediction"), record.get("references")
        if not isinstance(prediction, str):
            raise UserError(f"{path}: line {number}: 'prediction' must be a string (\"\" for an empty answer)")
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            raise UserError(f"{path}: line {number}: 'references' must be a list of strings")
        if not references and not task.no_answer:
            raise UserError(f"{path}: line {number}: task '{task.name}' needs at least one reference "
                            "([] means unanswerable, for qa or a task scored with squad_v2 only)")
        preds.append(prediction)
        refs.append(references)
    return preds, refs


def default_no_answer_text(path: Path) -> str:
    """The no-answer text the eval recorded beside the file, else the study's default."""
    try:
        meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
        return meta.get("no_answer_text") or DEFAULT_NO_ANSWER_TEXT
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NO_ANSWER_TEXT


def _what_changed(key: str, old: dict, new: dict) -> str:
    """`key=old, now key=new`; for the model's content, which files changed."""
    if key != "model_fingerprint":
        return f"{key}={old.get(key)!r}, now {key}={new.get(key)!r}"
    before, after = old.get("model_files") or {}, new.get("model_files") or {}
    files = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return (f"other model weights or files (content changed: {shown or 'unknown: no file list saved'}; "
            f"fingerprint {str(old.get(key))[:19]}, now {str(new.get(key))[:19]})")


class PredictionFile:
    """An append-only predictions file that knows which rows it already holds."""

    def __init__(self, path: Path, meta: dict, force: bool = False):
        self.path = Path(path)
        self.meta = meta
        self.done: dict[int, str] = {}     # row -> prompt_sha256
        self.repaired = False
        if meta_path(self.path).is_dir():     # neither readable nor replaceable by a rename, even with --force
            raise UserError(f"{meta_path(self.path)}: a folder where lf-wrap keeps what {self.path.name} was "
                            "generated with; move it away")
        # A new (or --force'd) file is only created, or the old one replaced, by the first batch
        # that finishes: a run that fails before generating anything leaves the old file as it was.
        self.fresh = force or not self.path.exists()
        if not self.fresh:
            self._resume()

    def _resume(self) -> None:
        old_meta = read_meta(self.path)
        who = f"model '{self.meta['model']}': " if self.meta.get("model") else ""
        if old_meta is None and self.path.stat().st_size > 0:
            raise UserError(f"{who}{self.path}: its {meta_path(self.path).name}, which records what the rows were "
                            "generated with, is missing; its rows are not reused. Pass --force to regenerate them, "
                            "or --out for a new folder")
        old_meta = old_meta or {}
        changed = [k for k in self.meta if k not in NOT_COMPARED and old_meta.get(k) != self.meta.get(k)]
        if changed and self.path.stat().st_size > 0:
            raise UserError(f"{who}{self.path} was generated with "
                            f"{_what_changed(changed[0], old_meta, self.meta)}; its rows are not reused. Pass --force "
                            "to regenerate them, or --out for a new folder")
        keep = self.path.read_bytes()
        if keep and not keep.endswith(b"\n"):      # a line torn by a kill: cut, the row is generated again
            with open(self.path, "r+b") as handle:
                self.repaired = jsonlines.cut_torn(handle)
            keep = jsonlines.complete(keep)
        decode_lines(self.path, keep)
        first_line: dict[int, int] = {}
        for number, line in jsonlines.split(keep):
            try:
                record = json.loads(line)
                row = int(record["row"])
                self.done[row] = record["prompt_sha256"]
            except (ValueError, KeyError, TypeError, RecursionError):
                raise UserError(f"{self.path}:{number}: not a line lf-wrap wrote; move the file away or "
                                "pass --force to regenerate it") from None
            if row in first_line:      # scored twice, it would count twice in every metric
                raise UserError(f"{self.path}:{number}: row {row} appears twice (also line {first_line[row]}); "
                                "pass --force to regenerate the file")
            first_line[row] = number
        atomic_write_json(meta_path(self.path), self.meta)

    def check_prompts(self, expected: dict[int, str]) -> None:
        """Every row on disk must come from the prompt this run would send for it."""
        for row, digest in self.done.items():
            if expected.get(row, digest) != digest:
                raise UserError(f"{self.path}: row {row} was generated from another prompt (dataset or "
                                "template changed); pass --force to regenerate the file")

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        payload = jsonlines.encode(records)
        if self.fresh:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(meta_path(self.path), self.meta)
        with open(self.path, "wb" if self.fresh else "ab") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        self.fresh = False
        for record in records:
            self.done[record["row"]] = record["prompt_sha256"]
