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


def test_a_line_separator_before_a_malformed_line_does_not_shift_its_number(tmp_path, dataset_dir):
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a\u2028b", "highlights": "b", "id": "1"}\n{"article": "oops\n', encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir), dataset_dir, before, f"{src}:2: malformed JSON line")


def test_what_pyarrow_refuses_is_said_with_its_own_words(tmp_path, dataset_dir):
    """J21: an escaped lone surrogate was 'An error occurred while generating the dataset'."""
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "highlights": "b"}\n{"article": "x\\ud800", "highlights": "b"}\n',
                   encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir), dataset_dir, before, str(src),
                   "The surrogate pair in string is invalid")


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
    assert_refused(prepare_cli("qa", src, dataset_dir), dataset_dir, before, f"{src}:2:", "'question'")


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


def tree(folder):
    """Every file under `folder` (the lock file aside), so a write anywhere below shows."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != ".dataset_info.json.lock"}


@pytest.mark.parametrize("name", ["../../../other/ds/good_tr", "a b/c", "a\\b", "..", "x/../y", "ABSOLUTE", ""])
def test_dataset_name_is_a_plain_file_name(tmp_path, name):
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name
    dataset_dir = tmp_path / "x" / "y" / "z" / "ds"     # ../../../ stays inside tmp_path
    dataset_dir.mkdir(parents=True)
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "highlights": "b", "id": "1"}\n', encoding="utf-8")
    before = tree(tmp_path)
    proc = prepare_cli("summarize", src, dataset_dir, "--name", name, n="1")
    assert_refused(proc, dataset_dir, snapshot(dataset_dir), "--name")
    assert tree(tmp_path) == before


def test_unreachable_hub_id_is_one_line_and_offline_is_fast(dataset_dir):
    before = snapshot(dataset_dir)
    proc = run_lf_wrap("data", "prepare", "translate", "--source", "nobody/none", "--split", "train", "-n", "5",
                       "--dataset-dir", dataset_dir, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert_refused(proc, dataset_dir, before, "nobody/none", "local cache", "HF_HUB_OFFLINE", "local file")


def test_hub_errors_without_offline_mode_are_one_line(monkeypatch, tmp_path):
    """With network variables unset and no network, datasets raises LocalEntryNotFoundError after
    its retries; the same message must come out (checked without waiting for the retries)."""
    import datasets
    from huggingface_hub.errors import LocalEntryNotFoundError

    from lf_wrap.core.errors import UserError
    from lf_wrap.data.prepare import PrepareOptions, prepare

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(UserError, match=r"wmt/wmt19: could not be reached .* not in the local cache") as err:
        prepare("translate", "wmt/wmt19", "train", 5, options=PrepareOptions(dataset_dir=tmp_path / "ds"))
    assert "\n" not in err.value.message
    assert not (tmp_path / "ds" / "dataset_info.json").exists()


def test_dataset_dir_that_is_a_file(tmp_path):
    src = tmp_path / "cnn.jsonl"
    src.write_text('{"article": "a", "highlights": "b", "id": "1"}\n', encoding="utf-8")
    not_a_folder = tmp_path / "afile"
    not_a_folder.write_text("mine", encoding="utf-8")
    for dataset_dir in (not_a_folder, not_a_folder / "sub"):
        proc = prepare_cli("summarize", src, dataset_dir, n="1")
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "--dataset-dir" in errors[0] and str(not_a_folder) in errors[0]
    assert not_a_folder.read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_source_file_says_so(tmp_path, dataset_dir, content):
    src = tmp_path / "empty.jsonl"
    src.write_text(content, encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("summarize", src, dataset_dir), dataset_dir, before, str(src), "the file is empty")


def test_bad_row_of_a_jsonl_file_names_its_line(tmp_path, dataset_dir):
    src = tmp_path / "squad.jsonl"
    good = {"id": "1", "title": "t", "context": "c", "question": "q", "answers": {"text": ["c"], "answer_start": [0]}}
    bad = {k: v for k, v in good.items() if k != "question"}       # null in the split
    # line 1 good, line 2 blank (datasets skips it), line 3 good, line 4 bad: row 2 of the split
    src.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("qa", src, dataset_dir, n="3"), dataset_dir, before, f"{src}:4:", "'question'")


def test_bad_row_of_another_source_says_the_index_is_0_based(tmp_path, dataset_dir):
    import datasets

    src = tmp_path / "squad.parquet"
    good = {"id": "1", "title": "t", "context": "c", "question": "q", "answers": {"text": ["c"], "answer_start": [0]}}
    datasets.Dataset.from_list([good, {**good, "id": "2", "question": None}]).to_parquet(str(src))
    before = snapshot(dataset_dir)
    assert_refused(prepare_cli("qa", src, dataset_dir), dataset_dir, before,
                   "row 1 (0-based index in the split)", "'question'")


CNN_ROW = '{"article": "a", "highlights": "b", "id": "1"}\n'


@pytest.mark.parametrize("name", [".", ".hidden", "-x", "nl\nx", "x\n", "tab\tx", " x", "x ",
                                  "rlo\u202ex", "a" * 250])
def test_dataset_name_is_a_visible_file_name(tmp_path, name):
    """R2e, R2i: `.`, a hidden or option-like name, a name with a newline, a tab, an invisible
    character or surrounding spaces, or one too long for its manifest's file name."""
    dataset_dir = tmp_path / "ds"
    src = tmp_path / "cnn.jsonl"
    src.write_text(CNN_ROW, encoding="utf-8")
    before = tree(tmp_path)
    proc = prepare_cli("summarize", src, dataset_dir, "--name", name, n="1")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--name" in errors[0]
    assert tree(tmp_path) == before and not dataset_dir.exists()


