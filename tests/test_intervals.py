"""Every number with its uncertainty, from files: `lf-wrap score`'s intervals, `lf-wrap compare`,
the per-row scores the eval writes beside its predictions and metrics.json's `intervals` and
`paired` (lf_wrap.evaluation.uncertainty, results.uncertainty_section). No engine runs here:
the prediction files are written by hand or drawn from a seeded generator."""

from __future__ import annotations

import json
import logging
import random

import pytest

from conftest import run_lf_wrap
from lf_wrap.evaluation.models import ResolvedModel
from lf_wrap.evaluation.recipe import BootstrapSettings, EvalRecipe
from lf_wrap.evaluation.requests import TaskData
from lf_wrap.tasks import TASKS, resolve_task

WORDS = ("the a cat dog bird sat ran flew on under over mat house tree red blue green quickly slowly "
         "today yesterday big small old new river").split()


def _write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _systems(tmp_path, rates, n=30, seed=0, task="translate"):
    """Prediction files of systems that get each word wrong with probability `rate`, on the same rows."""
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(6, 14))) for _ in range(n)]
    paths = []
    for number, rate in enumerate(rates):
        hyps = [" ".join(w if rng.random() > rate else rng.choice(WORDS) for w in r.split()) for r in refs]
        paths.append(_write(tmp_path / f"{task}_{number}.jsonl",
                            [{"row": i, "id": f"r{i}", "prediction": h, "references": [r]}
                             for i, (h, r) in enumerate(zip(hyps, refs))]))
    return paths, refs


def _json(done):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---------------------------------------------------------------- lf-wrap score: intervals by hand


def test_score_intervals_by_hand(tmp_path):
    # A task of your own (plain exact match), rows 0-3 scored 0, 1, 1, 1. The draw is the one
    # tests/test_bootstrap.py checks by hand (seed 12345: rows [2,0,3,1], [0,3,2,2], [3,1,3,1], ...);
    # over 100 resamples (the fewest a user may ask for) the interval is the family's own.
    from lf_wrap.scoring.bootstrap import Bootstrap
    from lf_wrap.scoring.registry import FAMILIES

    path = _write(tmp_path / "ner.jsonl", [{"row": i, "prediction": p, "references": ["Oslo"]}
                                           for i, p in enumerate(["Rome", "Oslo", "oslo", "Oslo."])])
    low, high = FAMILIES["exact_match"].interval("exact_match", [{"exact_match": v} for v in (0.0, 1.0, 1.0, 1.0)],
                                                 Bootstrap(100, 12345))
    assert low < 0.75 <= high
    scores = _json(run_lf_wrap("score", path, "--task", "my_ner", "--metric", "exact_match", "--json",
                               "--resamples", "100", "--seed", "12345"))
    assert scores == {"exact_match": 0.75, "exact_match_ci95": [low, high]}
    # The rows are resampled in row order, whatever order the lines are in.
    lines = path.read_text().splitlines()
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join([lines[2], lines[0], lines[3], lines[1]]) + "\n")
    assert _json(run_lf_wrap("score", shuffled, "--task", "my_ner", "--metric", "exact_match", "--json",
                             "--resamples", "100")) == scores
    text = run_lf_wrap("score", path, "--task", "my_ner", "--metric", "exact_match", "--resamples", "100").stdout
    assert f"exact_match  0.7500 [{low:.4f}, {high:.4f}]" in text
    assert "over the 4 rows, 100 resamples, seed 12345" in text


@pytest.mark.parametrize("resamples", ["1", "2", "99", "10000001", "1000000000000"])
def test_score_and_compare_refuse_a_resample_count_outside_100_to_10_million(tmp_path, resamples):
    """C12: with 1 or 2 resamples the interval may exclude the value; C14: 10^12 exhausts memory."""
    (a, b), _ = _systems(tmp_path, (0.3, 0.4), n=4)
    for args in (("score", a), ("compare", a, b)):
        done = run_lf_wrap(*args, "--task", "translate", "--resamples", resamples)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"Invalid value for '--resamples': {resamples} is not in the range 100<=x<=10000000." in done.stderr
    with pytest.raises(ValueError, match="bootstrap.resamples"):
        EvalRecipe.model_validate({"model_name_or_path": "m", "models": [{"name": "base"}],
                                   "tasks": {"translate": {"dataset": "d"}},
                                   "bootstrap": {"resamples": int(resamples)}})


def test_score_refuses_a_row_written_twice(tmp_path):
    """C4: a row appended again would count twice in every metric, silently (compare already refused it)."""
    (a,), _ = _systems(tmp_path, (0.3,), n=6)
    with open(a, "a", encoding="utf-8") as handle:
        handle.write(a.read_text().splitlines()[0] + "\n")
    done = run_lf_wrap("score", a, "--task", "translate")
    assert (done.returncode, done.stderr.strip()) == (
        2, f"Error: {a}:7: row 0 appears twice (also line 1); each row is scored once: remove the repeated line")


# ---------------------------------------------------------------- lf-wrap compare


