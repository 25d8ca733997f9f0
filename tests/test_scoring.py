"""lf_wrap.scoring: every family equal to lf-wrap's values before the scoring package, chrF
equal to sacrebleu's own, and a metric of your own (path/to/file.py:function).

tests/data/scoring_e402adf.json holds, for fixed predictions of three systems per family, what
lf-wrap computed at commit e402adf (lf_wrap.evaluation.metrics and .stats, before the families
owned their scores): the metrics, the per-row scores, intervals and paired tests at two draws,
and the retained gains. The families give the same floats, bit for bit (asked: 1e-12)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sacrebleu.metrics import CHRF

from conftest import run_lf_wrap
from lf_wrap.core.errors import UserError
from lf_wrap.scoring.bootstrap import Bootstrap
from lf_wrap.scoring.registry import FAMILIES, family
from lf_wrap.search.objective import retained_gain
from lf_wrap.tasks import resolve_task

GOLDEN = json.loads((Path(__file__).parent / "data" / "scoring_e402adf.json").read_text(encoding="utf-8"))


def _same(got, expected, where: str):
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected), where
        for key in expected:
            _same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            _same(g, e, f"{where}[{i}]")
    elif expected is None:
        assert got is None, where
    else:
        assert got == expected, where


@pytest.mark.parametrize("name", sorted(GOLDEN["cases"]))
def test_every_value_equals_todays(name):
    case = GOLDEN["cases"][name]
    expected = case["expected"]
    scoring = FAMILIES[name]
    task = resolve_task("golden", name)
    na = case.get("no_answer_text")
    rows = [scoring.rows(system, case["references"], na if scoring.no_answer else None) for system in case["systems"]]
    assert [json.loads(json.dumps(r)) for r in rows] == expected["rows"]          # the same scores.jsonl fields
    assert [scoring.corpus(r) for r in rows] == expected["metrics"]               # bit for bit
    for index, (resamples, seed, confidence) in enumerate(GOLDEN["draws"]):
        settings = Bootstrap(resamples, seed, confidence)
        _same([{k: list(scoring.interval(k, r, settings)) for k in scoring.keys} for r in rows],
               expected["intervals"][index], f"{name} intervals")
        paired = [{k: scoring.paired(k, rows[0], r, settings) for k in scoring.keys} for r in rows[1:]]
        _same(paired, expected["paired"][index], f"{name} paired")
        if name == "bleu":     # sacrebleu's p-value, bit for bit
            assert [p["bleu"]["p_value"] for p in paired] == [p["bleu"]["p_value"] for p in expected["paired"][index]]
        for key in scoring.keys:
            headline = resolve_task("golden", name, scored_by=_Headline(scoring, key))
            _same(retained_gain(headline, rows[0], rows[1], rows[2], settings), expected["retained"][index][key],
                   f"{name} retained {key}")
    assert task.metrics == scoring.keys


class _Headline:
    """A family seen with another of its metrics first (to take retained gains of every metric)."""

    def __init__(self, scoring, key):
        self._scoring, self.keys, self.no_answer = scoring, (key,), scoring.no_answer

    def __getattr__(self, name):
        return getattr(self._scoring, name)


# ---------------------------------------------------------------- chrF


def _systems(n: int = 40) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(5)
    words = "the a cat dog sat ran on under mat house tree red blue quickly today big river Zürich 3.5 , .".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(4, 15))) for _ in range(n)]
    noisy = lambda rate: [" ".join(w if rng.random() > rate else rng.choice(words) for w in r.split())  # noqa: E731
                          for r in refs]
    return refs, noisy(0.5), noisy(0.2)


def test_chrf_equals_sacrebleus_corpus_score():
    refs, worse, better = _systems()
    chrf = FAMILIES["chrf"]
    for hyps in (worse, better, refs, [""] * len(refs)):
        rows = chrf.rows(hyps, [[r] for r in refs])
        assert chrf.value("chrf", rows) * 100 == pytest.approx(CHRF().corpus_score(hyps, [refs]).score, rel=1e-12)
    # Several references: sacrebleu holds each row to its best one.
    second = [r.upper() for r in refs]
    rows = chrf.rows(worse, [[r, s] for r, s in zip(refs, second)])
    assert chrf.value("chrf", rows) * 100 == pytest.approx(CHRF().corpus_score(worse, [refs, second]).score, rel=1e-12)
    # A corpus metric, not a mean of sentence scores.
    sentences = np.mean([CHRF().sentence_score(h, [r]).score for h, r in zip(worse, refs)])
    assert abs(chrf.value("chrf", chrf.rows(worse, [[r] for r in refs])) * 100 - sentences) > 1e-3


def test_chrf_intervals_and_paired_test_are_sacrebleus_resamples():
    refs, worse, better = _systems()
    chrf = FAMILIES["chrf"]
    rows_w, rows_b = (chrf.rows(h, [[r] for r in refs]) for h in (worse, better))
    low, high = chrf.interval("chrf", rows_b)
    assert low < chrf.value("chrf", rows_b) < high
    # sacrebleu's own bootstrap of chrF (same seed, its float32 sums): half the distance of the same ends.
    score = CHRF().corpus_score(better, [refs], n_bootstrap=1000)
    assert score._ci == pytest.approx(100 * (high - low) / 2, rel=1e-5)
    test = chrf.paired("chrf", rows_w, rows_b)
    assert test["difference"] > 0 and test["ci95"][0] > 0 and test["p_value"] < 0.01


def test_chrf_through_the_cli(tmp_path):
    refs, worse, _ = _systems(12)
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"prediction": p, "references": [r]}) + "\n" for p, r in zip(worse, refs)))
    done = run_lf_wrap("score", path, "--task", "my_mt", "--metric", "chrf", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chrf"] == pytest.approx(CHRF().corpus_score(worse, [refs]).score / 100, rel=1e-12)


# ---------------------------------------------------------------- a metric of your own

METRIC_FILE = '''
import os
import sys
import time


def contains(prediction, references):
    """1 when any reference appears in the prediction (case-insensitive)."""
    return float(any(r.lower() in prediction.lower() for r in references))


def length_gap(prediction, references):
    return abs(len(prediction) - len(references[0]))
length_gap.higher_is_better = False
length_gap.aggregation = "median"


def bad_return(prediction, references):
    return "yes" if prediction else None


def explodes(prediction, references):
    if prediction == "boom":
        raise RuntimeError("no reference like that")
    return 1.0


not_a_function = 3


def exits(prediction, references):
    if prediction == "boom":
        sys.exit(0)
    return 1.0


def moves(prediction, references):
    if prediction == "boom":
        os.chdir(os.path.dirname(os.getcwd()))
    return 1.0


def sleeps(prediction, references):
    if prediction == "slow":
        time.sleep(10 ** 6)
    return 1.0
sleeps.time_limit = 0.5


def interrupts(prediction, references):
    if prediction == "boom":
        raise KeyboardInterrupt
    return 1.0


def waits(prediction, references):
    print("SCORING", os.getpid(), flush=True)
    time.sleep(10 ** 6)
waits.time_limit = 3600


def ends(prediction, references):
    if prediction == "boom":
        os._exit(7)
    return 1.0
'''


@pytest.fixture
def metric_file(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(METRIC_FILE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_metric_of_your_own_gets_rows_intervals_and_paired_tests(metric_file):
    mine = family("my_metrics.py:contains")
    assert mine.keys == ("contains",) and mine.metric("contains").higher_is_better
    assert mine.describe("contains") == "1 when any reference appears in the prediction (case-insensitive)."
    predictions = ["in Paris today", "Oslo", "nowhere", "ROME!"] * 10
    references = [["paris"], ["oslo"], ["lima"], ["rome"]] * 10
    rows = mine.rows(predictions, references)
    assert rows[:4] == [{"contains": 1.0}, {"contains": 1.0}, {"contains": 0.0}, {"contains": 1.0}]
    assert mine.corpus(rows) == {"contains": 0.75}
    # Resampled like any mean family: its interval is exact_match's on the same 0/1 rows.
    as_em = [{"exact_match": r["contains"]} for r in rows]
    assert mine.interval("contains", rows) == FAMILIES["exact_match"].interval("exact_match", as_em)
    worse = mine.rows(["nothing"] * 40, references)
    assert mine.paired("contains", worse, rows)["p_value"] < 0.01
    task = resolve_task("my_cities", "my_metrics.py:contains")
    assert task.metrics == ("contains",) and task.declaration()["definitions"]["contains"].startswith("1 when")


def test_a_metric_of_your_own_may_say_lower_is_better_and_median(metric_file):
    gap = family("my_metrics.py:length_gap")
    assert gap.metric("length_gap").higher_is_better is False and gap.aggregation == "median"
    rows = gap.rows(["ab", "abcd", "abcdefgh"], [["ab"], ["a"], ["a"]])
    assert gap.corpus(rows) == {"length_gap": 3.0}                # gaps 0, 3, 7: the median
    low, high = gap.interval("length_gap", rows * 20, Bootstrap(200))
    assert low <= 3.0 <= high


@pytest.mark.parametrize("spec, message", [
    ("missing.py:contains", "metric missing.py:contains: missing.py not found"),
    ("my_metrics.py:absent", "my_metrics.py has no function 'absent'"),
    ("my_metrics.py:not_a_function", "'not_a_function' in my_metrics.py is a int, not a function"),
])
def test_a_bad_reference_is_one_error(metric_file, spec, message):
    with pytest.raises(UserError, match=message):
        family(spec)
    with pytest.raises(UserError, match="^tasks.mine.metric: metric ") as raised:
        resolve_task("mine", spec, "tasks.mine.metric")
    assert message in str(raised.value)


def test_a_file_that_fails_to_load_is_one_error(metric_file):
    (metric_file / "broken.py").write_text("import no_such_module_here\n")
    with pytest.raises(UserError, match="loading .*broken.py raised ModuleNotFoundError"):
        family("broken.py:anything")


@pytest.mark.parametrize("function, message", [
    ("bad_return", r"bad_return\(\) on row 0 \(prediction 'x'\) returned str 'yes', not a number"),
    ("explodes", r"explodes\(\) on row 1 \(prediction 'boom'\) raised RuntimeError: no reference like that"),
])
def test_a_failing_row_is_one_error_line_naming_file_function_and_row(metric_file, function, message):
    with pytest.raises(UserError, match=message):
        family(f"my_metrics.py:{function}").rows(["x", "boom"], [["x"], ["y"]])
    path = metric_file / "p.jsonl"
    path.write_text(json.dumps({"row": 7, "prediction": "x", "references": ["x"]}) + "\n"
                    + json.dumps({"row": 9, "prediction": "boom", "references": ["y"]}) + "\n")
    done = run_lf_wrap("score", path, "--task", "mine", "--metric", f"my_metrics.py:{function}", cwd=metric_file)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: ") and f"my_metrics.py:{function}" in errors[0]


def test_score_and_compare_with_a_metric_of_your_own(metric_file):
    a, b = metric_file / "a.jsonl", metric_file / "b.jsonl"
    refs = [["paris"], ["oslo"], ["lima"], ["rome"]] * 30
    a.write_text("".join(json.dumps({"row": i, "prediction": "none", "references": r}) + "\n" for i, r in enumerate(refs)))
    b.write_text("".join(json.dumps({"row": i, "prediction": r[0] if i % 4 else "no", "references": r}) + "\n"
                         for i, r in enumerate(refs)))
    spec = "my_metrics.py:contains"
    done = run_lf_wrap("score", b, "--task", "mine", "--metric", spec, "--json", cwd=metric_file)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert scores["contains"] == 0.75 and scores["contains_ci95"][0] < 0.75 < scores["contains_ci95"][1]
    done = run_lf_wrap("compare", a, b, "--task", "mine", "--metric", spec, "--json", cwd=metric_file)
    assert done.returncode == 0, done.stderr
    test = json.loads(done.stdout)["metrics"]["contains"]
    assert test["difference"] == 0.75 and test["significant"] and test["p_value"] < 0.01


# ---------------------------------------------------------------- the fence around a metric of your own

@pytest.mark.parametrize("function, message", [
    ("exits", r"exits\(\) on row 1 \(prediction 'boom'\) called sys.exit\(0\)"),
    ("moves", r"moves\(\) on row 1 \(prediction 'boom'\) changed the working directory to '.+' \(a metric must "),
    ("sleeps", r"sleeps\(\) on row 1 \(prediction 'slow'\) did not return within 0.5 s \(its time limit; a slower "
               r"metric sets sleeps.time_limit = <seconds> in my_metrics.py\)"),
    ("interrupts", r"interrupts\(\) on row 1 \(prediction 'boom'\) raised KeyboardInterrupt$"),
    ("ends", r"ends\(\) on row 1 \(prediction 'boom'\) ended the metric's process \(exit code 7\)"),
])
def test_a_metric_cannot_end_lf_wrap_move_its_folder_or_hang(metric_file, function, message):
    """sys.exit, os.chdir, a row that never returns, a KeyboardInterrupt of its own, os._exit:
    each one UserError naming the file, the function and the row; lf-wrap's process and working
    directory as they were, and the metric scores again afterwards."""
    mine = family(f"my_metrics.py:{function}")
    second = "slow" if function == "sleeps" else "boom"
    with pytest.raises(UserError, match=f"^metric my_metrics.py:{function}: {message}") as raised:
        mine.rows(["x", second], [["x"], ["y"]])
    assert raised.value.row == 1 and Path.cwd() == metric_file
    assert mine.rows(["x"], [["x"]]) == [{function: 1.0}]


def test_a_metric_that_exits_or_moves_the_folder_fails_lf_wrap_score(metric_file):
    """T41: `lf-wrap score` with a metric that calls sys.exit(0) exited 0 with nothing printed."""
    path = metric_file / "p.jsonl"
    path.write_text(json.dumps({"row": 7, "prediction": "boom", "references": ["x"]}) + "\n")
    for function in ("exits", "moves"):
        done = run_lf_wrap("score", path, "--task", "mine", "--metric", f"my_metrics.py:{function}", "--json",
                           cwd=metric_file)
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
        assert len(errors) == 1 and errors[0].startswith(f"Error: {path}: line 1 (row 7): metric my_metrics.py:"
                                                         f"{function}: {function}() on row 0"), errors


@pytest.mark.parametrize("source, message", [
    ("import sys\nsys.exit(3)\n", r"loading .*modexit.py called sys.exit\(3\)"),
    ("import os\nos.chdir('/')\n", r"loading .*modexit.py changed the working directory to '/'"),
    ("import os\nos._exit(3)\n", r"loading .*modexit.py ended its process \(exit code 3\)"),
    ("def goodfn(p, r):\n    return 1.0\ngoodfn.time_limit = 0\n",
     r"goodfn.time_limit must be a positive number of seconds, not 0"),
])
def test_a_metric_file_that_exits_at_import_is_one_error(metric_file, source, message):
    """T11: `lf-wrap validate` of a task whose metric file calls sys.exit(3) at import exited 3 silently."""
    (metric_file / "modexit.py").write_text(source)
    with pytest.raises(UserError, match=message):
        family("modexit.py:goodfn")
    assert Path.cwd() == metric_file
    task = metric_file / "task.yaml"
    task.write_text("name: t\nprompt: 'Q: {q}'\nresponse: a\nmetric: modexit.py:goodfn\n")
    done = run_lf_wrap("validate", task, cwd=metric_file)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(errors) == 1 and errors[0].startswith("Error: "), done.stderr
    assert "metric: metric " in errors[0] and "modexit.py:goodfn" in errors[0], errors


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_ctrl_c_while_a_metric_runs_stops_lf_wrap_and_the_metrics_process(metric_file):
    """T42's other half: a KeyboardInterrupt the metric raises is its error (above), but a real
    Ctrl-C still interrupts at once: exit 130, one line, and the metric's process is gone."""
    path = metric_file / "p.jsonl"
    path.write_text(json.dumps({"row": 0, "prediction": "x", "references": ["x"]}) + "\n")
    exe = Path(sys.executable).parent / "lf-wrap"
    child = subprocess.Popen([str(exe), "score", str(path), "--task", "mine", "--metric", "my_metrics.py:waits"],
                             cwd=metric_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        word, pid = child.stdout.readline().split()
        assert word == "SCORING" and _alive(int(pid))
        os.killpg(child.pid, signal.SIGINT)         # what Ctrl-C in a terminal does: the whole group
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130 and [line for line in err.splitlines() if line.strip()] == [
        "Error: interrupted (Ctrl-C)"], err
    deadline = time.monotonic() + 10
    while _alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(int(pid))
