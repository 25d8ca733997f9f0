"""`lf-wrap data prepare`: one source split -> one LLaMA-Factory instruction set.

Sample `n` rows with a seed, then filter, then write the alpaca JSON array, a manifest beside
it and the `dataset_info.json` entry, all three or none. The task file (lf_wrap.tasks) says how a
row is rendered and filtered; the manifest records its declaration, so that every later stage
finds the task from the dataset alone. Sources are Hub ids (the real `datasets.load_dataset`
path) or local files of the same schema. `load_dataset` keeps the split as a memory-mapped
Arrow table and only the sampled rows are ever read into Python, so memory stays flat however
large the split (wmt19 zh-en train is 26 million rows, 7 GB). Idempotent: the same command
writes the same bytes."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lf_wrap.data import dataset_info as registry
from lf_wrap.data.sources import load_split
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import dump_json, sha256_file
from lf_wrap.core.manifest import HEADER_KEYS, StageRecord
from lf_wrap.core.recipes import did_you_mean
from lf_wrap.tasks import RowError, Task, find_task, with_overrides
from lf_wrap.tasks.rows import render_row
from lf_wrap.tasks.spec import load_keywords


@dataclass
class PrepareOptions:
    seed: int = 42
    name: str | None = None
    dataset_dir: Path = Path("dataset_info")
    keywords_file: Path | None = None   # replaces the task's keyword list
    unanswerable: str = "keep"          # a task with the no-answer rule: "keep" (target = no_answer_text) or "drop"
    no_answer_text: str | None = None   # default: the task file's
    task_overrides: tuple[str, ...] = ()   # `--set KEY=VALUE` on the task file
    cutoff_len: int | None = None       # drop rows longer than this many tokens ...
    tokenizer: str | None = None        # ... counted with this tokenizer


@dataclass
class PrepareResult:
    name: str
    data_file: Path
    manifest: dict = field(default_factory=dict)
    skipped: bool = False          # the same set was already there, byte for byte


# ---------------------------------------------------------------- checks


def check_columns(task: Task, columns: list[str], source: str) -> None:
    """Every field the task reads is a column of the source (one of its paths, for a field
    under `fields`): else one error naming the task file's line and key."""
    for key, name in task.spec.used():
        paths = task.spec.paths(name)
        if any(path.split(".")[0] in columns for path in paths):
            continue
        if name in task.spec.fields:
            key = ("fields", name)
        dotted = ".".join(str(k) for k in key)
        others = f" (or {', '.join(repr(p) for p in paths[1:])})" if len(paths) > 1 else ""
        what = f"slot '{{{name}}}'" if key[0] in ("prompt", "input", "system") else f"'{name}'"
        raise UserError(f"{task.where(key)}: {dotted}: {what} reads '{paths[0]}'{others}, and {source} has no column "
                        f"'{paths[0].split('.')[0]}' (columns found: {', '.join(columns) or 'none'})"
                        f"{did_you_mean(paths[0].split('.')[0], columns)}")


def check_dataset_dir(folder: Path) -> None:
    """The dataset folder, or the nearest part of its path that exists, must be a folder."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"--dataset-dir {folder}: {path} is a file, not a folder")
            return


def sample_indices(total: int, n: int, seed: int) -> np.ndarray:
    """`n` distinct row indices out of `total`, a function of the seed alone.
    numpy's Generator draws them without building a permutation of all `total` rows."""
    return np.random.default_rng(seed).choice(total, size=n, replace=False)


# ---------------------------------------------------------------- filters


def has_keyword(texts: tuple[str, ...], keywords: list[str]) -> bool:
    lowered = [t.casefold() for t in texts]
    return any(k.casefold() in t for k in keywords for t in lowered)


# ---------------------------------------------------------------- the stage