def test_a_system_compared_with_itself_is_not_significant(tmp_path):
    (path,), _ = _systems(tmp_path, (0.3,))
    done = run_lf_wrap("compare", path, path, "--task", "translate")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("bleu "))
    assert line.split()[3:] == ["+0.0000", "[+0.0000,", "+0.0000]", "1.0000", "n.s."]
    assert "n.s.: p is not below 0.05: this difference may be resampling noise" in done.stdout


@pytest.mark.parametrize("task", ["translate", "summarize", "qa"])
def test_a_clearly_better_system_is_significant(tmp_path, task):
    (worse, better), _ = _systems(tmp_path, (0.8, 0.1), task=task)
    result = _json(run_lf_wrap("compare", worse, better, "--task", task, "--json"))
    assert result["rows"] == 30 and result["resamples"] == 1000 and result["seed"] == 12345
    assert list(result["metrics"]) == list(TASKS[task].metrics)
    for metric, test in result["metrics"].items():
        assert test["difference"] == test["b"] - test["a"] > 0
        assert test["ci95"][0] > 0 and test["p_value"] < 0.01 and test["significant"] is True, metric
    # A and B are exactly what `lf-wrap score` prints for each file.
    for side, path in (("a", worse), ("b", better)):
        scores = _json(run_lf_wrap("score", path, "--task", task, "--json"))
        assert {m: t[side] for m, t in result["metrics"].items()} == {m: scores[m] for m in TASKS[task].metrics}


@pytest.mark.parametrize("rates", [(0.3, 0.35), (0.5, 0.2)])
def test_compare_bleu_p_value_is_sacrebleus(tmp_path, monkeypatch, rates):
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    (a, b), refs = _systems(tmp_path, rates, n=40, seed=3)
    result = _json(run_lf_wrap("compare", a, b, "--task", "translate", "--json", "--resamples", "300", "--seed", "99"))
    monkeypatch.setenv("SACREBLEU_SEED", "99")
    hyps = [[json.loads(line)["prediction"] for line in p.read_text().splitlines()] for p in (a, b)]
    _, scores = PairedTest([("a", hyps[0]), ("b", hyps[1])], {"BLEU": BLEU(tokenize="13a", smooth_method="none")},
                           [refs], test_type="bs", n_samples=300)()
    assert result["metrics"]["bleu"]["p_value"] == scores["BLEU"][1].p_value
    assert result["metrics"]["bleu"]["b"] == pytest.approx(scores["BLEU"][1].score / 100, rel=1e-12)


def _mismatch(records: list[dict], case: str) -> list[dict]:
    records = [dict(r) for r in records]
    if case == "other_id":
        records[3]["id"] = "r99"
    elif case == "other_references":
        records[4]["references"] = ["something else"]
    elif case == "missing_row":
        del records[5]
    elif case == "duplicate_row":
        records[6]["row"] = 2
    return records


@pytest.mark.parametrize("case,message", [
    ("other_id", "{b}:4: row 3 has id 'r99' where {a}:4 has 'r3'; not the same test item"),
    ("other_references", "{b}:5: row 4 (id 'r4') has other references than {a}:5; not the same test item"),
    ("missing_row", "{a}:6: row 5 (id 'r5') is not in {b} (29 rows); a comparison needs the same rows in both files"),
    ("duplicate_row", "{b}:7: row 2 appears twice (also line 3); each row is scored once: remove the repeated line"),
    ("fewer_lines", "{a}:30: line 30 of 30 (id None) is not in {b} (29 rows); a comparison needs the same rows "
                    "in both files"),
])
def test_compare_refuses_files_whose_rows_differ(tmp_path, case, message):
    (a, b), _ = _systems(tmp_path, (0.3, 0.4))
    records = [json.loads(line) for line in b.read_text().splitlines()]
    if case == "fewer_lines":        # files made elsewhere, without `row` or `id`: paired by line
        strip = lambda r: {"prediction": r["prediction"], "references": r["references"]}   # noqa: E731
        _write(a, [strip(json.loads(line)) for line in a.read_text().splitlines()])
        _write(b, [strip(r) for r in records[:-1]])
    else:
        _write(b, _mismatch(records, case))
    done = run_lf_wrap("compare", a, b, "--task", "translate")
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip() == "Error: " + message.format(a=a, b=b)


# ---------------------------------------------------------------- a results folder


def _folder(tmp_path, skip: dict[str, set[int]] | None = None):
    """Predictions of three models on 30 translate and 30 qa rows, as `lf-wrap eval` lays them out;
    `skip`: rows a model has no prediction for (prompt too long for its tokenizer)."""
    out = tmp_path / "results"
    models = [ResolvedModel("base", "base", "m"), ResolvedModel("good", "adapter", "a", "translate"),
              ResolvedModel("better", "full", "f")]
    data = {}
    for task in ("translate", "qa"):
        paths, refs = _systems(tmp_path, (0.6, 0.3, 0.1), task=task)
        for model, path in zip(models, paths):
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            lines = [line for line in lines if line["row"] not in (skip or {}).get(model.name, set())]
            target = out / "predictions" / model.name / f"{task}.jsonl"
            target.parent.mkdir(parents=True, exist_ok=True)
            _write(target, lines[::-1])                 # any line order: scores come out in row order
        data[task] = TaskData(task, f"tiny_{task}", path, "0" * 64, [{}] * len(refs), "unanswerable",
                              resolve_task(task))
    return out, models, data


