"""Reading one source split: a Hub id through `datasets.load_dataset`, or local files of the
same schema (JSON array, JSON Lines, Parquet, Arrow, a folder of them, a `save_to_disk` folder).

Everything a user can fix ends as one `UserError` naming the source: a Hub id that cannot be
reached or is not cached, an empty file, malformed JSON (file and line). A bad row found later
is located the way the user can find it: the file and line (1-based) of a JSON Lines source,
else the row's 0-based index in the split.

Local files are known by content, not by path and time. `datasets` keys its Arrow copy of a
local file by path, size and modification time, so a file edited in place with its time set
back (`touch -r`, `cp -p`, a coarse-time file system) was read from the old copy. Here each
file's content digest (lf_wrap.core.hashing, which also watches ctime) is recorded in the
prepare manifest (`source_files`), and `datasets` builds its copy under
$LF_WRAP_CACHE/datasets/<paths>-<content>/: other content is another folder, read afresh, and
the copy of the same files' earlier content is deleted then, so copies do not pile up. A
`save_to_disk` folder is read where it is (no copy)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.environments import cache_root
from lf_wrap.core.errors import UserError
from lf_wrap.core.hashing import file_digest, tree_digest

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass
class Split:
    """A loaded split and where its rows came from."""

    source: str
    data: object                                           # a datasets.Dataset
    json_lines: list[Path] = field(default_factory=list)   # JSON Lines files, in the order read
    files: dict[str, str] = field(default_factory=dict)    # local source: each file's content digest

    def locate(self, index: int) -> str:
        """'file:line' for a row of a JSON Lines source (datasets skips blank lines), else its index."""
        seen = -1
        for path in self.json_lines:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for lineno, line in enumerate(handle, 1):
                    if line.strip():
                        seen += 1
                        if seen == index:
                            return f"{path}:{lineno}"
        return f"{self.source}: row {index} (0-based index in the split)"


def load_split(source: str, config: str | None, split: str) -> Split:
    """One split of a Hub id, or of a local file or folder."""
    import datasets

    path = Path(source)
    if not path.exists():
        if source.startswith((".", "/")) or path.suffix in LOCAL_BUILDERS:
            raise UserError(f"{source}: no such file or folder")
        return Split(source, _load_hub(source, config, split))
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        digests = {f"{path.resolve()}/{name}": digest for name, digest in tree_digest(path)[1].items()}
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise UserError(f"{path}: no split '{split}' (splits: {', '.join(loaded)})")
            return Split(source, loaded[split], files=digests)
        return Split(source, loaded, files=digests)
    files = sorted(p for p in path.iterdir() if p.suffix in LOCAL_BUILDERS) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no .json, .jsonl, .parquet or .arrow files in this folder")
    builders = {LOCAL_BUILDERS.get(p.suffix) for p in files}
    if None in builders or len(builders) != 1:
        raise UserError(f"{path}: expected .json, .jsonl, .parquet or .arrow data (one format per folder)")
    if all(_is_blank(p) for p in files):
        raise UserError(f"{path}: the file is empty" if len(files) == 1
                        else f"{path}: every file in this folder is empty")
    builder = builders.pop()
    digests = {str(p.resolve()): file_digest(p) for p in files}
    try:
        data = datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train",
                                     cache_dir=str(_arrow_cache(digests)))
    except Exception as err:  # datasets wraps parse errors several layers deep
        if builder == "json":
            for file in files:
                _raise_json_error(file)
        raise UserError(f"{path}: could not be read as {builder}: {_cause(err)}") from None
    json_lines = [p for p in files if builder == "json" and not _starts_with(p, "[")]
    return Split(source, data, json_lines if len(json_lines) == len(files) else [], digests)


def _arrow_cache(digests: dict[str, str]) -> Path:
    """Where `datasets` keeps its Arrow copy of these files in this content; an older copy of the
    same files is deleted (one copy per set of source files)."""
    paths = hashlib.sha256("\0".join(digests).encode()).hexdigest()[:16]
    content = hashlib.sha256("\0".join(digests.values()).encode()).hexdigest()[:16]
    root = cache_root() / "datasets"
    for old in root.glob(f"{paths}-*"):
        if old.name != f"{paths}-{content}":
            shutil.rmtree(old, ignore_errors=True)
    return root / f"{paths}-{content}"


def _load_hub(source: str, config: str | None, split: str):
    import datasets
    from datasets.exceptions import DatasetNotFoundError, DatasetsError

    try:
        return datasets.load_dataset(source, config, split=split)
    except DatasetNotFoundError:
        raise UserError(f"{source}: no such dataset on the Hugging Face Hub, or it is private or gated; check "
                        "the id (and `hf auth login`), or pass a local file or folder as --source") from None
    except (OSError, DatasetsError) as err:   # ConnectionError, LocalEntryNotFoundError, HTTP errors
        offline = [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
        way_out = (f"{' and '.join(offline)} {'is' if len(offline) == 1 else 'are'} set, so only the cache is read: "
                   "pass a local file or folder as --source, or unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE on a "
                   "machine with network access" if offline else
                   "pass a local file or folder as --source, or check the network (proxy, HF_ENDPOINT)")
        raise UserError(f"{source}: could not be reached on the Hugging Face Hub and is not in the local cache "
                        f"({type(err).__name__}); {way_out}") from None
    except ValueError as err:                 # an unknown config or split
        raise UserError(f"{source}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _is_blank(path: Path) -> bool:
    size = path.stat().st_size
    return size == 0 or (path.suffix in (".json", ".jsonl") and size < 1 << 16 and not path.read_bytes().strip())


def _starts_with(path: Path, char: str) -> bool:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 16):
            stripped = block.lstrip()
            if stripped:
                return stripped[:1] == char.encode()
    return False


def _cause(err: BaseException) -> str:
    """The innermost message of an error datasets wrapped ("An error occurred while generating the
    dataset" says nothing; pyarrow's "JSON parse error: ... in row 1" says what and where)."""
    messages = []
    while err is not None and len(messages) < 5:
        messages.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
        err = err.__cause__
    cause = messages[-1] + (" (pyarrow counts rows from 0)" if " in row " in messages[-1] else "")
    return cause if len(messages) == 1 else f"{cause} ({messages[0]})"


def _raise_json_error(path: Path) -> None:
    """Name the file and line of the first malformed JSON in `path` (only runs on failure)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
        return
    for lineno, line in jsonlines.split(text.encode("utf-8")):
        try:
            json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
