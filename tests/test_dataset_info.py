"""dataset_info.json is shared with the user and with concurrent `prepare` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_json, run_lf_wrap


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


def _one_error(proc, *needles) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    """One alpaca row for `data add`, one cnn_dailymail row for `data prepare summarize`."""
    rows, cnn = tmp_path / "rows.jsonl", tmp_path / "cnn.jsonl"
    rows.write_text('{"instruction": "Say hi.", "input": "", "output": "hi"}\n', encoding="utf-8")
    cnn.write_text('{"article": "a", "highlights": "b", "id": "1"}\n', encoding="utf-8")
    return rows, cnn


def _add_and_prepare(folder: Path, rows: Path, cnn: Path) -> list:
    return [run_lf_wrap("data", "add", rows, "--name", "mine", "--dataset-dir", folder),
            run_lf_wrap("data", "prepare", "summarize", "--source", cnn, "--split", "train", "-n", "1",
                        "--name", "theirs", "--dataset-dir", folder)]


@pytest.mark.parametrize("damage", ["not_utf8", "a_folder"])
def test_a_registry_that_cannot_be_read_is_one_error_and_kept(tmp_path, damage):
    """dataset_info.json that is not UTF-8 (bytes ff fe) or is a folder: `data add` and `data
    prepare` say so in one line naming it, exit 2, and leave it as it was (probe OW3, OW4)."""
    folder = tmp_path / "ds"
    folder.mkdir()
    info = folder / "dataset_info.json"
    if damage == "a_folder":
        info.mkdir()
    else:
        info.write_bytes(b"\xff\xfe{}")
    for proc in _add_and_prepare(folder, *_sources(tmp_path)):
        _one_error(proc, str(info), "not UTF-8 text" if damage == "not_utf8" else "not a file")
    assert (info.read_bytes() == b"\xff\xfe{}") if damage == "not_utf8" else info.is_dir()
    assert sorted(p.name for p in folder.iterdir() if p.name != ".dataset_info.json.lock") == ["dataset_info.json"]


@pytest.mark.parametrize("entry", ["notadict", ["x.json"], {"file_name": 5}])
def test_an_entry_that_is_not_an_object_is_one_error_before_the_engine(tmp_path, entry):
    """An eval whose dataset's entry is a string, a list, or has a file_name that is no file name:
    one Error naming dataset_info.json and the entry, before any engine starts (probe OW5)."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"x": entry}), encoding="utf-8")
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"model_name_or_path: {tmp_path / 'model'}\ntemplate: qwen\ndataset_dir: {folder}\n"
                      "models: [{name: base}]\ntasks: {qa: {dataset: x}}\nengine: {enforce_eager: true}\n",
                      encoding="utf-8")
    _one_error(run_lf_wrap("eval", recipe, "--out", tmp_path / "ev"), f"{folder / 'dataset_info.json'}: entry 'x'")
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("how", ["lock_is_a_folder", "read_only_folder", "read_only_parent"])
def test_a_dataset_folder_that_cannot_be_written_is_one_error(tmp_path, how):
    """`data add` and `data prepare` into a folder they cannot write (read-only, or its lock file's
    place taken by a folder): one Error naming --dataset-dir, exit 2, nothing written (probe PA8,
    PA9; the probe used a read-only tmpfs, which root cannot be kept out of by chmod)."""
    if how.startswith("read_only") and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder; the lock-file case takes the same path")
    parent = tmp_path / "ro"
    parent.mkdir()
    folder = parent / "ds" if how != "read_only_parent" else parent / "new" / "ds"
    if how != "read_only_parent":
        folder.mkdir()
    if how == "lock_is_a_folder":
        (folder / ".dataset_info.json.lock").mkdir()
    rows, cnn = _sources(tmp_path)
    locked = {"read_only_folder": folder, "read_only_parent": parent}.get(how)
    if locked is not None:
        os.chmod(locked, 0o555)
    try:
        for proc in _add_and_prepare(folder, rows, cnn):
            _one_error(proc, f"--dataset-dir {folder}: cannot write there")
    finally:
        if locked is not None:
            os.chmod(locked, 0o755)
    assert not [p for p in parent.rglob("*") if p.is_file()]
