"""dataset_info.json is shared with the user and with concurrent `prepare` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import read_json


def test_concurrent_writers_keep_every_entry(tmp_path, sample_sources):
    folder = tmp_path / "ds"
    folder.mkdir()
    user = {"user_set": {"file_name": "user.json", "formatting": "sharegpt"}}
    (folder / "dataset_info.json").write_text(json.dumps(user), encoding="utf-8")
    exe = Path(sys.executable).parent / "lf-wrap"
    jobs = []
    for i in range(6):
        task, src = [("translate", "wmt19_zh-en"), ("summarize", "cnn_dailymail"), ("qa", "squad_v2")][i % 3]
        jobs.append(subprocess.Popen(
            [str(exe), "data", "prepare", task, "--source", str(sample_sources / src / "train.jsonl"),
             "--split", "train", "-n", "5", "--seed", str(i), "--name", f"set_{i}", "--dataset-dir", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy()))
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err.decode()
    info = read_json(folder / "dataset_info.json")
    assert info["user_set"] == user["user_set"]
    assert sorted(k for k in info if k.startswith("set_")) == [f"set_{i}" for i in range(6)]
    for i in range(6):
        assert len(read_json(folder / info[f"set_{i}"]["file_name"])) == 5
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_our_entry_is_replaced_others_untouched(tmp_path, sample_sources):
    from lf_wrap.data.prepare import PrepareOptions, prepare

    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine.json"}}), encoding="utf-8")
    src = str(sample_sources / "squad_v2" / "train.jsonl")
    prepare("qa", src, "train", 5, options=PrepareOptions(dataset_dir=folder, name="qa_small"))
    prepare("qa", src, "train", 7, options=PrepareOptions(dataset_dir=folder, name="qa_small"))
    info = read_json(folder / "dataset_info.json")
    assert info["mine"] == {"file_name": "mine.json"}
    assert len(read_json(folder / "qa_small.json")) == 7
