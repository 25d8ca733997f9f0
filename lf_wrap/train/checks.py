"""What a training recipe names, checked before `llamafactory-cli` starts: the datasets (each
registered, its file present and parsable as LLaMA-Factory will read it; several mixed by
LLaMA-Factory's own mix_strategy), the model (a local
folder, or a Hub id in the local cache when offline), resume and DeepSpeed paths; and the record
of the data a run trained on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lf_wrap.core.errors import UserError
from lf_wrap.core.recipes import did_you_mean


def check_datasets(names: list[str], dataset_dir: Path, where: str,
                   patterns: bool = False) -> dict[str, Path | None]:
    """Each name registered in dataset_dir/dataset_info.json, and its file present.

    With `patterns`, a name may be a shell pattern matching exactly one registered name
    (`alpaca_wmt19_zh-en_train_*`: how many rows the keyword filter keeps is known only after
    `make data`); the result is keyed by the names matched."""
    from lf_wrap.data.dataset_info import INFO_FILE, match_name, read_info, resolve_dataset

    dataset_dir = Path(dataset_dir)
    info_file = dataset_dir / INFO_FILE
    if not info_file.is_file():
        raise UserError(f"{where}: {info_file} does not exist; prepare data first (`lf-wrap data prepare`, "
                        "`make data`) or set lf_wrap.dataset_dir")
    info = read_info(dataset_dir)
    found: dict[str, Path | None] = {}
    for name in names:
        if patterns:
            name = match_name(dataset_dir, name, where)
        if name not in info:
            hint = did_you_mean(name, info) or f" (registered: {', '.join(sorted(info)) or 'none'})"
            raise UserError(f"{where}: dataset '{name}' is not in {info_file}{hint}")
        remote = isinstance(info[name], dict) and "file_name" not in info[name]
        found[name] = None if remote else resolve_dataset(dataset_dir, name)
        if found[name] is not None:
            check_data_file(found[name], f"{where}: dataset '{name}'")
    return found


def check_mixing(args: dict[str, Any], origin: dict[str, str], datasets: list[str]) -> None:
    """Several training sets are mixed by LLaMA-Factory itself (data_utils.merge_dataset: `concat`,
    or `interleave_*` drawing by `interleave_probs`); its DataArguments refuse a probability list
    of the wrong length or under `concat` only after a minute of imports, and `datasets` refuses
    probabilities that do not sum to 1 later still. Checked here, naming the key."""
    probs = args.get("interleave_probs")
    if probs is None:
        return
    where = origin.get("interleave_probs", "recipe")
    strategy = args.get("mix_strategy", "concat")
    if strategy == "concat":
        raise UserError(f"{where}: interleave_probs is only for an interleaved mix_strategy (interleave_under, "
                        "interleave_over, interleave_once); mix_strategy is concat (the default), which takes every "
                        "row of every set once: leave interleave_probs out, or set mix_strategy")
    try:
        values = [float(part) for part in str(probs).split(",")]
    except ValueError:
        raise UserError(f"{where}: interleave_probs {probs!r} is not a comma-separated list of numbers "
                        "(e.g. 0.5,0.3,0.2)") from None
    if len(values) != len(datasets):
        raise UserError(f"{where}: interleave_probs has {len(values)} probabilities for {len(datasets)} training "
                        f"sets ({', '.join(datasets)}); give one per set, in the same order")
    if any(not 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise UserError(f"{where}: interleave_probs {probs} must be probabilities in [0, 1] summing to 1 "
                        f"(they sum to {sum(values):g})")
    eval_sets = args.get("eval_dataset")
    if eval_sets and len(str(eval_sets).split(",")) != len(values):
        raise UserError(f"{where}: interleave_probs has {len(values)} probabilities but eval_dataset names "
                        f"{len(str(eval_sets).split(','))} sets; LLaMA-Factory mixes the eval sets with the same "
                        "probabilities, so it needs one per set there too")


def check_data_file(path: Path, where: str) -> None:
    """Parse a data file the way LLaMA-Factory will read it, so that a bad row costs an error
    naming its line now, not a `datasets` traceback after a minute of loading (or a queue wait).

    LLaMA-Factory hands .json and .jsonl files (one file, or every file of a folder) to
    `datasets`' json loader, which reads one JSON object per line (JSON Lines) and otherwise the
    whole file as one JSON document: an array of objects, as `lf-wrap data prepare` writes.
    JSON Lines are checked line by line, as they stream; an array is parsed whole (datasets
    holds it whole too). Other formats (csv, parquet, arrow, txt) are left to LLaMA-Factory."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file.suffix.lower() in (".json", ".jsonl"):
            _check_json_rows(file, where)


