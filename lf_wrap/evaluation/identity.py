"""What a model's predictions depend on, as content: the fingerprint saved beside every
predictions file and compared before a saved row is reused.

- the base model: every weight file, config.json, generation_config.json, the tokenizer files
  and the chat template of the folder vLLM loads (a Hub id: its snapshot in the local cache);
- an adapter: its adapter_config.json and weights, plus the base it is served on;
- a full model folder (a merge): its own files, plus the base's tokenizer files when it has none.

Digests come from lf_wrap.core.hashing (BLAKE3, cached by file identity), so an unchanged 6 GB
model is not read again, and any rewritten byte changes the fingerprint."""

from __future__ import annotations

from pathlib import Path

import blake3

from lf_wrap.core.adapters import read_adapter
from lf_wrap.core.models import WEIGHT_PATTERNS, matches, serving_fingerprint
from lf_wrap.evaluation.models import ResolvedModel


def _combine(files: dict[str, str]) -> str:
    text = "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
    return "blake3:" + blake3.blake3(text.encode()).hexdigest()


def model_identity(model: ResolvedModel, base_folder: Path, tokenizer_folder: Path) -> dict:
    """{"model_fingerprint": one digest, "model_files": {"<part>/<file>": digest}}."""
    files: dict[str, str] = {}
    if model.kind in ("base", "adapter"):
        files.update({f"base/{n}": d for n, d in serving_fingerprint(base_folder)[1].items()})
    if model.kind == "adapter":
        adapter = read_adapter(model.path)
        files.update({f"adapter/{n}": d for n, d in adapter.file_digests().items()})
    if model.kind == "full":
        files.update({f"model/{n}": d for n, d in serving_fingerprint(Path(model.path))[1].items()})
        if Path(tokenizer_folder).resolve() != Path(model.path).resolve():
            files.update({f"tokenizer/{n}": d for n, d in serving_fingerprint(tokenizer_folder)[1].items()
                          if not matches(n, WEIGHT_PATTERNS)})
    return {"model_fingerprint": _combine(files), "model_files": files}

