"""A task of your own, declared in the eval recipe with no code change: an alpaca set already
registered in dataset_info.json plus a metric family, scored and tabled like the study's tasks.

One eval run on the tiny model: the base and one adapter (trained, says the recipe, for the
user's task), the study's qa beside four tasks of the user's own (exact_match, squad_v2, chrf,
and a metric function of the user's own, my_metrics.py:contains)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import read_json, run_lf_wrap
from helpers.adapters import make_trained_adapter

pytestmark = pytest.mark.slow

# A user's own alpaca set (output = the reference), registered the way LLaMA-Factory reads it.
NER_ROWS = [{"instruction": f"Which city is named in: {text}", "input": "", "output": city}
            for text, city in [("I flew to Paris.", "Paris"), ("Oslo is cold.", "Oslo"),
                               ("Rome was not built in a day.", "Rome"), ("Nothing here.", "unanswerable"),
                               ("Lima and Quito.", "Lima")]]

METRIC_FILE = '''
def contains(prediction, references):
    """1 when the reference appears in the prediction."""
    return float(any(r.lower() in prediction.lower() for r in references))
'''


@pytest.fixture(scope="module")
def evaluated(tiny_model, prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("user_task")
    dataset_dir = root / "dataset_info"
    shutil.copytree(prepared, dataset_dir)
    (dataset_dir / "my_cities.json").write_text(json.dumps(NER_ROWS, ensure_ascii=False), encoding="utf-8")
    info = read_json(dataset_dir / "dataset_info.json")
    info["my_cities"] = {"file_name": "my_cities.json"}          # alpaca is LLaMA-Factory's default
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    adapter = make_trained_adapter(tiny_model, root / "adapter_ner", seed=3)
    (root / "my_metrics.py").write_text(METRIC_FILE, encoding="utf-8")
    recipe = {
        "model_name_or_path": str(tiny_model), "template": "qwen", "dataset_dir": str(dataset_dir),
        "models": [{"name": "base"}, {"name": "lora_ner", "path": str(adapter), "task": "my_ner"}],
        "tasks": {"my_ner": {"dataset": "my_cities", "metric": "exact_match", "max_new_tokens": 4},
                  "qa": {"dataset": "tiny_qa_validation", "max_new_tokens": 4},
                  "translate": {"dataset": "tiny_translate_validation", "metric": "chrf", "max_new_tokens": 4},
                  "my_squad": {"dataset": "my_cities", "metric": "squad_v2", "max_new_tokens": 4},
                  "my_chrf": {"dataset": "my_cities", "metric": "chrf", "max_new_tokens": 4},
                  "my_contains": {"dataset": "my_cities", "metric": "my_metrics.py:contains", "max_new_tokens": 4}},
        "engine": {"dtype": "float32", "max_model_len": 1024, "gpu_memory_utilization": 0.2, "max_lora_rank": 8,
                   "enforce_eager": True},
    }
    path = root / "eval-user.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = root / "results"
    done = run_lf_wrap("eval", path, "--out", out, cwd=root)       # the metric's path is relative to it
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return out


def _score(out, model: str, task: str, *extra: str) -> tuple[dict, dict]:
    """`lf-wrap score --json`: (the metrics, their intervals)."""
    done = run_lf_wrap("score", out / "predictions" / model / f"{task}.jsonl", "--task", task, *extra, "--json",
                       cwd=out.parent)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    return ({k: v for k, v in scores.items() if not k.endswith("_ci95")},
            {k[:-5]: v for k, v in scores.items() if k.endswith("_ci95")})


def test_a_user_task_is_scored_like_lf_wrap_score_and_tabled(evaluated):
    doc = read_json(evaluated / "metrics.json")
    for model in ("base", "lora_ner"):
        for task, extra in (("my_ner", ("--metric", "exact_match")), ("my_squad", ("--metric", "squad_v2")),
                            ("my_chrf", ("--metric", "chrf")), ("my_contains", ("--metric", "my_metrics.py:contains")),
                            ("qa", ())):
            assert (doc["metrics"][model][task], doc["intervals"][model][task]) == _score(evaluated, model, task, *extra)
    assert set(doc["paired"]["lora_ner"]["base"]["my_ner"]) == {"exact_match"}
    lines = (evaluated / "predictions" / "base" / "my_ner.scores.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]          # a set without ids: the row's index; exact_match only
    assert [(r["row"], r["id"], sorted(r)) for r in rows] == [(i, str(i), ["exact_match", "id", "row"])
                                                             for i in range(len(NER_ROWS))]
    assert sum(r["exact_match"] for r in rows) / len(rows) == doc["metrics"]["base"]["my_ner"]["exact_match"]
    assert set(doc["metrics"]["base"]["my_ner"]) == {"exact_match"}
    assert set(doc["metrics"]["base"]["my_squad"]) == {"exact_match", "f1"}
    assert doc["tasks"]["my_ner"]["metric"] == "exact_match" and doc["headline"]["my_ner"] == "exact_match"
    assert read_json(evaluated / "manifest.json")["tasks"]["my_ner"]["metric"] == "exact_match"

    table = read_json(evaluated / "table.json")
    # the study's translate, scored with chrF by the recipe's override, is tabled by chrF
    assert table["rows"] == ["translate chrF", "qa EM", "my_ner EM", "my_squad EM", "my_chrf chrF", "my_contains contains", "mean"]
    assert set(doc["paired"]["lora_ner"]["base"]["my_contains"]) == {"contains"}
    assert doc["higher_is_better"]["contains"] is True and doc["higher_is_better"]["chrf"] is True
    assert doc["definitions"]["contains"] == "1 when the reference appears in the prediction."
    assert table["own_task"] == {"base": None, "lora_ner": "my_ner EM"}
    assert table["values"]["base"]["translate chrF"] == doc["metrics"]["base"]["translate"]["chrf"]
    markdown = (evaluated / "table.md").read_text(encoding="utf-8")
    for model in ("base", "lora_ner"):
        value = doc["metrics"][model]["my_ner"]["exact_match"]
        assert table["values"][model]["my_ner EM"] == value
        assert f"{value:.4f}" in next(line for line in markdown.splitlines() if line.startswith("| my_ner EM |"))
    assert (evaluated / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_references_follow_the_metric_family(evaluated):
    """squad_v2 has the no-answer rule (the 'unanswerable' row has no reference); exact_match has not."""
    lines = {task: [json.loads(line) for line in
                    (evaluated / "predictions" / "base" / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]
             for task in ("my_ner", "my_squad")}
    assert [line["references"] for line in lines["my_ner"]] == [[row["output"]] for row in NER_ROWS]
    assert [line["references"] for line in lines["my_squad"]] == [
        [] if row["output"] == "unanswerable" else [row["output"]] for row in NER_ROWS]


def test_report_rebuilds_the_user_task_table(evaluated, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(evaluated, copy)
    (copy / "table.md").unlink()
    done = run_lf_wrap("report", copy)
    assert done.returncode == 0, done.stderr
    assert (copy / "table.md").read_text(encoding="utf-8") == (evaluated / "table.md").read_text(encoding="utf-8")
    # The report tables a metric of your own as metrics.json describes it: its file is not loaded.
    doc = read_json(copy / "metrics.json")
    doc["tasks"]["my_contains"]["metric"] = "gone/my_metrics.py:contains"
    (copy / "metrics.json").write_text(json.dumps(doc), encoding="utf-8")
    done = run_lf_wrap("report", copy)
    assert done.returncode == 0, done.stderr
    assert (copy / "table.md").read_text(encoding="utf-8") == (evaluated / "table.md").read_text(encoding="utf-8")


def test_a_task_of_your_own_needs_a_metric(tiny_model, prepared, tmp_path):
    recipe = {"model_name_or_path": str(tiny_model), "dataset_dir": str(prepared), "models": [{"name": "base"}],
              "tasks": {"my_ner": {"dataset": "tiny_qa_validation"}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = run_lf_wrap("eval", path, "--out", tmp_path / "out")
    assert done.returncode == 2 and "tasks.my_ner.metric" in done.stderr
    assert "bleu, rouge, exact_match, squad_v2" in done.stderr
    assert not (tmp_path / "out").exists()
    done = run_lf_wrap("score", tmp_path / "recipe.yaml", "--task", "my_ner")
    assert done.returncode == 2 and "--metric" in done.stderr


FENCED_METRICS = '''
import os
import sys

ELSEWHERE = os.path.abspath("elsewhere")


def exits(prediction, references):
    sys.exit(0)


def moves(prediction, references):
    os.chdir(ELSEWHERE)
    return 1.0
'''


@pytest.mark.parametrize("function", ["exits", "moves"])
def test_a_metric_that_exits_or_moves_the_folder_fails_the_eval_and_writes_nowhere_else(evaluated, tmp_path,
                                                                                         function):
    """Probe T41: sys.exit(0) in the metric ended the eval with exit 0, the previous metrics.json
    standing as if rescored. T43: os.chdir in the metric made the eval write metrics.json, the
    manifest and the tables under the new directory. Now each is one Error naming the row, exit 2."""
    shutil.copytree(evaluated, tmp_path / "results")
    shutil.copy(evaluated.parent / "my_metrics.py", tmp_path)
    (tmp_path / "fenced_metrics.py").write_text(FENCED_METRICS, encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    before = (tmp_path / "results" / "metrics.json").read_bytes()
    done = run_lf_wrap("eval", evaluated.parent / "eval-user.yaml", "--out", "results", "--set",
                       f"tasks.my_contains.metric=fenced_metrics.py:{function}", cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"my_contains.jsonl: line 1 (row 0): metric fenced_metrics.py:{function}: {function}() on row 0" in errors[0]
    assert "rows to generate" not in done.stderr              # the predictions were reused: no engine
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert (tmp_path / "results" / "metrics.json").read_bytes() == before
