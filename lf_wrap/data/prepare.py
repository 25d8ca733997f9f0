"""`lf-wrap data prepare`: one source split -> one LLaMA-Factory instruction set.

Sample `n` rows with a seed, then filter, then write the alpaca JSON array, a manifest beside
it and the `dataset_info.json` entry, all three or none. Sources are Hub ids (the real `datasets.load_dataset`
path) or local files of the same schema. `load_dataset` keeps the split as a memory-mapped
Arrow table and only the sampled rows are ever read into Python, so memory stays flat however
large the split (wmt19 zh-en train is 26 million rows, 7 GB). Idempotent: the same command
writes the same bytes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lf_wrap.data import dataset_info as registry
from lf_wrap.data.sources import load_split
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import dump_json, sha256_file
from lf_wrap.core.manifest import HEADER_KEYS, StageRecord
from lf_wrap.tasks import DEFAULT_NO_ANSWER_TEXT, RowError, Task, get_task

DEFAULT_KEYWORDS = Path(__file__).resolve().parents[1] / "defaults" / "keywords.yaml"


@dataclass
class PrepareOptions:
    seed: int = 42
    name: str | None = None
    dataset_dir: Path = Path("dataset_info")
    keywords_file: Path = DEFAULT_KEYWORDS
    unanswerable: str = "keep"          # qa: "keep" (target = no_answer_text) or "drop"
    no_answer_text: str = DEFAULT_NO_ANSWER_TEXT
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
    if any(set(option) <= set(columns) for option in task.columns):
        return
    missing = [c for c in task.columns[0] if c not in columns]
    if missing:
        raise UserError(f"{source}: missing column '{missing[0]}' for task '{task.name}' "
                        f"(columns found: {', '.join(columns) or 'none'})")


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


def load_keywords(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read keyword list ({err})") from None
    words = data.get("drop_keywords") if isinstance(data, dict) else None
    if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
        raise UserError(f"{path}: key 'drop_keywords' must be a list of non-empty strings")
    return words


def has_keyword(texts: tuple[str, ...], keywords: list[str]) -> bool:
    lowered = [t.casefold() for t in texts]
    return any(k.casefold() in t for k in keywords for t in lowered)


# ---------------------------------------------------------------- the stage


def prepare(task_name: str, source: str, split: str, n: int, config: str | None = None,
            options: PrepareOptions | None = None) -> PrepareResult:
    record = StageRecord("prepare")
    options = options or PrepareOptions()
    task = get_task(task_name)
    if n <= 0:
        raise UserError(f"-n must be a positive number of rows, got {n}")
    if options.unanswerable not in ("keep", "drop"):
        raise UserError(f"--unanswerable must be 'keep' or 'drop', got '{options.unanswerable}'")
    if (options.cutoff_len is None) != (options.tokenizer is None):
        raise UserError("--cutoff-len and --tokenizer go together")
    keywords = load_keywords(options.keywords_file) if task.keyword_fields else []
    is_hub = not Path(source).exists()
    config = config if config is not None else (task.hub_config if is_hub else None)

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
            fields = task.read(row)
        except RowError as err:
            raise UserError(f"{loaded.locate(index)}: {err}") from None
        if any(not fields[key].strip() for key in task.required):
            dropped["empty"] += 1
            continue
        if keywords and has_keyword(tuple(fields[key] for key in task.keyword_fields), keywords):
            dropped["keyword"] += 1
            continue
        if task.no_answer and not fields["answers"] and options.unanswerable == "drop":
            dropped["unanswerable"] += 1
            continue
        alpaca = task.to_alpaca(fields, options.no_answer_text)
        if tokenizer is not None and _token_count(tokenizer, alpaca) > options.cutoff_len:
            dropped["cutoff_len"] += 1
            continue
        if "id" in row and row["id"] is not None:
            alpaca["id"] = str(row["id"])
        rows.append(alpaca)
    if not rows:
        raise UserError(f"{source}: every sampled row was dropped by the filters ({dropped})")

    name = options.name if options.name is not None else f"alpaca_{task.name_prefix}_{split}_{len(rows)}"
    dataset_dir = Path(options.dataset_dir)
    what = "--name" if options.name is not None else "the default name (from --split)"
    registry.check_name(name, what)
    data_file = dataset_dir / registry.data_file_name(name)
    body = {
        "written_by": registry.WRITER,
        "task": task.name,
        "source": source,
        "config": config,
        "split": split,
        "seed": options.seed,
        "n": n,
        "source_rows": len(data),
        "sampling": "numpy.random.default_rng(seed).choice(source_rows, n, replace=False)",
        "filters": {
            "keywords": keywords,
            "non_empty": list(task.required),
            "unanswerable": options.unanswerable if task.no_answer else None,
            "no_answer_text": options.no_answer_text if task.no_answer else None,
            "cutoff_len": options.cutoff_len,
            "tokenizer": options.tokenizer,
        },
        "rows_read": n,
        "rows_dropped": dropped,
        "rows_written": len(rows),
        "file_name": data_file.name,
    }
    payload = dump_json(rows).encode("utf-8")
    body["sha256"] = hashlib.sha256(payload).hexdigest()
    with registry.locked(dataset_dir):
        registry.check_name_free(dataset_dir, name, what)
        previous = registry.read_manifest(dataset_dir, name)
        if _unchanged(previous, body, data_file, registry.read_info(dataset_dir).get(name)):
            # Idempotent: the same command on the same source leaves every byte as it was
            # (manifest times included) and says so, like any stage whose output exists.
            return PrepareResult(name=name, data_file=data_file, manifest=previous, skipped=True)
        manifest = record.manifest(body)
        manifest.update(record.finish())
        registry.write_set(dataset_dir, name, payload, manifest)
    return PrepareResult(name=name, data_file=data_file, manifest=manifest)


def _unchanged(previous: dict | None, body: dict, data_file: Path, entry) -> bool:
    """The manifest, data file and registry entry already hold exactly what this run would write."""
    if previous is None or {k: v for k, v in previous.items() if k not in HEADER_KEYS} != body:
        return False
    return (entry == registry.alpaca_entry(data_file.name) and data_file.is_file()
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
