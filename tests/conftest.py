"""Shared fixtures. Nothing here reaches the network or writes into the repository: the tiny
model, the sample sources and every dataset folder live under pytest's temporary folders.
Plain functions the tests share live in tests/helpers/; no test file imports another."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LF_CLI = Path(os.environ.get("LF_WRAP_LLAMAFACTORY_CLI", REPO / ".venv-lf" / "bin" / "llamafactory-cli"))

# Offline everywhere, including in the child processes the tests start.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
os.environ["LF_WRAP_LLAMAFACTORY_CLI"] = str(LF_CLI)


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Keep datasets' Arrow cache, HF_HOME, vLLM's compile cache and lf-wrap's hash cache out of
    the home and the repo (vLLM's is shared by every engine of the session: a model compiled once)."""
    home = tmp_path_factory.mktemp("hf_home")
    old = {k: os.environ.get(k) for k in ("HF_HOME", "HF_DATASETS_CACHE", "LF_WRAP_CACHE", "VLLM_CACHE_ROOT")}
    os.environ["HF_HOME"] = str(home)
    os.environ["VLLM_CACHE_ROOT"] = str(tmp_path_factory.mktemp("vllm_cache"))
    os.environ["HF_DATASETS_CACHE"] = str(home / "datasets")
    os.environ["LF_WRAP_CACHE"] = str(tmp_path_factory.mktemp("lf_wrap_cache"))   # content-hash cache
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Qwen2 with a BPE tokenizer trained on the spot (float32, ~1.7 MB)."""
    from lf_wrap.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def sample_sources(tmp_path_factory) -> Path:
    """The repo's sample source files (wmt19/cnn_dailymail/squad_v2 schemas)."""
    from lf_wrap.data.samples import write_samples

    out = tmp_path_factory.mktemp("samples")
    write_samples(out)
    return out


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, sample_sources) -> Path:
    """A dataset folder with small train/validation sets for the three tasks; returns the folder.
    Names: tiny_<task>_train (40 rows), tiny_<task>_validation (8 rows)."""
    from lf_wrap.data.prepare import PrepareOptions, prepare

    folder = tmp_path_factory.mktemp("dataset_info")
    sources = {"translate": "wmt19_zh-en", "summarize": "cnn_dailymail", "qa": "squad_v2"}
    for task, src in sources.items():
        for split, n in (("train", 40), ("validation", 8)):
            prepare(task, str(sample_sources / src / f"{split}.jsonl"), split, n,
                    options=PrepareOptions(name=f"tiny_{task}_{split}", dataset_dir=folder))
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Three seeded random LoRA adapters A, B, C on the tiny model (helpers.adapters.SPECS)."""
    from helpers.adapters import make_adapters

    return make_adapters(tiny_model, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="module")
def adapter_paths(adapters) -> list[str]:
    """The same three adapters as a merge's `adapters` list: [A, B, C]."""
    return [str(adapters[k]) for k in "ABC"]


@pytest.fixture(scope="module")
def merge_plan(adapter_paths, tmp_path_factory):
    """The checked inputs of a linear merge of A, B and C (the modules a weight patcher patches)."""
    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import MergeConfig

    return check_inputs(MergeConfig(adapters=adapter_paths, method="linear",
                                    out=str(tmp_path_factory.mktemp("x") / "no")))


@pytest.fixture(scope="module")
def short_prompts(tiny_model) -> list[list[int]]:
    """helpers.engine.TEXTS as token ids."""
    from transformers import AutoTokenizer

    from helpers.engine import TEXTS

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return [tokenizer(text).input_ids for text in TEXTS]


@pytest.fixture(scope="module")
def engine_prompts(tiny_model, short_prompts) -> list[list[int]]:
    """The short prompts, and one of ~300 tokens: it fills whole KV blocks (128 tokens on CPU), the
    unit the prefix cache shares."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long_text = " ".join(["The article says the cat sat on the mat, and the question is why."] * 20)
    ids = [*short_prompts, tokenizer(long_text).input_ids]
    assert len(ids[-1]) > 256
    return ids


@pytest.fixture(scope="module")
def search_study(tiny_model, tmp_path_factory):
    """(root, eval recipe path, adapter folders) of helpers.search.write_search_study: three tasks
    of 12 rows each, their references each adapter's own greedy answers."""
    from helpers.search import write_search_study

    return write_search_study(tiny_model, tmp_path_factory.mktemp("search"))


@pytest.fixture
def lf_log(caplog):
    """lf-wrap's log lines (INFO and up), whether or not a CLI test earlier in the session turned on
    the console handler, which stops propagation to the root logger where caplog listens."""
    logger = logging.getLogger("lf_wrap")
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


def run_lf_wrap(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed `lf-wrap` console script as a user would."""
    exe = Path(sys.executable).parent / "lf-wrap"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
