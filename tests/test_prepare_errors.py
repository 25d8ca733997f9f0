"""Bad input to `lf-wrap data prepare`: one clear message, non-zero exit, nothing changed."""

from __future__ import annotations

import json

import pytest

from conftest import run_lf_wrap

USER_ENTRY = {"my_data": {"file_name": "my_data.json"}}


@pytest.fixture
def dataset_dir(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps(USER_ENTRY), encoding="utf-8")
    (folder / "my_data.json").write_text("[]", encoding="utf-8")
    return folder


def snapshot(folder):
    """Every file but the hidden lock file that guards dataset_info.json."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".dataset_info.json.lock"}


def prepare_cli(task, source, dataset_dir, *extra, n="2"):
    return run_lf_wrap("data", "prepare", task, "--source", source, "--split", "train", "-n", n,
                       "--dataset-dir", dataset_dir, *extra)


def assert_refused(proc, dataset_dir, before, *needles):
    assert proc.returncode != 0
    # datasets may print its progress bar first; the message is one line starting with "Error:".
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    message = errors[0]
    for needle in needles:
        assert needle in message, message
    assert snapshot(dataset_dir) == before


def test_missing_column(tmp_path, dataset_dir):
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "id": "1"}\n{"article": "b", "id": "2"}\n', encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir), dataset_dir, before, str(src), "'highlights'")


def test_malformed_json_line_names_file_and_line(tmp_path, dataset_dir):
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "highlights": "b", "id": "1"}\n{"article": "oops\n', encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir), dataset_dir, before, f"{src}:2")


def test_empty_source(tmp_path, dataset_dir):
    src = tmp_path / "empty.jsonl"
    src.write_text("", encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir), dataset_dir, before, str(src))


def test_n_larger_than_source(tmp_path, dataset_dir):
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "highlights": "b", "id": "1"}\n', encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir, n="5"), dataset_dir, before, "-n 5", "1 rows")


def test_unknown_task(tmp_path, dataset_dir):
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("poetry", tmp_path / "x.jsonl", dataset_dir), dataset_dir, before, "poetry")


def test_missing_source_file(tmp_path, dataset_dir):
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("qa", tmp_path / "nope.jsonl", dataset_dir), dataset_dir, before, "nope.jsonl")


def test_row_with_wrong_shape_names_the_row(tmp_path, dataset_dir):
    src = tmp_path / "squad.jsonl"
    rows = [{"id": "1", "title": "t", "context": "c", "question": "q", "answers": {"text": ["c"], "answer_start": [0]}},
            {"id": "2", "title": "t", "context": "c", "question": None, "answers": {"text": [], "answer_start": []}}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("qa", src, dataset_dir), dataset_dir, before, "row 1", "'question'")


def test_name_clash_with_someone_elses_entry(tmp_path, dataset_dir):
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "highlights": "b", "id": "1"}\n', encoding="utf-8")
    before = snapshot(dataset_dir)
    proc = prepare_cli("summarize", src, dataset_dir, "--name", "my_data", n="1")
    assert_refused(proc, dataset_dir, before, "my_data", "not written by lf-wrap")


def test_broken_dataset_info_is_never_overwritten(tmp_path, dataset_dir):
    (dataset_dir / "dataset_info.json").write_text("{not json", encoding="utf-8")
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "highlights": "b", "id": "1"}\n', encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir, n="1"), dataset_dir, before, "dataset_info.json", "line 1")
