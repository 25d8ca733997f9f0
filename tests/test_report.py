"""`lf-wrap report` turns an eval folder into the study's table (SPEC §4), fed here with the
study's own numbers."""

from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import read_json, run_lf_wrap
from lf_wrap.core.files import atomic_write_json

# SPEC §4: the study's results (base's qa EM is missing there).
STUDY = {
    "base": {"translate": 0.1964, "summarize": 0.2967, "qa": None},
    "lora_translate": {"translate": 0.2095, "summarize": 0.2966, "qa": 0.7783},
    "lora_summarize": {"translate": 0.2128, "summarize": 0.3759, "qa": 0.7506},
    "lora_qa": {"translate": 0.2041, "summarize": 0.3078, "qa": 0.8289},
    "merge_3in1": {"translate": 0.2047, "summarize": 0.3117, "qa": 0.7811},
}
OWN = {"lora_translate": "translate", "lora_summarize": "summarize", "lora_qa": "qa"}
KEY = {"translate": "bleu", "summarize": "rouge1", "qa": "exact_match"}


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results"
    models = []
    for name in STUDY:
        kind = "base" if name == "base" else "full" if name == "merge_3in1" else "adapter"
        path = tmp_path / "runs" / name
        path.mkdir(parents=True)
        if kind == "adapter":   # LLaMA-Factory's trainer_log.jsonl: one line per logged step
            (path / "trainer_log.jsonl").write_text("".join(
                json.dumps({"current_steps": s, "total_steps": 20, "loss": 2.5 / s, "lr": 5e-6}) + "\n"
                for s in range(1, 21)) + json.dumps({"current_steps": 20, "eval_loss": 1.0}) + "\n")
        models.append({"name": name, "kind": kind, "path": str(path), "task": OWN.get(name)})
    metrics = {name: {task: {KEY[task]: value} for task, value in scores.items() if value is not None}
               for name, scores in STUDY.items()}
    metrics["lora_qa"]["summarize"].update({"rouge2": 0.1, "rougeL": 0.2, "rougeLsum": 0.25})
    atomic_write_json(folder / "metrics.json", {"metrics": metrics, "counts": {}})
    atomic_write_json(folder / "manifest.json", {"models": models})
    return folder


def test_report_reproduces_the_study_table(results):
    done = run_lf_wrap("report", results)
    assert done.returncode == 0, done.stderr
    markdown = (results / "table.md").read_text()
    assert markdown.startswith(
        "| metric | base | lora_translate | lora_summarize | lora_qa | merge_3in1 |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        "| translate BLEU | 0.1964 | **0.2095** | 0.2128 | 0.2041 | 0.2047 |\n"
        "| summarize ROUGE-1 | 0.2967 | 0.2966 | **0.3759** | 0.3078 | 0.3117 |\n"
        "| qa EM | (missing) | 0.7783 | 0.7506 | **0.8289** | 0.7811 |\n"
        # the study's means; base's needs its missing qa score
        "| mean | (missing) | 0.4281 | 0.4464 | 0.4469 | 0.4325 |\n")
    assert "| translate BLEU | **+0.0131** | +0.0164 | +0.0077 | +0.0083 |" in markdown
    assert "| qa EM | (missing) | (missing) | (missing) | (missing) |" in markdown
    assert markdown in done.stdout


def test_report_json_and_csv_carry_the_same_matrix(results):
    run_lf_wrap("report", results)
    table = read_json(results / "table.json")
    assert table["rows"] == ["translate BLEU", "summarize ROUGE-1", "qa EM", "mean"]
    assert table["values"]["lora_summarize"]["summarize ROUGE-1"] == 0.3759
    assert table["own_task"] == {"base": None, "lora_translate": "translate BLEU",
                                 "lora_summarize": "summarize ROUGE-1", "lora_qa": "qa EM", "merge_3in1": None}
    assert table["gain_over_base"]["merge_3in1"]["summarize ROUGE-1"] == pytest.approx(0.3117 - 0.2967)
    assert table["all_metrics"]["lora_qa"]["summarize ROUGE-Lsum"] == 0.25
    assert all(table["higher_is_better"].values())
    rows = list(csv.reader(io.StringIO((results / "table.csv").read_text())))
    assert rows[0] == ["metric", "base", "lora_translate", "lora_summarize", "lora_qa", "merge_3in1"]
    assert rows[1] == ["translate BLEU", "0.196400", "0.209500", "0.212800", "0.204100", "0.204700"]
    assert rows[3][1] == ""                                  # base qa: missing
    assert rows[5][0] == "translate BLEU gain over base" and rows[5][2] == "+0.013100"
    assert rows[-1] == ["own_task", "", "translate BLEU", "summarize ROUGE-1", "qa EM", ""]


