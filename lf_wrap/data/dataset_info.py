"""`dataset_info.json`: LLaMA-Factory's dataset registry, shared with the user.

lf-wrap adds or replaces only entries it wrote itself (an entry is ours when the manifest
beside its file says so), never drops or edits anyone else's, and holds a file lock for the
whole read-check-write so that two `prepare` commands running at once both land."""

from __future__ import annotations

import fnmatch
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_json

INFO_FILE = "dataset_info.json"
WRITER = "lf-wrap"


def manifest_path(dataset_dir: Path, name: str) -> Path:
    return Path(dataset_dir) / f"{name}.manifest.json"


def alpaca_entry(file_name: str) -> dict:
    """The entry LLaMA-Factory reads an alpaca-format JSON file through."""
    return {
        "file_name": file_name,
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }


def read_info(dataset_dir: Path) -> dict:
    path = Path(dataset_dir) / INFO_FILE
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                        "fix or move it, lf-wrap will not overwrite it") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: must hold a JSON object of dataset entries")
    return info


def read_manifest(dataset_dir: Path, name: str) -> dict | None:
    """The manifest `data prepare` wrote beside dataset `name`, or None (a set lf-wrap did not
    prepare, or an unreadable manifest). The one reader: training records it, eval takes the
    no-answer text from it."""
    try:
        manifest = json.loads(manifest_path(dataset_dir, name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def written_by_us(dataset_dir: Path, name: str) -> bool:
    return (read_manifest(dataset_dir, name) or {}).get("written_by") == WRITER


@contextmanager
def locked(dataset_dir: Path) -> Iterator[None]:
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dataset_dir / ".dataset_info.json.lock"), timeout=600):
        yield


def check_name_free(dataset_dir: Path, name: str, file_name: str) -> None:
    """Refuse a name (or a data file) that belongs to somebody else. Call under `locked`."""
    info = read_info(dataset_dir)
    ours = written_by_us(dataset_dir, name)
    if name in info and not ours:
        raise UserError(f"{Path(dataset_dir) / INFO_FILE}: an entry named '{name}' already exists and was "
                        "not written by lf-wrap; choose another --name")
    if (Path(dataset_dir) / file_name).exists() and not ours:
        raise UserError(f"{Path(dataset_dir) / file_name} already exists and was not written by lf-wrap; "
                        "choose another --name")


def register(dataset_dir: Path, name: str, entry: dict) -> None:
    """Add or replace our entry `name`, keeping every other entry as it was. Call under `locked`."""
    info = read_info(dataset_dir)
    info[name] = entry
    atomic_write_json(Path(dataset_dir) / INFO_FILE, info)


def match_name(dataset_dir: Path, pattern: str, where: str) -> str:
    """The registered name `pattern` stands for: the name itself, or the one name a shell
    pattern matches (`alpaca_wmt19_zh-en_validation_*`: how many rows the keyword filter keeps
    is known only after `make data`). Case-sensitive, as dataset names are file names. The one
    resolver for training, eval and search recipes."""
    info = read_info(dataset_dir)
    info_file = Path(dataset_dir) / INFO_FILE
    if pattern in info or not any(ch in pattern for ch in "*?["):
        return pattern
    matches = sorted(n for n in info if fnmatch.fnmatchcase(n, pattern))
    if len(matches) != 1:
        found = ", ".join(matches) if matches else f"none; registered: {', '.join(sorted(info)) or 'none'}"
        raise UserError(f"{where}: dataset pattern '{pattern}' matches {len(matches)} names in {info_file} "
                        f"({found}); it must match exactly one dataset")
    return matches[0]


def resolve_dataset(dataset_dir: Path, name: str) -> Path:
    """The data file behind a registered dataset name, or a clear error."""
    info = read_info(dataset_dir)
    if name not in info:
        known = ", ".join(sorted(info)) or "none"
        raise UserError(f"dataset '{name}' is not in {Path(dataset_dir) / INFO_FILE} (registered: {known})")
    file_name = info[name].get("file_name")
    if not file_name:
        raise UserError(f"{Path(dataset_dir) / INFO_FILE}: entry '{name}' has no 'file_name'")
    path = Path(dataset_dir) / file_name
    if not path.exists():
        raise UserError(f"dataset '{name}' points to {path}, which does not exist")
    return path
