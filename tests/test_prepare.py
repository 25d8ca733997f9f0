"""`lf-wrap data prepare`: the study's prompts, filters, sampling and the manifest."""

from __future__ import annotations

import json

import pytest

from conftest import read_json, run_lf_wrap
from lf_wrap.core.files import sha256_file
from lf_wrap.data.prepare import PrepareOptions, prepare, summary

# The study's prompts, typed out here independently of lf_wrap.tasks (SPEC §2).
TRANSLATE = "请把下面的句子翻译为英文\uff1a\n"
SUMMARIZE = "Please generate an concise summarization for the following article\uff1a\n:"
QA = ("Please answer the question in the context above, you only need to output the text of the "
      "answer, no explanation\uff1a\ntitle:")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_translate_prompt_and_nested_or_flat_rows(tmp_path):
    nested = write_jsonl(tmp_path / "nested.jsonl", [{"translation": {"zh": "我喜欢茶。", "en": "I like tea."}}])
    flat = write_jsonl(tmp_path / "flat.jsonl", [{"en": "I like tea.", "zh": "我喜欢茶。"}])
    for i, source in enumerate((nested, flat)):
        result = prepare("translate", str(source), "train", 1,
                         options=PrepareOptions(dataset_dir=tmp_path / "ds", name=f"t{i}"))
        rows = read_json(result.data_file)
        assert rows == [{"instruction": TRANSLATE + "我喜欢茶。", "input": "", "output": "I like tea."}]


def test_summarize_and_qa_prompts_keep_ids(tmp_path):
    cnn = write_jsonl(tmp_path / "cnn.jsonl", [{"article": "A dog ran.", "highlights": "Dog ran .", "id": "abc"}])
    squad = write_jsonl(tmp_path / "squad.jsonl", [{
        "id": "q1", "title": "Dogs", "context": "A dog ran home.", "question": "Who ran?",
        "answers": {"text": ["A dog", "dog"], "answer_start": [0, 2]}}])
    out = tmp_path / "ds"
    s = read_json(prepare("summarize", str(cnn), "validation", 1, options=PrepareOptions(dataset_dir=out)).data_file)
    q = read_json(prepare("qa", str(squad), "validation", 1, options=PrepareOptions(dataset_dir=out)).data_file)
    assert s == [{"instruction": SUMMARIZE + "A dog ran.", "input": "", "output": "Dog ran .", "id": "abc"}]
    assert q == [{"instruction": QA + "Dogs\ncontext:A dog ran home.\nquestion:Who ran?", "input": "",
                  "output": "A dog", "answers": ["A dog", "dog"], "id": "q1"}]
    assert (out / "alpaca_cnn_dailymail_validation_1.json").exists()
    assert (out / "alpaca_squad_v2_validation_1.json").exists()


def test_keyword_filter_is_case_insensitive_and_counted(tmp_path):
    rows = [{"translation": {"zh": z, "en": e}} for z, e in [
        ("他喜欢茶。", "He likes tea."),
        ("他去了北京。", "He went to CHINA."),
        ("她会说中文。", "She speaks Chinese."),
        ("共产党开会。", "A meeting was held."),
        ("中共的新闻。", "News."),
        ("他读了新闻。", "He read about xi jinping."),
        ("他们开会。", "The communist party met."),
        ("我们吃饭。", "We eat."),
    ]]
    result = prepare("translate", str(write_jsonl(tmp_path / "t.jsonl", rows)), "train", 8,
                     options=PrepareOptions(dataset_dir=tmp_path / "ds"))
    kept = [r["output"] for r in read_json(result.data_file)]
    assert sorted(kept) == ["He likes tea.", "We eat."]
    assert result.manifest["rows_dropped"]["keyword"] == 6
    assert result.name == "alpaca_wmt19_zh-en_train_2"  # named by rows written, as the study did


def test_keyword_list_is_configuration(tmp_path):
    words = tmp_path / "words.yaml"
    words.write_text("drop_keywords: [tea]\n", encoding="utf-8")
    rows = [{"translation": {"zh": "茶", "en": "Tea."}}, {"translation": {"zh": "中国", "en": "China."}}]
    result = prepare("translate", str(write_jsonl(tmp_path / "t.jsonl", rows)), "train", 2,
                     options=PrepareOptions(dataset_dir=tmp_path / "ds", keywords_file=words))
    assert [r["output"] for r in read_json(result.data_file)] == ["China."]
    assert result.manifest["filters"]["keywords"] == ["tea"]


