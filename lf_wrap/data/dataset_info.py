"""`dataset_info.json`: LLaMA-Factory's dataset registry, shared with the user.

lf-wrap adds or replaces only entries it wrote itself (an entry is ours when the manifest
beside its file says so), never drops or edits anyone else's, and holds a file lock for the
whole read-check-write so that two `prepare` commands running at once both land."""

from __future__ import annotations

import fnmatch
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_bytes, dump_json

INFO_FILE = "dataset_info.json"
WRITER = "lf-wrap"
MANIFEST_SUFFIX = ".manifest"
NAME_MAX = 255          # bytes in one file name (ext4, APFS, NTFS...)


def data_file_name(name: str) -> str:
    return f"{name}.json"


def manifest_path(dataset_dir: Path, name: str) -> Path:
    return Path(dataset_dir) / f"{name}{MANIFEST_SUFFIX}.json"


def alpaca_entry(file_name: str, system: bool = False, history: bool = False) -> dict:
    """The entry LLaMA-Factory reads an alpaca-format JSON file through (with its `system` and
    `history` columns where the rows have them)."""
    columns = {"prompt": "instruction", "query": "input", "response": "output"}
    if system:
        columns["system"] = "system"
    if history:
        columns["history"] = "history"
    return {"file_name": file_name, "formatting": "alpaca", "columns": columns}


def read_info(dataset_dir: Path) -> dict:
    path = Path(dataset_dir) / INFO_FILE
    if not path.exists():
        return {}
    if not path.is_file():
        raise UserError(f"{path}: not a file; it should hold the folder's dataset entries (a JSON object): "
                        "move it away, lf-wrap will not replace it")
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                        "fix or move it, lf-wrap will not overwrite it") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                        "fix or move it, lf-wrap will not overwrite it") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror})") from None
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


def recorded_task(dataset_dir: Path, pattern: str):
    """The task a registered set was prepared for, as its manifest recorded it (a Task), or None:
    a set lf-wrap did not prepare, or a name that matches no set (its own error comes later)."""
    from lf_wrap.tasks import TASKS, task_from_declaration

    try:
        name = match_name(dataset_dir, pattern, "dataset")
    except UserError:
        return None
    manifest = read_manifest(dataset_dir, name) or {}
    declaration = manifest.get("task_declaration")
    if isinstance(declaration, dict):
        return task_from_declaration(declaration, f"{manifest_path(dataset_dir, name)} (task_declaration)")
    task = manifest.get("task")            # a set prepared before task files: a shipped task's name
    return TASKS.get(task) if isinstance(task, str) else None


def written_by_us(dataset_dir: Path, name: str) -> bool:
    return (read_manifest(dataset_dir, name) or {}).get("written_by") == WRITER


@contextmanager
def locked(dataset_dir: Path) -> Iterator[None]:
    """Hold the folder's lock file for the block (the folder is made if missing). A folder that
    cannot be made or written (read-only, a file in the way) is one UserError, raised before
    anything is written."""
    dataset_dir = Path(dataset_dir)
    lock = FileLock(str(dataset_dir / ".dataset_info.json.lock"), timeout=600)
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise UserError(f"--dataset-dir {dataset_dir}: another lf-wrap command has held {lock.lock_file} for "
                        "10 minutes; try again when it has finished") from None
    except OSError as err:
        raise UserError(f"--dataset-dir {dataset_dir}: cannot write there ({err.filename or lock.lock_file}: "
                        f"{err.strerror}); choose a folder you can write to") from None
    try:
        yield
    finally:
        lock.release()


def check_plain_name(value: str, what: str) -> None:
    """A dataset name becomes `<dataset-dir>/<name>.json`: a plain file name, never a path, and
    one a user can read back in `ls` and type (no newline, tab or other invisible character)."""
    if not value.strip() or "/" in value or "\\" in value or ".." in value or Path(value).is_absolute():
        raise UserError(f"{what} {value!r}: a dataset name must be a plain file name (it becomes "
                        "<dataset-dir>/<name>.json): not empty, no '/', '\\' or '..', not an absolute path")
    if not value.isprintable():
        raise UserError(f"{what} {value!r}: a dataset name may not hold a newline, a tab or another invisible "
                        "character (it becomes <dataset-dir>/<name>.json)")


