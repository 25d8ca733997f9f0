"""An eval resuming onto prediction files a user (or a crash) damaged: the meta file beside them
and the lines themselves. The checks run when the file is opened, before any engine starts, so
these tests open `PredictionFile` directly; the message is what `lf-wrap eval` prints after
`Error: `."""

from __future__ import annotations

import json

import pytest

from lf_wrap.core.errors import UserError
from lf_wrap.evaluation.predictions import PredictionFile, meta_path

META = {"model": "base", "model_path": "m", "max_new_tokens": 16, "template": "qwen"}


@pytest.fixture
def written(tmp_path):
    """A predictions file of two rows with its meta file, as a finished eval leaves it."""
    path = tmp_path / "predictions" / "base" / "qa.jsonl"
    PredictionFile(path, META).append([{"row": r, "prompt_sha256": f"p{r}", "prediction": "x", "references": []}
                                       for r in (0, 1)])
    return path


@pytest.mark.parametrize("case,content,says", [
    ("E1_list", b"[]", "it holds list [], not a JSON object"),
    ("E2_string", b'"x"', 'it holds str "x", not a JSON object'),
    ("E5_not_utf8", b"\xff\xfe", "not UTF-8 text (byte at offset 0)"),
    ("not_json", b"{", "not valid JSON"),
])
def test_a_meta_file_that_is_not_an_object_is_one_error_naming_it(written, case, content, says):
    meta_path(written).write_bytes(content)
    with pytest.raises(UserError) as caught:
        PredictionFile(written, META)
    message = str(caught.value)
    assert message.startswith(f"{meta_path(written)}: cannot tell what qa.jsonl was generated with: {says}")
    assert message.endswith("; move it away, or pass --force to regenerate the predictions")


@pytest.mark.parametrize("force", [False, True])
def test_a_meta_file_that_is_a_folder_is_one_error_naming_it(written, force):
    meta_path(written).unlink()
    meta_path(written).mkdir()
    with pytest.raises(UserError) as caught:
        PredictionFile(written, META, force=force)
    assert str(caught.value) == (f"{meta_path(written)}: a folder where lf-wrap keeps what qa.jsonl was generated "
                                 "with; move it away")


def test_a_missing_meta_file_says_it_is_missing(written):
    """E4: not `generated with model_path=None`, which reads as if a setting had changed."""
    meta_path(written).unlink()
    with pytest.raises(UserError) as caught:
        PredictionFile(written, META)
    assert str(caught.value) == (f"model 'base': {written}: its qa.meta.json, which records what the rows were "
                                 "generated with, is missing; its rows are not reused. Pass --force to regenerate "
                                 "them, or --out for a new folder")


def test_a_line_that_is_not_utf8_is_one_error_naming_file_line_and_byte(written):
    """K1: the reader `lf-wrap score` uses, instead of a UnicodeDecodeError traceback."""
    line = b'{"row": 99, "prompt_sha256": "p", "prediction": "\xff"}\n'
    offset = written.stat().st_size + line.index(b"\xff")
    with open(written, "ab") as handle:
        handle.write(line)
    with pytest.raises(UserError) as caught:
        PredictionFile(written, META)
    assert str(caught.value) == (f"{written}:3: not UTF-8 text (byte 0xff at offset {offset}); "
                                 "prediction files are UTF-8 JSON lines")


def test_a_row_written_twice_is_refused_before_it_is_scored_twice(written):
    with open(written, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"row": 0, "prompt_sha256": "p0", "prediction": "y", "references": []}) + "\n")
    with pytest.raises(UserError) as caught:
        PredictionFile(written, META)
    assert str(caught.value) == (f"{written}:3: row 0 appears twice (also line 1); pass --force to regenerate "
                                 "the file")


def test_an_intact_file_still_resumes(written):
    assert PredictionFile(written, META).done == {0: "p0", 1: "p1"}


def test_an_exact_match_task_on_unanswerable_rows_is_refused_before_any_engine(tmp_path):
    """SEC11: an `answers: []` row cannot be scored by exact_match; say so while loading the
    dataset, not after the engine generated every row."""
    from lf_wrap.evaluation.recipe import EvalRecipe
    from lf_wrap.evaluation.requests import load_task

    rows = [{"instruction": "Capital of Norway?", "input": "", "output": "Oslo", "answers": ["Oslo"]},
            {"instruction": "Capital of Atlantis?", "input": "", "output": "unanswerable", "answers": []}]
    (tmp_path / "cities.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"cities": {"file_name": "cities.json"}}))
    recipe = EvalRecipe.model_validate({"model_name_or_path": "m", "dataset_dir": str(tmp_path),
                                        "models": [{"name": "base"}],
                                        "tasks": {"capitals": {"dataset": "cities", "metric": "exact_match"},
                                                  "capitals_v2": {"dataset": "cities", "metric": "squad_v2"}}})
    with pytest.raises(UserError) as caught:
        load_task(recipe, "capitals")
    assert str(caught.value) == (f"{tmp_path / 'cities.json'}: row 1: task 'capitals' (metric exact_match) needs at "
                                 "least one reference, and its 'answers' is [] ([] means unanswerable, for qa or a "
                                 "task scored with squad_v2 only)")
    assert len(load_task(recipe, "capitals_v2").rows) == 2          # squad_v2 scores unanswerable rows