def test_eval_scoring_writes_row_scores_intervals_and_paired_tests(tmp_path):
    from lf_wrap.evaluation.results import score_all, uncertainty_section

    out, models, data = _folder(tmp_path)
    results = score_all(out, models, data)
    lines = read_json_lines(out / "predictions" / "good" / "translate.scores.jsonl")
    assert [line["row"] for line in lines] == list(range(30)) and lines[0]["id"] == "r0"
    assert set(lines[0]) == {"row", "id", "bleu_stats"} and len(lines[0]["bleu_stats"]) == 10
    assert set(read_json_lines(out / "predictions" / "base" / "qa.scores.jsonl")[0]) == {"row", "id", "exact_match", "f1"}

    section = uncertainty_section(out, models, data, results, BootstrapSettings(resamples=200, compare_to=["good"]))
    assert section["bootstrap"] == {"resamples": 200, "seed": 12345, "confidence": 0.95, "compare_to": ["good"],
                                    "against": ["base", "good"]}
    for model in ("base", "good", "better"):
        for task, task_data in data.items():
            scores = _json(run_lf_wrap("score", out / "predictions" / model / f"{task}.jsonl", "--task", task,
                                       "--json", "--resamples", "200"))
            for metric in task_data.definition.metrics:    # the folder's interval is `lf-wrap score`'s
                assert section["intervals"][model][task][metric] == scores[f"{metric}_ci95"]
    paired = section["paired"]
    assert sorted(paired) == ["base", "better", "good"] and sorted(paired["better"]) == ["base", "good"]
    assert sorted(paired["good"]) == ["base"] and sorted(paired["base"]) == ["good"]
    test = paired["better"]["base"]["translate"]["bleu"]
    assert test["difference"] == pytest.approx(results["better"]["translate"]["bleu"] - results["base"]["translate"]["bleu"])
    assert test["rows"] == 30 and test["ci95"][0] > 0 and test["p_value"] < 0.01
    assert paired["base"]["good"]["qa"]["f1"]["difference"] < 0          # base is worse than good


def test_pairs_use_the_rows_both_models_scored(tmp_path, caplog):
    from lf_wrap.evaluation.results import score_all, uncertainty_section

    out, models, data = _folder(tmp_path, skip={"better": {0, 7}})
    results = score_all(out, models, data)
    assert len(read_json_lines(out / "predictions" / "better" / "qa.scores.jsonl")) == 28
    logger = logging.getLogger("lf_wrap.evaluation.results")   # the lf_wrap logger may not propagate
    logger.addHandler(caplog.handler)
    try:
        caplog.set_level(logging.INFO, logger=logger.name)
        section = uncertainty_section(out, models, data, results, BootstrapSettings(resamples=100))
        assert section["paired"]["better"]["base"]["qa"]["exact_match"]["rows"] == 28
        assert section["paired"]["good"]["base"]["qa"]["exact_match"]["rows"] == 30
        assert "qa: 'better' against 'base' on the 28 rows both scored" in caplog.text
        # A row whose id differs between two files is not the same test item: that pair is not tested.
        scores = out / "predictions" / "good" / "translate.scores.jsonl"
        lines = read_json_lines(scores)
        lines[3]["id"] = "other"
        _write(scores, lines)
        section = uncertainty_section(out, models, data, results, BootstrapSettings(resamples=100))
        assert "translate" not in section["paired"]["good"]["base"] and "qa" in section["paired"]["good"]["base"]
        assert "'good' and 'base' hold other ids for the same rows; not compared" in caplog.text
    finally:
        logger.removeHandler(caplog.handler)


def read_json_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- the recipe's bootstrap section


def test_recipe_bootstrap_section():
    recipe = {"model_name_or_path": "m", "models": [{"name": "base"}, {"name": "lora_translate", "path": "a"}],
              "tasks": {"translate": {"dataset": "d"}}}
    assert EvalRecipe.model_validate(recipe).bootstrap == BootstrapSettings(
        resamples=1000, seed=12345, confidence=0.95, compare_to=[])
    named = EvalRecipe.model_validate({**recipe, "bootstrap": {"compare_to": ["lora_translate"], "resamples": 500}})
    assert named.bootstrap.compare_to == ["lora_translate"] and named.bootstrap.resamples == 500
    with pytest.raises(ValueError, match="bootstrap.compare_to: no model is named 'lora_qa'; the models are base, "
                                         "lora_translate"):
        EvalRecipe.model_validate({**recipe, "bootstrap": {"compare_to": ["lora_qa"]}})
    for bad in ({"confidence": 95}, {"resamples": 0}, {"samples": 10}):
        with pytest.raises(ValueError):
            EvalRecipe.model_validate({**recipe, "bootstrap": bad})