def prepare(task_ref: str | Path | Task, source: str | None, split: str, n: int, config: str | None = None,
            options: PrepareOptions | None = None) -> PrepareResult:
    """Prepare one set of task `task_ref` (a shipped task's name, a task file, or a Task) from
    `source` (a Hub id or local files; None: the task file's source.hub_id)."""
    record = StageRecord("prepare")
    options = options or PrepareOptions()
    task = task_ref if isinstance(task_ref, Task) else find_task(
        task_ref, options.task_overrides, keywords_given=options.keywords_file is not None)
    spec = task.spec
    if n <= 0:
        raise UserError(f"-n must be a positive number of rows, got {n}")
    if options.unanswerable not in ("keep", "drop"):
        raise UserError(f"--unanswerable must be 'keep' or 'drop', got '{options.unanswerable}'")
    if (options.cutoff_len is None) != (options.tokenizer is None):
        raise UserError("--cutoff-len and --tokenizer go together")
    if options.keywords_file is not None and spec.keyword_filter is None:
        raise UserError(f"--keywords: task '{task.name}' ({task.origin}) has no keyword_filter to give words to")
    if options.no_answer_text is not None:
        if not task.no_answer:
            raise UserError(f"--no-answer-text: task '{task.name}' is scored with {task.metric}, which has no "
                            "no-answer rule (squad_v2 has)")
        task = with_overrides(task, no_answer_text=options.no_answer_text)
        spec = task.spec
    if options.keywords_file is not None:
        task = dataclasses.replace(task, keywords=tuple(load_keywords(options.keywords_file)))
    keywords = list(task.keywords)
    if source is None:
        source = spec.source.hub_id
        if source is None:
            raise UserError(f"--source: task '{task.name}' names no source.hub_id; give --source FILE|HUB_ID")
    is_hub = not Path(source).exists()
    config = config if config is not None else (spec.source.config if is_hub else None)

    # Fail before a multi-GB download on what can be checked now: a name that is a path or
    # would write where it must not, a dataset folder that is a file, a broken registry, a
    # taken name.
    if options.name is not None:
        registry.check_name(options.name, "--name")
    else:
        registry.check_plain_name(split, "--split")     # the default name carries the split
    check_dataset_dir(Path(options.dataset_dir))
    registry.read_info(options.dataset_dir)
    if options.name is not None:
        registry.check_name_free(options.dataset_dir, options.name)

    loaded = load_split(source, config, split)
    data = loaded.data
    if len(data) == 0:
        raise UserError(f"{source}: the source is empty (split '{split}')")
    check_columns(task, data.column_names, source)
    if n > len(data):
        raise UserError(f"-n {n} is larger than the source: {source} has {len(data)} rows")

    indices = sample_indices(len(data), n, options.seed)
    tokenizer = _load_tokenizer(options.tokenizer) if options.tokenizer else None
    dropped = {"empty": 0, "keyword": 0, "unanswerable": 0, "cutoff_len": 0}
    rows = []
    for index, row in zip(indices.tolist(), data.select(indices)):
        try:
            rendered = render_row(spec, row, task.no_answer, spec.no_answer_text)
        except RowError as err:
            raise UserError(f"{loaded.locate(index)}: {err} (task '{task.name}', {task.origin})") from None
        if rendered.empty:
            dropped["empty"] += 1
            continue
        if keywords and has_keyword(rendered.keyword_texts, keywords):
            dropped["keyword"] += 1
            continue
        if rendered.unanswerable and options.unanswerable == "drop":
            dropped["unanswerable"] += 1
            continue
        alpaca = rendered.alpaca
        if tokenizer is not None and _token_count(tokenizer, alpaca) > options.cutoff_len:
            dropped["cutoff_len"] += 1
            continue
        if "id" in row and row["id"] is not None:
            alpaca["id"] = str(row["id"])
        rows.append(alpaca)
    if not rows:
        raise UserError(f"{source}: every sampled row was dropped by the filters ({dropped})")

    default = spec.dataset_name.replace("{name}", task.name).replace("{split}", split).replace("{rows}", str(len(rows)))
    name = options.name if options.name is not None else default
    dataset_dir = Path(options.dataset_dir)
    what = "--name" if options.name is not None else "the default name (from --split)"
    registry.check_name(name, what)
    data_file = dataset_dir / registry.data_file_name(name)
    body = {
        "written_by": registry.WRITER,
        "task": task.name,
        "task_file": task.origin,
        "source": source,
        "config": config,
        "split": split,
        "seed": options.seed,
        "n": n,
        "source_files": loaded.files,       # a local source's files by content (a Hub id: {})
        "source_rows": len(data),
        "sampling": "numpy.random.default_rng(seed).choice(source_rows, n, replace=False)",
        "filters": {
            "keywords": keywords,
            "non_empty": list(spec.non_empty),
            "unanswerable": options.unanswerable if task.no_answer else None,
            "no_answer_text": spec.no_answer_text if task.no_answer else None,
            "cutoff_len": options.cutoff_len,
            "tokenizer": options.tokenizer,
        },
        "rows_read": n,
        "rows_dropped": dropped,
        "rows_written": len(rows),
        "file_name": data_file.name,
        "task_declaration": task.recorded(),
    }
    payload = dump_json(rows).encode("utf-8")
    body["sha256"] = hashlib.sha256(payload).hexdigest()
    entry = registry.alpaca_entry(data_file.name, system=spec.system is not None)
    with registry.locked(dataset_dir):
        registry.check_name_free(dataset_dir, name, what)
        previous = registry.read_manifest(dataset_dir, name)
        if previous is not None and previous.get("stage") not in (None, "prepare"):
            raise UserError(f"{what} {name}: {data_file} is a set `lf-wrap data {previous.get('stage')}` wrote "
                            f"({previous.get('rows_written')} rows from {previous.get('source')}); data prepare "
                            "replaces only sets it prepared itself: choose another --name, or delete that set first")
        if _unchanged(previous, body, data_file, registry.read_info(dataset_dir).get(name), entry):
            # Idempotent: the same command on the same source leaves every byte as it was
            # (manifest times included) and says so, like any stage whose output exists.
            return PrepareResult(name=name, data_file=data_file, manifest=previous, skipped=True)
        manifest = record.manifest(body)
        manifest.update(record.finish())
        registry.write_set(dataset_dir, name, payload, manifest, entry)
    return PrepareResult(name=name, data_file=data_file, manifest=manifest)


def _unchanged(previous: dict | None, body: dict, data_file: Path, entry, wanted: dict) -> bool:
    """The manifest, data file and registry entry already hold exactly what this run would write."""
    if previous is None or {k: v for k, v in previous.items() if k not in HEADER_KEYS} != body:
        return False
    return (entry == wanted and data_file.is_file()
            and sha256_file(data_file) == body["sha256"])


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise UserError(f"--tokenizer {name}: cannot load a tokenizer ({err})") from None


def _token_count(tokenizer, row: dict) -> int:
    prompt = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
    return len(tokenizer(prompt)["input_ids"]) + len(tokenizer(row["output"])["input_ids"])


def summary(result: PrepareResult) -> str:
    m = result.manifest
    if result.skipped:
        return (f"{result.data_file}: unchanged ({m['rows_written']} rows, the same sample and filters as the "
                f"manifest beside it); '{result.name}' already registered; nothing written")
    drops = ", ".join(f"{k} {v}" for k, v in m["rows_dropped"].items() if v) or "none"
    return (f"wrote {result.data_file} ({m['rows_written']} rows; sampled {m['rows_read']} of "
            f"{m['source_rows']}; dropped: {drops}); registered '{result.name}' in "
            f"{Path(result.data_file).parent / registry.INFO_FILE}")