def test_sampling_is_deterministic_and_seeded(tmp_path, sample_sources):
    source = str(sample_sources / "cnn_dailymail" / "train.jsonl")
    a = prepare("summarize", source, "train", 20, options=PrepareOptions(dataset_dir=tmp_path / "a", seed=7))
    b = prepare("summarize", source, "train", 20, options=PrepareOptions(dataset_dir=tmp_path / "b", seed=7))
    c = prepare("summarize", source, "train", 20, options=PrepareOptions(dataset_dir=tmp_path / "c", seed=8))
    assert a.data_file.read_bytes() == b.data_file.read_bytes()
    assert a.data_file.read_bytes() != c.data_file.read_bytes()
    # Re-running the same command leaves every byte as it was (manifest and dataset_info.json
    # included) and says it skipped; another seed into the same folder rewrites it.
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir() if p.is_file()}
    again = prepare("summarize", source, "train", 20, options=PrepareOptions(dataset_dir=tmp_path / "a", seed=7))
    after = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir() if p.is_file()}
    assert before == after and again.skipped and "unchanged" in summary(again)
    other = prepare("summarize", source, "train", 20, options=PrepareOptions(dataset_dir=tmp_path / "a", seed=9,
                                                                               name=a.name))
    assert not other.skipped and other.manifest["seed"] == 9
    assert other.data_file.read_bytes() != before[other.data_file.name]


def test_manifest_records_counts_and_hash(tmp_path, sample_sources):
    result = prepare("translate", str(sample_sources / "wmt19_zh-en" / "train.jsonl"), "train", 200,
                     options=PrepareOptions(dataset_dir=tmp_path))
    m = read_json(tmp_path / f"{result.name}.manifest.json")
    assert m["rows_read"] == 200 and m["seed"] == 42 and m["split"] == "train"
    assert m["rows_written"] + sum(m["rows_dropped"].values()) == 200
    assert m["rows_dropped"]["keyword"] > 0  # the samples carry some China/Chinese pairs
    assert m["sha256"] == sha256_file(result.data_file)
    assert m["lf_wrap_version"] and m["source_rows"] > 200


def test_qa_unanswerable_keep_or_drop(tmp_path):
    rows = [{"id": str(i), "title": "T", "context": "Ann was born in Oslo.", "question": q,
             "answers": a} for i, (q, a) in enumerate([
                 ("Where was Ann born?", {"text": ["Oslo"], "answer_start": [16]}),
                 ("What is Ann's dog called?", {"text": [], "answer_start": []})])]
    source = str(write_jsonl(tmp_path / "q.jsonl", rows))
    kept = prepare("qa", source, "train", 2, options=PrepareOptions(dataset_dir=tmp_path / "k", no_answer_text="N/A"))
    assert sorted(r["output"] for r in read_json(kept.data_file)) == ["N/A", "Oslo"]
    assert kept.manifest["filters"]["no_answer_text"] == "N/A"
    dropped = prepare("qa", source, "train", 2, options=PrepareOptions(dataset_dir=tmp_path / "d", unanswerable="drop"))
    assert [r["output"] for r in read_json(dropped.data_file)] == ["Oslo"]
    assert dropped.manifest["rows_dropped"]["unanswerable"] == 1
    assert dropped.manifest["filters"]["unanswerable"] == "drop"


def test_cutoff_len_filter_counts_tokens(tmp_path, tiny_model):
    rows = [{"article": "word " * k, "highlights": "short .", "id": str(k)} for k in (5, 400)]
    result = prepare("summarize", str(write_jsonl(tmp_path / "c.jsonl", rows)), "train", 2,
                     options=PrepareOptions(dataset_dir=tmp_path / "ds", cutoff_len=100, tokenizer=str(tiny_model)))
    assert [r["id"] for r in read_json(result.data_file)] == ["5"]
    assert result.manifest["rows_dropped"]["cutoff_len"] == 1