def _check_json_rows(file: Path, where: str) -> None:
    def bad(place: str, problem: str) -> UserError:
        return UserError(f"{where}: {file}:{place}: {problem}; LLaMA-Factory reads a JSON array of objects "
                         "or one JSON object per line (JSON Lines)")

    with open(file, "rb") as handle:
        if handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            data = file.read_bytes()
            try:
                rows = json.loads(data.decode("utf-8-sig"))
            except UnicodeDecodeError as err:
                raise bad(str(data.count(b"\n", 0, err.start) + 1), "not UTF-8 text") from None
            except json.JSONDecodeError as err:
                raise bad(str(err.lineno), f"not valid JSON ({err.msg}, column {err.colno})") from None
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise bad(f" row {i + 1} of the array", f"a row must be a JSON object, got {type(row).__name__}")
            return
        handle.seek(0)
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise bad(str(number), "not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if number == 1 and _one_document(file):
                    return                        # one object of columns: datasets reads that too
                raise bad(str(number), f"not valid JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(row, dict):
                raise bad(str(number), f"a row must be a JSON object, got {type(row).__name__}")


def _one_document(file: Path) -> bool:
    """Is the whole file one JSON object (`{"instruction": [...], "output": [...]}`)?"""
    try:
        return isinstance(json.loads(file.read_text(encoding="utf-8-sig")), dict)
    except ValueError:                            # UnicodeDecodeError and JSONDecodeError both
        return False


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_model(args: dict[str, Any], where: str) -> str:
    """model_name_or_path: a local model folder, or a Hub id (in the local cache when offline)."""
    value = args.get("model_name_or_path")
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: model_name_or_path is required (a local folder or a Hub id)")
    path = Path(value).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise UserError(f"{where}: model_name_or_path {value} has no config.json; not a model folder")
        return f"local folder {path.resolve()}"
    if value.startswith(("/", ".", "~")) or value.count("/") != 1:
        raise UserError(f"{where}: model_name_or_path {value}: no such folder")
    if args.get("use_modelscope_hub") or args.get("use_openmind_hub") or not _offline():
        return f"Hub id {value} (LLaMA-Factory downloads it if not cached)"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(value, "config.json", cache_dir=args.get("cache_dir"),
                                    revision=args.get("model_revision") or None)
    if not isinstance(cached, str):
        raise UserError(f"{where}: model {value} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
                        f"download it first (`hf download {value}`) or set model_name_or_path to a local folder")
    return f"Hub id {value}, cached at {Path(cached).parent}"


def check_paths(args: dict[str, Any], origin: dict[str, str], versions: dict[str, str | None]) -> None:
    """resume_from_checkpoint must exist; a `deepspeed:` config must exist, parse, and have
    deepspeed installed in the training environment to read it."""
    resume = args.get("resume_from_checkpoint")
    if isinstance(resume, str) and not Path(resume).is_dir():
        raise UserError(f"{origin.get('resume_from_checkpoint', 'recipe')}: resume_from_checkpoint {resume}: "
                        "no such checkpoint folder (they are <run_dir>/adapter/checkpoint-N)")
    value = args.get("deepspeed")
    if value is None:
        return
    where = origin.get("deepspeed", "recipe")
    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise UserError(f"{where}: deepspeed config {value} does not exist (shipped: "
                            "recipes/deepspeed/ds_z2_config.json, recipes/deepspeed/ds_z3_config.json)")
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise UserError(f"{where}: deepspeed config {value} is not valid JSON ({err})") from None
    if not versions.get("deepspeed"):
        raise UserError(f"{where}: a deepspeed config is set but deepspeed is not installed in the training "
                        "environment; install it there (e.g. .venv-lf/bin/pip install deepspeed)")


def data_manifest(dataset_dir: Path, name: str, path: Path | None) -> dict:
    """What trained the adapter: the data file, its hash, and the manifest `prepare` wrote."""
    from lf_wrap.data.dataset_info import read_manifest
    from lf_wrap.core.files import sha256_file, sha256_tree

    entry: dict[str, Any] = {"file": str(path.resolve()) if path else None}
    if path is not None:
        entry["sha256"] = sha256_tree(path) if path.is_dir() else sha256_file(path)
    entry["prepared"] = read_manifest(dataset_dir, name)
    return entry