def test_report_draws_the_chart_and_the_loss_curves(results):
    run_lf_wrap("report", results)
    for name in ("chart.png", "loss_curves.png"):
        data = (results / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    from lf_wrap.evaluation.report import read_loss

    steps, losses = read_loss(results.parent / "runs" / "lora_qa" / "trainer_log.jsonl")
    assert steps == list(range(1, 21)) and losses[0] == 2.5      # the eval_loss line is not a training loss


def test_report_without_eval_results_is_a_clear_error(tmp_path):
    done = run_lf_wrap("report", tmp_path)
    assert done.returncode == 2 and "metrics.json not found" in done.stderr
    assert not (tmp_path / "table.md").exists()


def _eval_folder(tmp_path, metrics: dict, counts: dict, declared: dict | None = None):
    """A results folder shaped as `lf-wrap eval` writes it: counts for every task of the recipe."""
    folder = tmp_path / "results"
    doc = {"metrics": metrics, "counts": counts}
    if declared is not None:
        doc["tasks"] = declared
    atomic_write_json(folder / "metrics.json", doc)
    atomic_write_json(folder / "manifest.json", {"models": [
        {"name": name, "kind": "base" if name == "base" else "full", "path": str(tmp_path / name), "task": None}
        for name in metrics]})
    return folder


def test_mean_only_where_every_task_of_the_recipe_was_scored(tmp_path):
    rows = lambda n: {"rows": n, "skipped_too_long": 8 - n, "truncated": 0}   # noqa: E731
    # summarize: every prompt too long for base and lora_qa (whose stale file still scores), none for merged
    counts = {"base": {"translate": rows(8), "summarize": rows(0), "qa": rows(8)},
              "lora_qa": {"translate": rows(8), "summarize": rows(0), "qa": rows(8)},
              "merged": {"translate": rows(8), "summarize": rows(8), "qa": rows(8)}}
    metrics = {"base": {"translate": {"bleu": 0.2}, "qa": {"exact_match": 0.4, "f1": 0.5}},
               "lora_qa": {"translate": {"bleu": 0.2}, "summarize": {"rouge1": 0.9}, "qa": {"exact_match": 0.6}},
               "merged": {"translate": {"bleu": 0.3}, "summarize": {"rouge1": 0.3}, "qa": {"exact_match": 0.6}}}
    folder = _eval_folder(tmp_path, metrics, counts)
    done = run_lf_wrap("report", folder)
    assert done.returncode == 0, done.stderr
    table = read_json(folder / "table.json")
    assert table["rows"] == ["translate BLEU", "summarize ROUGE-1", "qa EM", "mean"]
    assert table["values"]["base"]["mean"] is None and table["values"]["lora_qa"]["mean"] is None
    assert table["values"]["lora_qa"]["summarize ROUGE-1"] is None      # zero rows scored: not scored
    assert table["values"]["merged"]["mean"] == pytest.approx(0.4)
    assert "| mean | (missing) | (missing) | 0.4000 |" in (folder / "table.md").read_text()


def test_unknown_task_in_metrics_json_is_an_error(tmp_path):
    folder = _eval_folder(tmp_path, {"base": {"translate": {"bleu": 0.2}, "poetry": {"bleu": 0.1}}}, {})
    done = run_lf_wrap("report", folder)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"Error: {folder / 'metrics.json'}: unknown task 'poetry'"
    assert not (folder / "table.md").exists()


def test_a_declared_task_of_your_own_has_its_row(tmp_path):
    metrics = {"base": {"qa": {"exact_match": 0.5, "f1": 0.6}, "my_ner": {"exact_match": 0.25}},
               "tuned": {"qa": {"exact_match": 0.7, "f1": 0.8}, "my_ner": {"exact_match": 0.75}}}
    folder = _eval_folder(tmp_path, metrics, {}, declared={"qa": {"metric": "squad_v2"},
                                                         "my_ner": {"metric": "exact_match"}})
    done = run_lf_wrap("report", folder)
    assert done.returncode == 0, done.stderr
    table = read_json(folder / "table.json")
    assert table["rows"] == ["qa EM", "my_ner EM", "mean"]
    assert table["values"]["tuned"] == {"qa EM": 0.7, "my_ner EM": 0.75, "mean": pytest.approx(0.725)}
    assert "| my_ner EM | 0.2500 | 0.7500 |" in (folder / "table.md").read_text()
