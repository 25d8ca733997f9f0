"""Writes that never leave a half-written file or folder behind.

Every output lf-wrap produces (instruction sets, dataset_info.json, manifests, adapters,
merged models, predictions) goes to a temporary name beside its destination first and is
renamed into place, so a crash or Ctrl-C leaves either the old file or the new one."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lf_wrap.core.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder. The file gets the
    usual permissions (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dump_json(obj: Any) -> str:
    """The one JSON layout lf-wrap writes: UTF-8 (Chinese stays readable), indent 2, newline. A
    string with a lone surrogate, which UTF-8 cannot encode, makes the file \\u-escaped instead."""
    text = json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, indent=2) + "\n"
    return text


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dump_json(obj))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(folder: Path) -> str:
    """One hash for a folder (an adapter, a model): names and contents of all its files."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- what an output may replace


def _relation(out: Path, other: Path) -> str | None:
    out, other = Path(out).resolve(), Path(other).resolve()
    if out == other:
        return "is"
    if out.is_relative_to(other):
        return "lies inside"
    if other.is_relative_to(out):
        return "contains"
    return None


def check_output_folder(out: Path, option: str, inputs: dict[str, Path]) -> None:
    """An output folder may not be, contain, or lie inside any input (an adapter, the base model,
    a dataset, a run folder): lf-wrap never writes over, or deletes, what it reads."""
    for label, path in inputs.items():
        if path is None or not Path(path).exists():
            continue
        relation = _relation(out, path)
        if relation is not None:
            raise UserError(f"{option} {out} {relation} {label} ({path}); lf-wrap never writes over its inputs: "
                            f"choose another {option}")


def check_replaceable(dest: Path, manifest: str, stage: str, option: str = "--out",
                      outputs: tuple[str, ...] | None = None, inputs: dict[str, Path] | None = None,
                      also: tuple[str, ...] = ()) -> None:
    """`--force` replaces only lf-wrap's own earlier output of the same kind, and nothing else:
      - `dest/manifest` carries lf-wrap's manifest header for `stage` (`stage` and
        `lf_wrap_version` keys): anyone's `manifest.json`, or an output of another stage, is not one;
      - every entry in the folder is one the stage writes: `outputs` (shell patterns), else the
        `files` list the manifest recorded (and `also`); names starting with "." are lf-wrap's temporaries and
        locks. Anything else (a recipe kept there, a user's notes) is named in the refusal;
      - no input of this run (`inputs`: a recipe it reads, ...) lies inside it."""
    dest = Path(dest)
    if not dest.exists():
        return
    refuse = (f"--force replaces only lf-wrap's own earlier output: move it away or choose another {option}")
    if not dest.is_dir():
        raise UserError(f"{option} {dest} exists and is a file, not an lf-wrap {stage} output; {refuse}")
    try:
        written = json.loads((dest / manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        written = None
    if not isinstance(written, dict) or written.get("stage") != stage or "lf_wrap_version" not in written:
        what = (f"its {manifest} is lf-wrap's {written['stage']} output" if isinstance(written, dict)
                and isinstance(written.get("stage"), str) and "lf_wrap_version" in written
                else f"no {manifest} with lf-wrap's header saying so")
        raise UserError(f"{option} {dest} exists and is not an lf-wrap {stage} output ({what}); {refuse}")
    for label, path in (inputs or {}).items():
        if path is not None and _relation(dest, path) == "contains":
            raise UserError(f"{option} {dest} holds {label} ({path}), which this run reads; --force would delete "
                            f"it: move it out of {dest} or choose another {option}")
    if outputs is None:
        listed = written.get("files")
        if not isinstance(listed, list):
            return
        outputs = (manifest, *also, *(str(n) for n in listed))
    foreign = sorted(p.name for p in dest.iterdir()
                     if not p.name.startswith(".") and not any(fnmatch.fnmatch(p.name, pat) for pat in outputs))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"{option} {dest} holds files lf-wrap did not write ({shown}); --force would delete them: "
                        f"move them away or choose another {option}")


# ---------------------------------------------------------------- whole folders


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}."


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(dest: Path) -> list[str]:
    """Remove what an atomic_directory for `dest` left when its process was killed (kill -9, a
    lost node): `.<name>.<pid>.<random>.tmp` folders whose process is gone, and `.<name>.old`
    once `dest` is in place (restored to `dest` if the kill came between the two renames).
    Returns one line per folder handled, for the caller to report."""
    dest = Path(dest)
    said: list[str] = []
    if not dest.parent.is_dir():
        return said
    for tmp in dest.parent.glob(f"{_tmp_prefix(dest)}*.tmp"):
        pid_text = tmp.name[len(_tmp_prefix(dest)):].split(".", 1)[0]
        if not tmp.is_dir() or not pid_text.isdigit() or _owner_alive(int(pid_text)):
            continue
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        shutil.rmtree(tmp, ignore_errors=True)
        said.append(f"removed {tmp}, a temporary folder left by an interrupted run (process {pid_text}, "
                    f"{size / 2**30:.2f} GiB)")
    old = dest.with_name(f".{dest.name}.old")
    if old.is_dir():
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            said.append(f"removed {old}, the previous output an interrupted run had moved aside")
        else:
            os.replace(old, dest)
            said.append(f"restored {dest} from {old}, where an interrupted run had moved it aside")
    return said


@contextmanager
def atomic_directory(dest: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `dest`; on success it replaces `dest` in one rename.

    Without `force` an existing `dest` is an error raised before any work starts; with it the
    old folder is moved aside and removed only after the new one is in place. A `dest` that is a
    symlink stands for the folder it points to: that folder is replaced, the link kept."""
    dest = Path(dest)
    if dest.is_symlink():
        dest = dest.resolve()
    if dest.exists() and not force:
        raise UserError(f"{dest} already exists; pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix(dest)}{os.getpid()}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
