"""Base and full model folders: where a model named by a Hub id lives, which files decide its
outputs (and their content fingerprint), and the one rule for "the same base model".

The same base. An adapter records the base it was trained on as the user typed it
(`base_model_name_or_path`: a Hub id or a path). Merge, eval and search accept an adapter on a
base when one of these holds, and refuse it otherwise, naming both:
  1. the same string;
  2. two local folders that are the same folder (after resolving links), or whose weight
     files have the same content (a copy);
  3. a Hub id and a local folder that is that id's snapshot in the Hugging Face cache, or a
     local copy bearing the id's name (`hf download Qwen/Qwen2.5-3B-Instruct --local-dir
     Qwen2.5-3B-Instruct`).
Two different Hub ids, or two folders with different weights, are different bases even when
their config.json files agree (a fine-tuned model has its base's config)."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.hashing import tree_digest

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
# Everything besides the weights that changes what a served model answers: its architecture
# and numerics, the tokenizer, the chat template and the generation defaults.
SERVING_PATTERNS = ("config.json", "generation_config.json", "tokenizer*", "vocab*", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json", "chat_template*", "*.tiktoken", "*.model",
                    "preprocessor_config.json")


def matches(name: str, patterns) -> bool:
    return "/" not in name and any(fnmatch.fnmatch(name, p) for p in patterns)


def weights_fingerprint(folder: Path) -> str:
    return tree_digest(folder, include=lambda name: matches(name, WEIGHT_PATTERNS))[0]


def serving_fingerprint(folder: Path) -> tuple[str, dict[str, str]]:
    """Digest of every file that decides a model folder's outputs (weights, config, tokenizer,
    chat template), and each file's digest (to say which one changed)."""
    return tree_digest(folder, include=lambda name: matches(name, WEIGHT_PATTERNS + SERVING_PATTERNS))


def local_snapshot(name: str) -> Path | None:
    """The folder a model name stands for without downloading: a local folder, or a Hub id's
    snapshot in the Hugging Face cache; None when neither exists."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:   # not cached, bad id: nothing local
        return None


def resolve_base(name: str) -> Path:
    """A local folder, or a Hub id found in (or, when online, fetched into) the Hugging Face cache."""
    local = local_snapshot(name)
    if local is not None:
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja",
                                                            "*.model", "*.tiktoken", "LICENSE*"]))
    except Exception as err:   # offline cache miss, bad repo id, network error: one message
        raise UserError(f"base model {name}: not a folder, and not available from the Hugging Face Hub or its "
                        f"cache ({type(err).__name__}); use a local folder") from None


def same_base(declared: str, base: str) -> bool:
    """The rule in this module's docstring."""
    if declared == base:
        return True
    a, b = Path(declared).expanduser(), Path(base).expanduser()
    a_local, b_local = a.is_dir(), b.is_dir()
    if a_local and b_local:
        return a.resolve() == b.resolve() or weights_fingerprint(a) == weights_fingerprint(b)
    if a_local != b_local:
        hub, folder = (base, a) if a_local else (declared, b)
        if hub.count("/") != 1:
            return False
        snapshot = local_snapshot(hub)
        if snapshot is not None and snapshot.resolve() == folder.resolve():
            return True
        return folder.resolve().name.lower() == hub.split("/")[1].lower()
    return False



# ---------------------------------------------------------------- a model folder's weight files

INDEX_FILE = "model.safetensors.index.json"


def base_shards(base_dir: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards its index names, or model.safetensors.
    A damaged index is one UserError naming it."""
    index = base_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (OSError, ValueError, AttributeError) as err:
            raise UserError(f"{index}: not a JSON object with a weight_map ({err})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
            raise UserError(f"{index}: weight_map must map each weight to a shard file in {base_dir}, got "
                            f"{json.dumps(weight_map)[:80]}")
        return [base_dir / name for name in sorted(set(weight_map.values()))]
    if (base_dir / "model.safetensors").is_file():
        return [base_dir / "model.safetensors"]
    raise UserError(f"base model {base_dir}: no model.safetensors or {INDEX_FILE}")


def safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data starts (no tensor is read). The
    header's length is checked against the file's size before it is read: a damaged length
    (10^12) is one UserError, not a MemoryError; so is a header that is not safetensors'."""
    try:
        with open(path, "rb") as handle:
            size, total = int.from_bytes(handle.read(8), "little"), os.fstat(handle.fileno()).st_size
            if total < 8 or 8 + size > total:
                raise UserError(f"{path}: not a safetensors file (its header says {size} bytes, the file has "
                                f"{total}); the file is damaged or cut short")
            header = json.loads(handle.read(size))
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror})") from None
    except ValueError as err:
        raise UserError(f"{path}: its safetensors header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: its safetensors header is not a JSON object; the file is damaged")
    for name, info in header.items():
        if name != "__metadata__" and not _tensor_entry(info):
            raise UserError(f"{path}: tensor {name!r} in its header has no dtype, shape and data_offsets; "
                            "the file is damaged")
    return header, 8 + size


def _tensor_entry(info) -> bool:
    def ints(value, length=None) -> bool:
        return isinstance(value, list) and all(type(n) is int for n in value) \
            and (length is None or len(value) == length)

    return isinstance(info, dict) and isinstance(info.get("dtype"), str) and ints(info.get("shape")) \
        and ints(info.get("data_offsets"), 2)