@pytest.mark.parametrize("name", ["dataset_info", "DataSet_Info", "dataset_info.manifest"])
def test_registry_name_is_refused_in_a_fresh_folder(tmp_path, name):
    """R2g: the rows must never land in dataset_info.json (nor its case variant on macOS)."""
    dataset_dir = tmp_path / "fresh"
    src = tmp_path / "cnn.jsonl"
    src.write_text(CNN_ROW, encoding="utf-8")
    proc = prepare_cli("summarize", src, dataset_dir, "--name", name, n="1")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--name" in errors[0] and "dataset_info" in errors[0]
    assert not dataset_dir.exists()
    # the folder still takes a set afterwards
    assert prepare_cli("summarize", src, dataset_dir, "--name", "ok", n="1").returncode == 0


def test_a_name_cannot_be_another_sets_manifest(tmp_path):
    """R2f, x first: `x.manifest` would write its rows over x's manifest."""
    dataset_dir = tmp_path / "ds"
    src = tmp_path / "cnn.jsonl"
    src.write_text(CNN_ROW, encoding="utf-8")
    assert prepare_cli("summarize", src, dataset_dir, "--name", "x", n="1").returncode == 0
    before = snapshot(dataset_dir)
    proc = prepare_cli("summarize", src, dataset_dir, "--name", "x.manifest", n="1")
    assert_refused(proc, dataset_dir, before, "--name 'x.manifest'", "dataset 'x'")


def test_a_name_ending_in_manifest_is_refused(tmp_path):
    """R2f, x.manifest first: its rows in x.manifest.json would be overwritten by x's manifest."""
    dataset_dir = tmp_path / "ds"
    src = tmp_path / "cnn.jsonl"
    src.write_text(CNN_ROW, encoding="utf-8")
    proc = prepare_cli("summarize", src, dataset_dir, "--name", "x.manifest", n="1")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "--name 'x.manifest'" in errors[0] and not dataset_dir.exists()


def test_a_set_registered_before_the_rule_keeps_its_rows(tmp_path):
    """R2f, x.manifest registered by an older lf-wrap: preparing `x` would write x's manifest
    over x.manifest's rows; refused, naming the entry that owns the file."""
    dataset_dir = tmp_path / "ds"
    dataset_dir.mkdir()
    rows = [{"instruction": "i", "input": "", "output": "o"}]
    (dataset_dir / "x.manifest.json").write_text(json.dumps(rows), encoding="utf-8")
    (dataset_dir / "x.manifest.manifest.json").write_text(json.dumps({"written_by": "lf-wrap"}), encoding="utf-8")
    entry = {"file_name": "x.manifest.json", "formatting": "alpaca",
             "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    (dataset_dir / "dataset_info.json").write_text(json.dumps({"x.manifest": entry}), encoding="utf-8")
    src = tmp_path / "cnn.jsonl"
    src.write_text(CNN_ROW, encoding="utf-8")
    before = snapshot(dataset_dir)
    proc = prepare_cli("summarize", src, dataset_dir, "--name", "x", n="1")
    assert_refused(proc, dataset_dir, before, "--name 'x'", "dataset 'x.manifest'", "x.manifest.json")


def test_a_name_cannot_take_another_entrys_file(tmp_path, dataset_dir):
    """A user's entry 'theirs' points at new.json (not written yet): `--name new` would fill it."""
    info = {**USER_ENTRY, "theirs": {"file_name": "new.json"}}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    src = tmp_path / "cnn.jsonl"
    src.write_text(CNN_ROW, encoding="utf-8")
    before = snapshot(dataset_dir)
    proc = prepare_cli("summarize", src, dataset_dir, "--name", "new", n="1")
    assert_refused(proc, dataset_dir, before, "--name 'new'", "dataset 'theirs'")


def test_a_manifest_lf_wrap_did_not_write_is_kept(tmp_path, dataset_dir):
    (dataset_dir / "notes.manifest.json").write_text('{"mine": true}', encoding="utf-8")
    src = tmp_path / "cnn.jsonl"
    src.write_text(CNN_ROW, encoding="utf-8")
    before = snapshot(dataset_dir)
    proc = prepare_cli("summarize", src, dataset_dir, "--name", "notes", n="1")
    assert_refused(proc, dataset_dir, before, "notes.manifest.json", "not written by lf-wrap")


def test_a_failed_write_leaves_the_set_as_it_was(tmp_path, monkeypatch, sample_sources):
    """All or none: the disk fills up while dataset_info.json is written; the set prepared
    before (rows, manifest, entry) is still the one on disk."""
    import tempfile

    from lf_wrap.data.prepare import PrepareOptions, prepare

    folder = tmp_path / "ds"
    src = str(sample_sources / "squad_v2" / "train.jsonl")
    prepare("qa", src, "train", 5, options=PrepareOptions(dataset_dir=folder, name="qa_small"))
    before = snapshot(folder)
    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, **kwargs):
        if "dataset_info.json" in kwargs.get("prefix", ""):
            raise OSError(28, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    with pytest.raises(OSError, match="No space left"):
        prepare("qa", src, "train", 7, options=PrepareOptions(dataset_dir=folder, name="qa_small"))
    assert snapshot(folder) == before
    assert not [p.name for p in folder.iterdir() if p.name not in before and p.name != ".dataset_info.json.lock"]
