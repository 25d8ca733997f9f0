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


def _with_intervals(results, compare_to=("lora_translate",)):
    """The study's folder as an eval of this version writes it: each value with an interval, each
    model against base (and against `compare_to`) with a paired test. The study published no per-row
    scores, so these intervals are made up (value +- 0.02, difference +- 0.01): only the layout is checked."""
    doc = read_json(results / "metrics.json")
    doc["intervals"] = {m: {t: {k: [v - 0.02, v + 0.02] for k, v in by_key.items()} for t, by_key in by_task.items()}
                        for m, by_task in doc["metrics"].items()}
    doc["paired"] = {}
    for model in STUDY:
        for other in ("base", *compare_to):
            for task, key in KEY.items():
                if model == other or STUDY[model][task] is None or STUDY[other][task] is None:
                    continue
                d = STUDY[model][task] - STUDY[other][task]
                doc["paired"].setdefault(model, {}).setdefault(other, {})[task] = {key: {
                    "difference": d, "ci95": [d - 0.01, d + 0.01], "p_value": 0.01 if abs(d) > 0.01 else 0.3,
                    "rows": 990}}
    doc["bootstrap"] = {"resamples": 1000, "seed": 12345, "confidence": 0.95, "compare_to": list(compare_to)}
    atomic_write_json(results / "metrics.json", doc)
    return results


def test_report_shows_every_value_with_its_interval_and_marks_gains_that_may_be_noise(results):
    done = run_lf_wrap("report", _with_intervals(results))
    assert done.returncode == 0, done.stderr
    markdown = (results / "table.md").read_text()
    assert markdown.startswith(
        "| metric | base | lora_translate | lora_summarize | lora_qa | merge_3in1 |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        "| translate BLEU | 0.1964 [0.1764, 0.2164] | **0.2095** [0.1895, 0.2295] | 0.2128 [0.1928, 0.2328] "
        "| 0.2041 [0.1841, 0.2241] | 0.2047 [0.1847, 0.2247] |\n"
        "| summarize ROUGE-1 | 0.2967 [0.2767, 0.3167] | 0.2966 [0.2766, 0.3166] | **0.3759** [0.3559, 0.3959] "
        "| 0.3078 [0.2878, 0.3278] | 0.3117 [0.2917, 0.3317] |\n"
        "| qa EM | (missing) | 0.7783 [0.7583, 0.7983] | 0.7506 [0.7306, 0.7706] | **0.8289** [0.8089, 0.8489] "
        "| 0.7811 [0.7611, 0.8011] |\n"
        "| mean | (missing) | 0.4281 | 0.4464 | 0.4469 | 0.4325 |\n")     # the same values, the same means
    # Gains whose p-value is not below 0.05 carry the dagger, and the footnote says how to read it.
    assert ("| translate BLEU | **+0.0131** [+0.0031, +0.0231] p=0.010 | +0.0164 [+0.0064, +0.0264] p=0.010 "
            "| +0.0077 [-0.0023, +0.0177] p=0.300 † | +0.0083 [-0.0017, +0.0183] p=0.300 † |") in markdown
    assert ("| summarize ROUGE-1 | -0.0001 [-0.0101, +0.0099] p=0.300 † | **+0.0792** [+0.0692, +0.0892] p=0.010 "
            "| +0.0111 [+0.0011, +0.0211] p=0.010 | +0.0150 [+0.0050, +0.0250] p=0.010 |") in markdown
    assert "† n.s.: p is not below 0.05: this gain may be resampling noise." in markdown
    assert "[low, high]: the 95% bootstrap interval (1000 resamples of the rows, seed 12345)" in markdown
    # compare_to: the study's "summarisation helped translation more than translation did" (+0.0033).
    block = markdown.split("Difference from lora_translate:")[1]
    assert ("| translate BLEU | -0.0131 [-0.0231, -0.0031] p=0.010 | +0.0033 [-0.0067, +0.0133] p=0.300 † "
            "| -0.0054 [-0.0154, +0.0046] p=0.300 † | -0.0048 [-0.0148, +0.0052] p=0.300 † |") in block
    # The value is still the first word of every cell.
    for line in markdown.split("\n\n")[0].splitlines()[2:]:
        for cell in line.strip("|").split("|")[1:]:
            first = cell.split()[0].strip("*")
            assert first == "(missing)" or float(first) >= 0, line
    assert markdown in done.stdout