def check_name(name: str, what: str) -> None:
    """The rules a dataset name obeys whatever the folder holds, checked before anything is read
    or written. Each refused name would write where it must not: `.x` is hidden, `-x` reads as
    an option, `dataset_info` writes its rows over the registry itself (also on a file system
    that ignores case), and `x.manifest` writes its rows where set `x` keeps its manifest."""
    check_plain_name(name, what)
    if name[0] in ".-" or name != name.strip():
        raise UserError(f"{what} {name!r}: a dataset name may not start with '.' (a hidden file) or '-' "
                        "(it reads as an option), nor start or end with a space")
    if f"{name}.json".casefold() == INFO_FILE.casefold():
        raise UserError(f"{what} {name!r}: reserved; {name}.json would overwrite this folder's registry, "
                        f"{INFO_FILE}; choose another {what}")
    if name.casefold().endswith(MANIFEST_SUFFIX.casefold()):
        owner = name[: -len(MANIFEST_SUFFIX)]
        raise UserError(f"{what} {name!r}: {name}.json is where dataset '{owner}' keeps its manifest; a dataset "
                        f"name may not end in '{MANIFEST_SUFFIX}': choose another {what}")
    if len(manifest_path(Path(), name).name.encode("utf-8")) > NAME_MAX:
        raise UserError(f"{what} {name!r}: too long; {name}{MANIFEST_SUFFIX}.json must fit in {NAME_MAX} bytes, "
                        "the longest file name most file systems take")


def _files_of(name: str, entry) -> list[str]:
    """The files in the dataset folder that registered dataset `name` reads or keeps: the data
    file its entry names, and the manifest `prepare` keeps beside it."""
    files = [manifest_path(Path(), name).name]
    if isinstance(entry, dict) and isinstance(entry.get("file_name"), str):
        files.append(os.path.normpath(entry["file_name"]))
    return files


def check_name_free(dataset_dir: Path, name: str, what: str = "--name") -> None:
    """Refuse a name whose files belong to somebody else: another entry's data file or manifest
    (compared without case, as macOS and Windows do), or a file lf-wrap did not write. Call
    under `locked`, and once before to fail early."""
    dataset_dir = Path(dataset_dir)
    info_file = dataset_dir / INFO_FILE
    info = read_info(dataset_dir)
    mine = {f.casefold(): f for f in (data_file_name(name), manifest_path(dataset_dir, name).name)}
    for other, entry in info.items():
        for theirs in _files_of(other, entry) if other != name else ():
            if theirs.casefold() in mine:
                same_case = " (the same file where case is ignored)" if theirs not in mine.values() else ""
                raise UserError(f"{what} {name!r}: it would write {dataset_dir / mine[theirs.casefold()]}, a file of "
                                f"dataset '{other}' in {info_file}{same_case}; choose another {what}")
    ours = written_by_us(dataset_dir, name)
    if name in info and not ours:
        raise UserError(f"{info_file}: an entry named '{name}' already exists and was "
                        f"not written by lf-wrap; choose another {what}")
    for path in (dataset_dir / data_file_name(name), manifest_path(dataset_dir, name)):
        if path.exists() and not ours:
            raise UserError(f"{path} already exists and was not written by lf-wrap; choose another {what}")


def write_set(dataset_dir: Path, name: str, payload: bytes, manifest: dict, entry: dict | None = None) -> None:
    """Write set `name`: its data file, its manifest and its entry (default: alpaca_entry), all
    three or none. Call under `locked`, after `check_name_free`. The new registry is worked out
    (and a registry that is not a JSON object refused) before the first byte is written; the
    three files are then written in full beside their places, hidden, and renamed into place only
    once all three are on disk. A full disk or a Ctrl-C while writing leaves the folder as it was,
    where writing the rows first and registering last left rows with no entry, or a stale manifest
    beside new rows. (Only the three renames, microseconds apart, are not one step.)"""
    dataset_dir = Path(dataset_dir)
    info = read_info(dataset_dir)
    info[name] = entry or alpaca_entry(data_file_name(name))
    writes = [(dataset_dir / data_file_name(name), payload),
              (manifest_path(dataset_dir, name), dump_json(manifest).encode("utf-8")),
              (dataset_dir / INFO_FILE, dump_json(info).encode("utf-8"))]
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in writes:
            stage = path.with_name(f".{path.name}.staged")     # a name no set can have: names never start with '.'
            atomic_write_bytes(stage, data)
            staged.append((stage, path))
        for stage, path in staged:
            os.replace(stage, path)
    finally:
        for stage, _ in staged:
            stage.unlink(missing_ok=True)


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
    entry = info[name]
    if not isinstance(entry, dict):
        raise UserError(f"{Path(dataset_dir) / INFO_FILE}: entry '{name}' must be a JSON object (LLaMA-Factory's "
                        f"dataset entry, with a 'file_name'), got {type(entry).__name__} {json.dumps(entry)[:60]}")
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise UserError(f"{Path(dataset_dir) / INFO_FILE}: entry '{name}' has no 'file_name' (a file name "
                        f"in {dataset_dir}), got {file_name!r}")
    path = Path(dataset_dir) / file_name
    if not path.exists():
        raise UserError(f"dataset '{name}' points to {path}, which does not exist")
    return path
