"""LLaMA-Factory's own data loader reads a prepared dataset through dataset_info.json
(run in the training environment, on the tiny model)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import LF_CLI, read_json

SCRIPT = Path(__file__).parent / "lf_scripts" / "load_prepared.py"


def test_llamafactory_reads_prepared_dataset(prepared, tiny_model, tmp_path):
    python = LF_CLI.parent / "python"
    proc = subprocess.run([str(python), str(SCRIPT), str(tiny_model), str(prepared), "tiny_qa_train",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("LFWRAP_RESULT "))
    result = json.loads(line.removeprefix("LFWRAP_RESULT "))
    rows = read_json(prepared / "tiny_qa_train.json")
    assert result["rows"] == len(rows) == 40
    first = rows[0]
    # The qwen template: default system prompt, ChatML turns, the instruction as the user turn.
    assert result["text"].startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert f"<|im_start|>user\n{first['instruction']}<|im_end|>\n<|im_start|>assistant\n" in result["text"]
    assert result["label_text"] == first["output"] + "<|im_end|>\n"