def test_report_csv_and_json_carry_intervals_and_p_values(results):
    run_lf_wrap("report", _with_intervals(results))
    rows = list(csv.reader(io.StringIO((results / "table.csv").read_text())))
    assert rows[0][:9] == ["metric", "base", "base ci95_low", "base ci95_high", "base p_value",
                           "lora_translate", "lora_translate ci95_low", "lora_translate ci95_high", "lora_translate p_value"]
    assert rows[1][:5] == ["translate BLEU", "0.196400", "0.176400", "0.216400", ""]
    assert rows[5][0] == "translate BLEU gain over base" and rows[5][5:9] == ["+0.013100", "+0.003100", "+0.023100",
                                                                              "0.010000"]
    assert rows[9][0] == "translate BLEU minus lora_translate" and rows[9][9:13] == [
        "+0.003300", "-0.006700", "+0.013300", "0.300000"]
    assert all(len(row) == 21 for row in rows)
    table = read_json(results / "table.json")
    assert table["values"]["lora_summarize"]["summarize ROUGE-1"] == 0.3759          # values unchanged
    assert table["ci95"]["lora_summarize"]["summarize ROUGE-1"] == {"ci95_low": pytest.approx(0.3559),
                                                                    "ci95_high": pytest.approx(0.3959)}
    assert table["ci95"]["base"]["qa EM"] is None and table["ci95"]["base"]["mean"] is None
    gain = table["gain_ci95"]["lora_qa"]["translate BLEU"]
    assert gain["significant"] is False and gain["p_value"] == 0.3 and gain["rows"] == 990
    assert table["gain_ci95"]["lora_translate"]["translate BLEU"]["significant"] is True
    assert table["differences"]["lora_translate"]["ci95"]["lora_summarize"]["translate BLEU"]["significant"] is False
    assert table["bootstrap"]["resamples"] == 1000
    assert (results / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_a_metrics_json_without_intervals_has_no_interval_columns(results):
    done = run_lf_wrap("report", results)
    assert done.returncode == 0, done.stderr
    markdown = (results / "table.md").read_text()
    assert "[" not in markdown and "†" not in markdown and "p=" not in markdown
    assert "ci95" not in (results / "table.csv").read_text()
    assert not {"ci95", "gain_ci95", "differences", "bootstrap"} & set(read_json(results / "table.json"))


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
    from lf_wrap.evaluation.charts import read_loss

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


# ---------------------------------------------------------------- hand-edited folders (probe P2-P13)


def _set(doc: dict, dotted: str, value) -> dict:
    *path, last = dotted.split(".")
    for key in path:
        doc = doc[key]
    doc[last] = value
    return doc


def _drop(doc: dict, key: str) -> dict:
    del doc[key]
    return doc


M, MAN = "{m}", "{man}"
HAND_EDITS = {   # case: (file, edit of its JSON, the one line the user reads)
    "P2_list": (M, lambda d: [1, 2], "{m}: must be a JSON object, got [1, 2]"),
    "P3_no_metrics_key": (M, lambda d: _drop(d, "metrics") and d,
                          "{m}: no 'metrics' key; not a metrics.json written by `lf-wrap eval`"),
    "P3_empty": (M, lambda d: {}, "{m}: no 'metrics' key; not a metrics.json written by `lf-wrap eval`"),
    "P4_string_score": (M, lambda d: _set(d, "metrics.base.translate.bleu", "0.5") and d,
                        '{m}: metrics.base.translate.bleu: must be a number or null, got "0.5"'),
    "P5_scalar_interval": (M, lambda d: _set(d, "intervals.base.translate.bleu", 0.3) and d,
                           "{m}: intervals.base.translate.bleu: must be an interval [low, high], got 0.3"),
    "P6_null_p_value": (M, lambda d: _set(d, "paired.lora_qa.base.translate.bleu.p_value", None) and d,
                        "{m}: paired.lora_qa.base.translate.bleu.p_value: must be a number, got null"),
    "P7_manifest_without_models": (MAN, lambda d: _drop(d, "models") and d,
                                   "{man}: no 'models' key; not a manifest.json written by `lf-wrap eval`"),
    "P8_counts_string": (M, lambda d: _set(d, "counts", {"base": {"qa": "many"}}) and d,
                         '{m}: counts.base.qa: must be a JSON object, got "many"'),
    "P9_infinity": (M, lambda d: _set(d, "metrics.base.translate.bleu", float("inf")) and d,
                    "{m}: metrics.base.translate.bleu: must be a finite number, got Infinity"),
    "P10_nan": (M, lambda d: _set(d, "metrics.lora_qa.qa.exact_match", float("nan")) and d,
                "{m}: metrics.lora_qa.qa.exact_match: must be a finite number, got NaN"),
    "N6_model_name_breaking_the_table": (MAN, lambda d: d["models"][0].update(name="ba|se\nx") or d,
                                         "{man}: models.0.name: must be a plain name (letters, digits, '.', '_', "
                                         '\'-\'), as in an eval recipe, got "ba|se\\nx"'),
    "N10_direction_a_string": (M, lambda d: d.update(higher_is_better={"exact_match": "yes"}) or d,
                               '{m}: higher_is_better.exact_match: must be true or false, got "yes"'),
    "P13_model_not_in_manifest": (M, lambda d: _set(d, "metrics.ghost", {"qa": {"exact_match": 0.9}}) and d,
                                  "{m}: metrics.ghost: model 'ghost' is not in {man}'s models (base, lora_qa, "
                                  "lora_summarize, lora_translate, merge_3in1); the two files are from different "
                                  "evaluations or were edited: run `lf-wrap eval` into this folder again"),
}


@pytest.mark.parametrize("case", list(HAND_EDITS))
def test_a_hand_edited_results_file_is_one_error_naming_the_key_and_leaves_the_report_alone(results, case):
    """A value of the wrong kind anywhere is one `Error:` line naming file and key path, exit 2,
    and the report written before stays whole (no new table beside an old chart)."""
    _with_intervals(results)
    assert run_lf_wrap("report", results).returncode == 0
    names = ("table.md", "table.csv", "table.json", "chart.png", "loss_curves.png")
    before = {name: (results / name).read_bytes() for name in names}
    which, edit, message = HAND_EDITS[case]
    paths = {"{m}": results / "metrics.json", "{man}": results / "manifest.json"}
    target = paths[which]
    atomic_write_json(target, edit(read_json(target)))
    done = run_lf_wrap("report", results)
    expected = message.format(m=paths["{m}"], man=paths["{man}"])
    assert (done.returncode, done.stderr.strip()) == (2, f"Error: {expected}")
    assert {name: (results / name).read_bytes() for name in names} == before


def test_a_drawing_failure_leaves_every_report_file_as_it_was(results, monkeypatch):
    """All or none: the tables are not rewritten when the chart (drawn after them) fails."""
    from lf_wrap.evaluation import report

    report.write_report(results)
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    doc = read_json(results / "metrics.json")
    doc["metrics"]["base"]["translate"]["bleu"] = 0.5            # a change the tables would show
    atomic_write_json(results / "metrics.json", doc)
    before["metrics.json"] = (results / "metrics.json").read_bytes()

    def broken(_table):
        raise RuntimeError("matplotlib failed")
    monkeypatch.setattr(report, "chart", broken)
    with pytest.raises(RuntimeError, match="matplotlib failed"):
        report.write_report(results)
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before


def test_a_folder_where_a_report_file_goes_is_one_error_and_nothing_is_rewritten(results):
    """chart.png replaced by a folder (probe N8): one Error naming it, exit 2, and the tables
    written before are not rewritten beside it (they were, then an IsADirectoryError traceback)."""
    assert run_lf_wrap("report", results).returncode == 0
    (results / "chart.png").unlink()
    (results / "chart.png").mkdir()
    doc = read_json(results / "metrics.json")
    doc["metrics"]["base"]["translate"]["bleu"] = 0.5            # a change the tables would show
    atomic_write_json(results / "metrics.json", doc)
    before = {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()}
    done = run_lf_wrap("report", results)
    assert (done.returncode, done.stderr.strip()) == (
        2, f"Error: {results / 'chart.png'} is a folder (or another non-file) where the report writes its chart.png; "
           "move it away, nothing was rewritten")
    assert {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()} == before


def test_a_value_outside_its_interval_still_draws_the_chart(results):
    """A percentile interval may exclude its value (few rows, a skewed metric): drawn, not a traceback."""
    doc = read_json(_with_intervals(results) / "metrics.json")
    doc["intervals"]["base"]["translate"]["bleu"] = [0.0, 0.0]
    atomic_write_json(results / "metrics.json", doc)
    done = run_lf_wrap("report", results)
    assert done.returncode == 0, done.stderr
    assert "| translate BLEU | 0.1964 [0.0000, 0.0000] |" in (results / "table.md").read_text()


def test_the_dagger_follows_the_p_value_printed_beside_it(results):
    """Issue 29: "p = 0.006 (within resampling noise)". An interval that touches 0 beside p = 0.006
    is beyond noise (no dagger); p = 0.2 beside an interval clear of 0 is not (a dagger)."""
    doc = read_json(_with_intervals(results) / "metrics.json")
    doc["paired"]["lora_translate"]["base"]["translate"]["bleu"].update(ci95=[0.0, 0.0262], p_value=0.006)
    doc["paired"]["lora_summarize"]["base"]["translate"]["bleu"].update(p_value=0.2)
    atomic_write_json(results / "metrics.json", doc)
    done = run_lf_wrap("report", results)
    assert done.returncode == 0, done.stderr
    markdown = (results / "table.md").read_text()
    assert ("| translate BLEU | **+0.0131** [+0.0000, +0.0262] p=0.006 | +0.0164 [+0.0064, +0.0264] p=0.200 † "
            in markdown)


def test_bleu_at_its_floor_is_flagged_with_chrf_suggested(tmp_path):
    """Issue 29, item 5: corpus BLEU is exactly 0 when no 4-gram matches (short sentences)."""
    metrics = {"base": {"translate": {"bleu": 0.0}, "qa": {"exact_match": 0.0, "f1": 0.1}},
               "tuned": {"translate": {"bleu": 0.1}, "qa": {"exact_match": 0.5, "f1": 0.6}}}
    folder = _eval_folder(tmp_path, metrics, {})
    done = run_lf_wrap("report", folder)
    assert done.returncode == 0, done.stderr
    markdown = (folder / "table.md").read_text()
    assert ("translate BLEU is exactly 0 for base: corpus BLEU is 0 when no 4-gram matches (common on short "
            "sentences), a floor where differences vanish; chrF (metric: chrf) has no such floor") in markdown
    assert "qa EM is exactly 0" not in markdown                    # 0 right answers is no floor of the metric
    assert read_json(folder / "table.json")["floor"] == {"translate BLEU": ["base"]}