@pytest.mark.parametrize("fmt", ["json", "parquet", "save_to_disk"])
def test_local_formats_of_the_same_schema(tmp_path, fmt):
    import datasets

    rows = [{"article": f"Article {i}.", "highlights": f"Highlight {i} .", "id": str(i)} for i in range(10)]
    ds = datasets.Dataset.from_list(rows)
    path = tmp_path / {"json": "cnn.json", "parquet": "cnn.parquet", "save_to_disk": "cnn_disk"}[fmt]
    if fmt == "json":  # a JSON array, as the study's files are
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "parquet":
        ds.to_parquet(str(path))
    else:
        datasets.DatasetDict({"validation": ds}).save_to_disk(str(path))
    result = prepare("summarize", str(path), "validation", 5, options=PrepareOptions(dataset_dir=tmp_path / "ds"))
    assert len(read_json(result.data_file)) == 5


def test_cli_prints_what_it_wrote(tmp_path, sample_sources):
    proc = run_lf_wrap("data", "prepare", "qa", "--source", sample_sources / "squad_v2" / "validation.jsonl",
                       "--split", "validation", "-n", "10", "--dataset-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "alpaca_squad_v2_validation_10" in proc.stdout
    assert "alpaca_squad_v2_validation_10" in read_json(tmp_path / "dataset_info.json")


@pytest.mark.parametrize("task, rows", [
    ("translate", [{"translation": {"zh": z, "en": e}} for z, e in
                   [("", "Tea."), ("茶", " \n"), ("  ", ""), ("茶", "Tea.")]]),
    ("summarize", [{"article": a, "highlights": h, "id": str(i)} for i, (a, h) in
                   enumerate([("", "H ."), ("A dog ran.", "\t"), ("A dog ran.", "Dog ran .")])]),
    ("qa", [{"id": str(i), "title": "T", "context": c, "question": q, "answers": {"text": ["x"], "answer_start": [0]}}
            for i, (c, q) in enumerate([("", "Who?"), ("x was here.", "   "), ("x was here.", "Who?")])]),
])
def test_rows_with_an_empty_field_are_dropped_and_counted(tmp_path, task, rows):
    source = str(write_jsonl(tmp_path / "s.jsonl", rows))
    result = prepare(task, source, "train", len(rows), options=PrepareOptions(dataset_dir=tmp_path / "ds"))
    assert len(read_json(result.data_file)) == 1
    assert result.manifest["rows_dropped"]["empty"] == len(rows) - 1
    assert result.manifest["rows_written"] + sum(result.manifest["rows_dropped"].values()) == len(rows)
    assert f"empty {len(rows) - 1}" in summary(result)


def test_manifest_opens_with_the_shared_header(tmp_path, sample_sources):
    from lf_wrap.core.manifest import HEADER_KEYS

    result = prepare("qa", str(sample_sources / "squad_v2" / "validation.jsonl"), "validation", 10,
                     options=PrepareOptions(dataset_dir=tmp_path))
    manifest = read_json(tmp_path / f"{result.name}.manifest.json")
    assert list(manifest)[:len(HEADER_KEYS)] == list(HEADER_KEYS)
    assert manifest["stage"] == "prepare" and manifest["status"] == "finished" and manifest["seconds"] >= 0


def test_a_source_edited_in_place_with_its_time_set_back_is_read_afresh(tmp_path):
    """D1: `datasets` keys its Arrow copy of a local file by path, size and mtime; a file edited in
    place (same size) with its mtime restored was read from the old copy, and the manifest had no
    digest of the source to notice. D2: the copy lives under lf-wrap's cache, one per source."""
    import hashlib
    import os

    from lf_wrap.core.environments import cache_root

    rows = [{"translation": {"zh": f"句子{i}。", "en": f"text {i}"}} for i in range(6)]
    source = write_jsonl(tmp_path / "src.jsonl", rows)
    first = prepare("translate", str(source), "train", 6, options=PrepareOptions(dataset_dir=tmp_path / "a", name="a"))
    before = os.stat(source)
    source.write_text(source.read_text(encoding="utf-8").replace("text 3", "TEXT 3"), encoding="utf-8")
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(source).st_size == before.st_size
    second = prepare("translate", str(source), "train", 6, options=PrepareOptions(dataset_dir=tmp_path / "b", name="b"))
    assert "TEXT 3" in second.data_file.read_text(encoding="utf-8")
    digests = [r.manifest["source_files"][str(source.resolve())] for r in (first, second)]
    assert digests[0] != digests[1] and all(d.startswith("blake3:") for d in digests)
    paths = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    assert len(list((cache_root() / "datasets").glob(f"{paths}-*"))) == 1     # the older copy was deleted
