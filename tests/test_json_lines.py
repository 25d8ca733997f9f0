"""Text that JSON carries raw and `str.splitlines()` would cut: U+2028, U+2029 and U+0085 inside
a string, a lone surrogate, CRLF line ends, a BOM. Every JSON-lines file lf-wrap writes or reads
(predictions, per-row scores, the search's ledger, `data add`'s input) ends a line at \\n only,
and what went in comes back out equal."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import read_json, run_lf_wrap
from lf_wrap.core import jsonlines
from lf_wrap.core.errors import UserError
from lf_wrap.data.add import add
from lf_wrap.evaluation.predictions import PredictionFile, read_lines
from lf_wrap.search.ledger import Ledger

ODD = ["left\u2028right", "para\u2029graph", "next\u0085line", "lone \ud800 surrogate", "nul\x00", "cr\rlf"]
META = {"model": "base", "model_path": "m", "max_new_tokens": 16, "template": "qwen"}


def _rows():
    return [{"row": i, "prompt_sha256": f"p{i}", "prediction": text, "references": [text]}
            for i, text in enumerate(ODD)]


def test_predictions_with_line_separators_are_written_resumed_and_read_back_equal(tmp_path):
    path = tmp_path / "predictions" / "base" / "qa.jsonl"
    PredictionFile(path, META).append(_rows()[:3])
    resumed = PredictionFile(path, META)              # the rerun: reads what is there, refuses nothing
    assert sorted(resumed.done) == [0, 1, 2]
    resumed.append(_rows()[3:])
    assert read_lines(path) == _rows()
    assert path.read_bytes().count(b"\n") == len(ODD)


def test_crlf_line_ends_read_the_same(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\r\n" for r in _rows()))
    assert read_lines(path) == _rows()


def test_a_torn_last_line_is_cut_once_and_the_row_generated_again(tmp_path):
    path = tmp_path / "predictions" / "base" / "qa.jsonl"
    PredictionFile(path, META).append(_rows()[:2])
    with open(path, "ab") as handle:
        handle.write('{"row": 2, "prediction": "half\u2028'.encode())
    resumed = PredictionFile(path, META)
    assert resumed.repaired and sorted(resumed.done) == [0, 1]
    assert read_lines(path) == _rows()[:2]


def test_the_search_ledger_keeps_a_score_whose_text_holds_a_line_separator(tmp_path):
    ledger = Ledger(tmp_path, "id-1")
    ledger.add({"rows": "search", "key": "linear[1]", "candidate": None, "metrics": {"qa": {"em": 1.0}},
                "per_row": {"qa": {"row_scores": [1.0]}}, "note": "\u2028".join(ODD)})
    again = Ledger(tmp_path, "id-1")
    assert again.get("search", "linear[1]")["note"] == "\u2028".join(ODD)


def _alpaca(text: str) -> dict:
    return {"instruction": f"Repeat: {text}", "input": "", "output": text}


@pytest.mark.parametrize("layout", ["jsonl", "jsonl_crlf", "jsonl_bom", "array", "array_bom"])
def test_data_add_keeps_every_character_of_the_rows(tmp_path, layout):
    """J15, J17, J19: U+2028/2029/0085 raw inside a JSON-lines string, an escaped lone surrogate,
    CRLF ends and a BOM are all valid input; the registered set holds the same strings."""
    rows = [_alpaca(text) for text in ODD]
    if layout.startswith("jsonl"):
        end = b"\r\n" if layout == "jsonl_crlf" else b"\n"
        data = b"".join(jsonlines.dumps(r).rstrip("\n").encode() + end for r in rows)
    else:
        data = json.dumps(rows, ensure_ascii=True).encode()
    if layout.endswith("bom"):
        data = b"\xef\xbb\xbf" + data
    source = tmp_path / "rows.src"
    source.write_bytes(data)
    result = add(source, "odd", tmp_path / "ds")
    assert json.loads(result.data_file.read_text(encoding="utf-8")) == rows


@pytest.mark.parametrize("line, says", [
    (b'{"instruction": "x", "output": ' + b"9" * 5000 + b"}", "malformed JSON line (Exceeds the limit"),
    (b"[" * 100000, "nested too deeply to read"),
    (b'{"instruction": "x", "output": "y", "n": NaN}', "NaN is not JSON"),
    (b'{"instruction": "x", "output": "y", "output": "z"}', "key 'output' appears twice"),
])
def test_data_add_refuses_what_would_not_read_back_the_same_with_one_error(tmp_path, line, says):
    """J22: a 5000-digit integer and deep nesting were tracebacks; NaN and a duplicated key were
    written silently (NaN is not JSON, and a duplicated key loses one of its values)."""
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b'{"instruction": "a", "output": "b"}\n' + line + b"\n")
    with pytest.raises(UserError) as caught:
        add(source, "bad", tmp_path / "ds")
    assert str(caught.value).startswith(f"{source}:2: ") and says in str(caught.value)
    assert not (tmp_path / "ds").exists()


def test_a_sharegpt_row_of_a_system_turn_alone_is_refused(tmp_path):
    """J24: it was registered as a row with no turn to train on."""
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps({"conversations": [{"from": "system", "value": "be brief"}]}) + "\n")
    with pytest.raises(UserError, match="a system turn alone"):
        add(source, "sys", tmp_path / "ds")


@pytest.mark.slow
def test_an_eval_whose_references_hold_line_separators_finishes_and_reruns(tiny_model, tmp_path):
    """J6-J9, J14: a reference holding U+2028/2029/0085 made every eval of its set fail at scoring,
    refuse the rerun, and fail again with --force. Now: scored, rerun with nothing generated,
    and `lf-wrap score`/`compare` read the file."""
    source = tmp_path / "src.jsonl"
    source.write_bytes(jsonlines.encode(_alpaca(f"Line {i}{sep}line two") for i, sep in
                                        enumerate(["\u2028", "\u2029", "\u0085", "\u2028"])))
    added = run_lf_wrap("data", "add", source, "--name", "r28", "--dataset-dir", tmp_path / "ds")
    assert added.returncode == 0, added.stderr
    recipe = {"model_name_or_path": str(tiny_model), "template": "qwen", "dataset_dir": str(tmp_path / "ds"),
              "models": [{"name": "base"}],
              "tasks": {"sumr": {"dataset": "r28", "metric": "rouge", "max_new_tokens": 8}},
              "engine": {"dtype": "float32", "max_model_len": 1024, "gpu_memory_utilization": 0.2,
                         "enforce_eager": True}}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "ev"
    first = run_lf_wrap("eval", path, "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    predictions = out / "predictions" / "base" / "sumr.jsonl"
    assert [r["references"] for r in read_lines(predictions)][0] == ["Line 0\u2028line two"]
    again = run_lf_wrap("eval", path, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_json(out / "manifest.json")["status"] == "finished"
    scored = run_lf_wrap("score", predictions, "--task", "sumr", "--metric", "rouge", "--json")
    assert scored.returncode == 0, scored.stderr
    compared = run_lf_wrap("compare", predictions, predictions, "--task", "sumr", "--metric", "rouge")
    assert compared.returncode == 0, compared.stderr


def test_data_add_never_replaces_a_set_data_prepare_wrote(tmp_path, sample_sources):
    """OW1: `data add --name shared` silently replaced the set `data prepare --name shared` had
    written (documented as "replaces entries it wrote itself", but across stages)."""
    from lf_wrap.data.prepare import PrepareOptions, prepare

    prepared = prepare("qa", str(sample_sources / "squad_v2" / "validation.jsonl"), "validation", 6,
                       options=PrepareOptions(name="shared", dataset_dir=tmp_path / "ds"))
    before = prepared.data_file.read_bytes()
    source = tmp_path / "rows.jsonl"
    source.write_bytes(jsonlines.encode([_alpaca("x")]))
    with pytest.raises(UserError, match="is a set `lf-wrap data prepare` wrote .*choose another --name"):
        add(source, "shared", tmp_path / "ds")
    assert prepared.data_file.read_bytes() == before
    assert add(source, "mine", tmp_path / "ds").manifest["rows_written"] == 1
    assert add(source, "mine", tmp_path / "ds").skipped                  # its own set: the same command again
    with pytest.raises(UserError, match="is a set `lf-wrap data add` wrote .*choose another --name"):
        prepare("qa", str(sample_sources / "squad_v2" / "validation.jsonl"), "validation", 6,
                options=PrepareOptions(name="mine", dataset_dir=tmp_path / "ds"))
    assert json.loads((tmp_path / "ds" / "mine.json").read_text())[0]["output"] == "x"


def test_a_bad_sharegpt_turn_after_a_system_turn_is_named_by_its_place_in_the_row(tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps({"conversations": [{"from": "system", "value": "s"}, {"from": "user", "value": "hi"},
                                                    {"from": "gpt", "value": "yo"}]}) + "\n")
    with pytest.raises(UserError, match=r"key 'conversations\.1\.from': 'user'"):
        add(source, "sg", tmp_path / "ds")
