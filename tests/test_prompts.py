"""Eval prompts are LLaMA-Factory's training prompts, token for token."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import LF_CLI
from lf_wrap.tasks import prompts
from lf_wrap.core.errors import UserError

# Runs in the training environment: LLaMA-Factory's own data pipeline on the same rows.
LF_SCRIPT = Path(__file__).parent / "lf_scripts" / "load_prepared.py"

EDGE_ROWS = [
    {"instruction": "Summarize:", "input": "A long article.\nSecond line.", "output": "y"},   # input joined by \n
    {"instruction": "", "input": "only an input", "output": "z"},                             # empty instruction
    {"instruction": "请把下面的句子翻译为英文：\n今天天气很好。", "input": "", "output": "x"},
]


def test_render_prompt_qwen_chatml_with_default_system():
    text = prompts.render_prompt({"instruction": "Hi", "input": "there"})
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nHi\nthere<|im_end|>\n<|im_start|>assistant\n")
    assert prompts.alpaca_query({"instruction": "Hi", "input": ""}) == "Hi"
    assert prompts.alpaca_query({"instruction": "", "input": "there"}) == "there"


def test_unknown_template_is_a_clear_error():
    with pytest.raises(UserError, match="template 'llama3' is not supported"):
        prompts.render_prompt({"instruction": "x", "input": ""}, template="llama3")


def test_prompt_token_ids_equal_llamafactory(tiny_model, prepared, tmp_path):
    """Every validation row of the three tasks, plus edge rows, against LLaMA-Factory 0.9.5
    (transformers 5.6 in .venv-lf) while lf-wrap tokenizes with transformers 5.19 (.venv). The
    tiny tokenizer carries Qwen2's pre-tokenizer, as real Qwen2.5 checkpoints do, so both agree."""
    from transformers import AutoTokenizer

    info = json.loads((prepared / "dataset_info.json").read_text())
    names = [f"tiny_{task}_validation" for task in ("translate", "summarize", "qa")]
    rows = [row for name in names for row in json.loads((prepared / info[name]["file_name"]).read_text())]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "edge.json").write_text(json.dumps(EDGE_ROWS, ensure_ascii=False))
    (folder / "rows.json").write_text(json.dumps(rows, ensure_ascii=False))
    entry = {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    (folder / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.json", **entry},
                                                          "edge": {"file_name": "edge.json", **entry}}))
    done = subprocess.run([str(LF_CLI.parent / "python"), str(LF_SCRIPT), str(tiny_model), str(folder),
                           "rows,edge", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(next(line for line in done.stdout.splitlines()
                             if line.startswith("LFWRAP_RESULT ")).removeprefix("LFWRAP_RESULT "))["prompt_ids"]

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ours = [prompts.encode_prompt(tokenizer, prompts.render_prompt(row)) for row in rows + EDGE_ROWS]
    assert len(theirs) == len(ours) == len(rows) + len(EDGE_ROWS)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"row {i}: lf-wrap's prompt differs from LLaMA-Factory's"


def test_truncate_keeps_the_template_tail(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = prompts.render_prompt({"instruction": "word " * 300, "input": ""})
    ids = prompts.encode_prompt(tokenizer, text)
    suffix = prompts.encode_prompt(tokenizer, prompts.get_template("qwen").suffix())
    cut = prompts.truncate_prompt(ids, suffix, 100)
    assert len(cut) == 100 and cut[-len(suffix):] == suffix and cut[:-len(suffix)] == ids[:100 - len(suffix)]
    assert tokenizer.decode(cut).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert prompts.truncate_prompt(ids, suffix, len(ids)) == ids
