"""`lf-wrap merge search` end to end on the tiny model: three seeded random adapters, each the
specialist of a task of its own (ROUGE) whose references are that adapter's greedy answers (so each
specialist beats the base on its task by construction, and a merge keeps part of each gain).
The real vLLM engine, the real Optuna journal, the real merge stage; `kill -9` mid-search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_json, run_lf_wrap
from helpers.search import TASKS, read_ledger, search_recipe
from helpers.terminal import started_from_a_terminal, stop, wait_until

pytestmark = pytest.mark.slow

def test_direct_form_searches_and_reports_on_other_rows(search_study, tmp_path):
    root, eval_path, folders = search_study
    out = tmp_path / "search"
    done = run_lf_wrap("merge", "search", *folders, "--eval", eval_path, "--tasks", ",".join(TASKS),
                       "--methods", "linear,ties", "--budget", "5", "--search-rows", "5", "--out", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "retained gain on the report rows" in done.stdout and "worst task" in done.stdout
    summary = done.stdout[done.stdout.index("Verdict: "):]      # vLLM's own lines may come first
    manifest = read_json(out / "manifest.json")
    assert manifest["stage"] == "search" and manifest["status"] == "finished"
    assert manifest["trials"] == 5 and manifest["space"]["methods"] == ["linear", "ties"]
    for task in TASKS:
        rows = manifest["rows"][task]
        search, report = {r[0] for r in rows["search"]}, {r[0] for r in rows["report"]}
        assert len(search) == 5 and len(report) == 7 and not search & report
    board = read_json(out / "leaderboard.json")
    roles = {row["role"] for row in board["rows"]}
    assert {"reference: sum", "reference: linear 0.5"} <= roles
    ranks = [(-round(r["value"], 12), -round(r["mean"], 12)) for r in board["rows"]]
    assert ranks == sorted(ranks)                         # best first: the worst task's lower bound, then mean
    assert all(r["value"] == r["lower_bound"] <= r["worst"] + 1e-12 for r in board["rows"])
    assert set(board["counted"]) == set(TASKS)
    for name in ("leaderboard.md", "leaderboard.csv", "final.md", "chart.png", "search.yaml", "optuna.journal"):
        assert (out / name).is_file(), name
    best = board["rows"][0]
    assert manifest["best"]["label"] == best["label"]
    final = manifest["final"]
    # Every merge here keeps nothing of task_a's gain on the report rows (the sum merge neither):
    # the winner held (0% >= 0%) but does not beat the sum merge, so nothing is written to best/.
    assert final["verdict"] == "not_confirmed" and manifest["best_merge"] is None and not (out / "best").exists()
    assert (out / "final.md").read_text(encoding="utf-8").startswith(final["verdict_sentence"])
    assert summary.startswith(final["verdict_sentence"] + "\n") and "--method sum" in final["verdict_sentence"]
    assert all(t["gain"] for t in manifest["signal"]["search"].values())
    assert all(t["gain"] for t in final["signal"]["report"].values())
    assert final["labels"]["best"] == best["label"] and set(final["retained"]) == {"best", "sum", "linear 0.5"}
    for task in TASKS:                                    # each specialist keeps all of its own gain
        assert final["scores"][f"specialist {task}"][task]["value"] > final["scores"]["base"][task]["value"]
    keys = [(e["rows"], e["key"]) for e in read_ledger(out)]
    assert len(keys) == len(set(keys))                    # nothing scored twice


def test_search_recipe_in_the_repo_validates():
    from lf_wrap.search.recipe import load_search_recipe

    recipe, text = load_search_recipe(Path(__file__).resolve().parents[1] / "recipes" / "search.yaml")
    assert recipe.objective == "worst" and "lf-wrap merge search" in text


def test_kill_9_mid_search_then_rerun_reuses_every_finished_score(search_study, tmp_path):
    out = tmp_path / "killed"
    path = search_recipe(search_study, out, budget=8, round_size=1)
    argv = [str(Path(sys.executable).parent / "lf-wrap"), "merge", "search", str(path)]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and child.poll() is None:
            ledger = out / "scores.jsonl"
            if ledger.is_file() and len(ledger.read_text(encoding="utf-8").splitlines()) >= 6:
                break                                     # base, 3 specialists and 2 candidates scored
            time.sleep(0.2)
        assert child.poll() is None, "the search ended before it could be killed: " + child.stderr.read()[-3000:]
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    before = read_ledger(out)
    assert read_json(out / "manifest.json")["status"] == "running"

    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "continuing the search" in done.stderr
    after = read_ledger(out)
    assert after[:len(before)] == before                  # kept as written
    keys = [(e["rows"], e["key"]) for e in after if not e.get("partial")]     # a pruned candidate's stages:
    assert len(keys) == len(set(keys))                    # no finished candidate scored again   # partial lines
    _scored_once(out)
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "finished" and manifest["scored"] == len(after) - len(before)
    import optuna

    from lf_wrap.search.optimiser import open_study
    from lf_wrap.search.recipe import load_search_recipe

    recipe, _ = load_search_recipe(path)
    states = [t.state for t in open_study(out, recipe, list(TASKS)).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == 8

    again = run_lf_wrap("merge", "search", path)          # finished: everything reused, no engine start
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_json(out / "manifest.json")["scored"] == 0
    assert "starting the engine" not in again.stderr


def test_other_inputs_in_the_same_folder_are_refused(search_study, tmp_path):
    out = tmp_path / "small"
    path = search_recipe(search_study, out, budget=2)
    checked = run_lf_wrap("merge", "search", path, "--check")      # reads and checks; starts nothing
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "OK: 3 adapters (task_a, task_b, task_c)" in checked.stdout and "task_a 5/7" in checked.stdout
    assert not out.exists()
    assert run_lf_wrap("merge", "search", path).returncode == 0
    ledger = (out / "scores.jsonl").read_bytes()
    done = run_lf_wrap("merge", "search", path, "--set", "rows.search=4")
    assert done.returncode == 2
    assert done.stderr.count("Error:") == 1 and "holds a search with other inputs" in done.stderr
    assert (out / "scores.jsonl").read_bytes() == ledger  # nothing lost
    widened = run_lf_wrap("merge", "search", path, "--set", "weights.high=2.0")
    assert widened.returncode == 2 and "another search space (weights)" in widened.stderr


def test_a_changed_metric_is_never_answered_from_the_old_scores(search_study, tmp_path):
    """SN1, SN2: the ledger's identity had no metric. A metric file edited in place (or another
    function under the same name) gave "0 scores computed, 20 reused" and the old figures; a
    shipped metric swapped in gave a KeyError traceback. Now both are other inputs, named."""
    metric = tmp_path / "my_metric.py"
    metric.write_text("def overlap(prediction, references):\n"
                      "    return float(any(r.strip() and r.strip() in prediction for r in references))\n")
    out = tmp_path / "custom"
    path = search_recipe(search_study, out, budget=2,
                         eval_overrides=[f"tasks.{t}.metric={metric}:overlap" for t in TASKS])
    first = run_lf_wrap("merge", "search", path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert read_json(out / "manifest.json")["scoring"]["task_a"]["function"] == "overlap"
    ledger = (out / "scores.jsonl").read_bytes()
    metric.write_text(metric.read_text() + "# the same function, edited\n")
    edited = run_lf_wrap("merge", "search", path)
    assert edited.returncode == 2 and edited.stderr.count("Error:") == 1, edited.stderr[-3000:]
    assert "task task_a's metric" in edited.stderr and "(its file or settings changed)" in edited.stderr
    swapped = run_lf_wrap("merge", "search", path, "--set", "eval_overrides=[tasks.task_a.metric=chrf]")
    assert swapped.returncode == 2 and swapped.stderr.count("Error:") == 1, swapped.stderr[-3000:]
    assert f"task task_a's metric ({metric}:overlap -> chrf)" in swapped.stderr
    assert (out / "scores.jsonl").read_bytes() == ledger            # nothing lost, nothing reused


def test_overlapping_search_and_report_rows_are_refused(search_study, tmp_path):
    out = tmp_path / "overlap"
    path = search_recipe(search_study, out, rows={"search": 5, "search_datasets": {"task_b": "task_b"}})
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Error: rows.search_datasets.task_b: row 0 (id task_b-0)" in done.stderr
    assert "must not overlap" in done.stderr and not out.exists()


def test_data_parallel_replicas_score_what_one_engine_scores(search_study, tmp_path):
    """data_parallel_size 2: a round's candidates go to two engine replicas (child processes),
    each patching its own weights; every score equals the single engine's."""
    ledgers = {}
    for replicas in (1, 2):
        out = tmp_path / f"replicas-{replicas}"
        path = search_recipe(search_study, out, budget=4, round_size=2, seed=3,
                             eval_overrides=[f"engine.data_parallel_size={replicas}"])
        done = run_lf_wrap("merge", "search", path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
        assert read_json(out / "manifest.json")["engine_replicas"] == replicas
        ledgers[replicas] = {(e["rows"], e["key"]): (e["metrics"], e["per_row"]) for e in read_ledger(out)}
    assert "starting 2 engine replicas" in done.stderr
    assert ledgers[1] == ledgers[2] and len(ledgers[1]) >= 12


def test_ctrl_c_and_sigterm_stop_a_search_with_one_message_and_the_manifest_says_so(search_study, tmp_path):
    out = tmp_path / "stopped"
    path = search_recipe(search_study, out, budget=10, round_size=1)
    argv = [str(Path(sys.executable).parent / "lf-wrap"), "merge", "search", str(path)]
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        log = tmp_path / f"{signum.name}.log"
        with started_from_a_terminal(argv, log) as child:
            wait_until(child, lambda: "round 2:" in log.read_text(), log, timeout=600)
            assert stop(child, signum) == code, log.read_text()[-3000:]
        stderr = log.read_text()
        assert "Traceback" not in stderr and stderr.count("Error:") == 1, stderr[-3000:]
        assert "Error: interrupted" in stderr and "run the same command to go on" in stderr
        assert read_json(out / "manifest.json")["status"] == "interrupted"


def test_a_damaged_or_deleted_record_never_changes_the_answer(search_study, tmp_path):
    out = tmp_path / "records"
    path = search_recipe(search_study, out, budget=4, round_size=2)
    assert run_lf_wrap("merge", "search", path).returncode == 0

    def board():
        return [(r["label"], round(r["value"], 9)) for r in read_json(out / "leaderboard.json")["rows"]]

    first = board()
    ledger, journal = out / "scores.jsonl", out / "optuna.journal"
    scores, trials = ledger.read_bytes(), journal.read_bytes()
    lines = scores.splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:5]) + b"{garbagexxxx\n" + b"".join(lines[5:]))
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 2 and done.stderr.count("Error:") == 1, done.stderr[-3000:]
    assert f"{ledger}:6: not a JSON object" in done.stderr and "starting one engine" not in done.stderr
    assert len(ledger.read_bytes()) == len(scores) + len(b"{garbagexxxx\n")        # nothing cut
    ledger.write_bytes(scores)
    half = trials.index(b"\n", len(trials) // 2) + 1
    journal.write_bytes(trials[:half] + b"garbage{{{\n" + trials[half:])
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 2 and done.stderr.count("Error:") == 1, done.stderr[-3000:]
    assert f"{journal}:" in done.stderr and "not a line Optuna wrote" in done.stderr
    journal.write_bytes(trials)

    ledger.unlink()                                       # the scores lost, the journal kept
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "have no score in scores.jsonl" in done.stderr
    assert board() == first                               # the same leaderboard, every completed trial on it
    lowered = run_lf_wrap("merge", "search", path, "--set", "budget=2")
    assert lowered.returncode == 0 and "budget 2: the search already holds 4 completed candidates" in lowered.stderr
    journal.unlink()                                      # the trials lost, the scores kept
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0 and "optuna.journal is missing: the optimiser starts over" in done.stderr


def test_inputs_are_named_as_the_recipe_names_them_and_a_file_as_out_fails_the_check(search_study, tmp_path):
    root, eval_path, folders = search_study
    twice = search_recipe(search_study, tmp_path / "twice", adapters=[{"path": str(folders[0]), "task": TASKS[0]},
                                                                      {"path": str(folders[0]), "task": TASKS[1]}])
    done = run_lf_wrap("merge", "search", twice, "--check")
    assert done.returncode == 2 and "models 'adapters.0' and 'adapters.1' are the same model" in done.stderr
    (tmp_path / "afile").write_text("x")
    done = run_lf_wrap("merge", "search", search_recipe(search_study, tmp_path / "afile"), "--check")
    assert done.returncode == 2 and done.stderr.count("Error:") == 1 and "is a file, not a search folder" in done.stderr


def test_folds_rank_by_the_worst_fold_and_the_top_held_are_checked_on_the_report_rows(search_study, tmp_path):
    """rows.folds 2: every candidate's objective on each fold of the search rows, ranked by the
    worst; the top 5 scored on the report rows too, each with its held verdict, and final.md says
    whether the winner held. Other folds then re-rank the scores on record: no search row is
    generated again."""
    out = tmp_path / "folds"
    path = search_recipe(search_study, out, budget=6, rows={"search": 6, "folds": 2})
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    manifest, board = read_json(out / "manifest.json"), read_json(out / "leaderboard.json")
    assert manifest["folds"] == {"folds": 2, "seed": 0, "rows_per_fold": {t: [3, 3] for t in TASKS}}
    assert board["folds"] == manifest["folds"] and board["ranked_by"]["rank_by"] == "worst_fold"
    for row in board["rows"]:
        assert len(row["folds"]) == 2 and row["value"] == min(row["folds"])
    ranks = [(-round(r["value"], 12), -round(r["mean"], 12)) for r in board["rows"]]
    assert ranks == sorted(ranks)
    top = board["held"]
    assert [r["label"] for r in top] == [r["label"] for r in board["rows"][:5]]
    for r, row in zip(top, board["rows"]):
        assert r["ranked_value"] == row["value"] and r["search_folds"] == [min(row["folds"]), max(row["folds"])]
        assert r["held"] == (round(r["report"], 12) >= round(r["ranked_value"], 12))
    report_keys = {e["key"] for e in read_ledger(out) if e["rows"] == "report"}
    assert {r["label"] for r in top} <= report_keys               # each scored on the report rows
    final = (out / "final.md").read_text(encoding="utf-8")
    winner = top[0]
    verdict = "The winner held:" if winner["held"] else "The winner did not hold:"
    assert f"{verdict} `{winner['label']}` keeps" in final and board["held_sentence"] in final
    assert "| rank | candidate | search: ranked by (worst task kept, worst of 2 folds)" in final
    assert "## On the report rows" in (out / "leaderboard.md").read_text(encoding="utf-8")

    searched = [e for e in read_ledger(out) if e["rows"] == "search"]
    again = run_lf_wrap("merge", "search", path, "--set", "rows.folds=3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the search" in again.stderr
    assert [e for e in read_ledger(out) if e["rows"] == "search"] == searched    # nothing generated on the search rows
    board = read_json(out / "leaderboard.json")
    assert board["folds"]["folds"] == 3 and all(len(r["folds"]) == 3 for r in board["rows"])

    # rows.held 1: only the winner is checked on the report rows (each held row costs a candidate's
    # report rows); everything it needs is on record, so nothing is generated.
    reported = [e for e in read_ledger(out) if e["rows"] == "report"]
    alone = run_lf_wrap("merge", "search", path, "--set", "rows.folds=3", "--set", "rows.held=1")
    assert alone.returncode == 0, alone.stderr[-3000:]
    board = read_json(out / "leaderboard.json")
    assert [r["label"] for r in board["held"]] == [board["rows"][0]["label"]]
    assert board["held_sentence"].endswith("on the search rows (worst task kept, worst of 3 folds).")
    assert [e for e in read_ledger(out) if e["rows"] == "report"] == reported


def test_pareto_search_writes_the_front_and_its_chart(search_study, tmp_path):
    out = tmp_path / "pareto"
    path = search_recipe(search_study, out, budget=6, objective="pareto", methods=["linear"])
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    import optuna

    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.optimiser import open_study

    recipe, _ = load_search_recipe(path)
    study_ = open_study(out, recipe, list(TASKS), objectives=3)
    assert len(study_.directions) == 3 and all(d == optuna.study.StudyDirection.MAXIMIZE for d in study_.directions)
    board = read_json(out / "leaderboard.json")
    front = [r for r in board["rows"] if r["front"]]
    assert front and board["pareto_front"] == [r["label"] for r in front]
    for r in front:                                         # no row beats a front row on every task
        assert not any(all(o["objectives"][t] >= r["objectives"][t] for t in TASKS)
                       and any(o["objectives"][t] > r["objectives"][t] for t in TASKS)
                       for o in board["rows"] if o is not r)
    assert read_json(out / "manifest.json")["best"]["label"] == front[0]["label"]
    assert (out / "pareto.png").stat().st_size > 1000
    assert "## Pareto front" in (out / "leaderboard.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("sets, message", [
    (["rows.folds=1"], "rows.folds: Input should be greater than or equal to 2"),
    (["rows.folds=6"], "rows.folds: 6 folds of 5 search rows per task would leave a fold empty"),
    (["uncertainty.rank_by=worst_fold"], "uncertainty.rank_by: worst_fold needs rows.folds"),
    (["objective=pareto", "sampler=cmaes"], "objective: pareto needs a sampler that optimises several objectives"),
])
def test_bad_folds_or_objectives_are_one_error_before_anything_runs(search_study, tmp_path, sets, message):
    out = tmp_path / "bad"
    path = search_recipe(search_study, out)
    for command in (("merge", "search", path), ("validate", path)):
        done = run_lf_wrap(*command, *(x for s in sets for x in ("--set", s)))
        assert done.returncode == 2, done.stderr[-3000:]
        assert done.stderr.count("Error:") == 1 and message in done.stderr, done.stderr[-3000:]
        assert not out.exists()


def test_direct_form_takes_folds_and_pareto(search_study, tmp_path):
    root, eval_path, folders = search_study
    out = tmp_path / "direct"
    base = ("merge", "search", *folders, "--eval", eval_path, "--tasks", ",".join(TASKS), "--search-rows", "5",
            "--out", out)
    checked = run_lf_wrap(*base, "--folds", "2", "--objective", "pareto", "--check")
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "objective pareto (2 folds, ranked by worst_fold)" in checked.stdout
    bad = run_lf_wrap(*base, "--folds", "6")
    assert bad.returncode == 2 and bad.stderr.count("Error:") == 1
    assert "rows.folds: 6 folds of 5 search rows per task would leave a fold empty" in bad.stderr
    assert not out.exists()


def _summary(done) -> str:
    """The command's summary: from its first line, the verdict (vLLM's own lines may come before)."""
    return done.stdout[done.stdout.index("Verdict: "):]


def _two(search_study) -> list[dict]:
    root, eval_path, folders = search_study
    return [{"path": str(folders[0]), "task": TASKS[0]}, {"path": str(folders[1]), "task": TASKS[1]}]


def test_a_winner_that_does_not_hold_ends_not_confirmed_with_no_model_in_best(search_study, tmp_path):
    """Two tasks, ranked by the point value on 5 search rows: the winner (a loud linear merge) is
    ranked at a share of the gains it does not keep on the report rows."""
    out = tmp_path / "unheld"
    path = search_recipe(search_study, out, adapters=_two(search_study), methods=["linear"], budget=8, round_size=4,
                         uncertainty={"rank_by": "point"})
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    manifest = read_json(out / "manifest.json")
    final = manifest["final"]
    winner = next(r for r in final["held"] if r["label"] == manifest["best"]["label"])
    assert winner["held"] is False and final["verdict"] == "not_confirmed"
    assert not (out / "best").exists() and manifest["best_merge"] is None
    sentence = final["verdict_sentence"]
    assert sentence.startswith(f"Verdict: not confirmed. `{winner['label']}`, the best on the search rows, did not "
                               "hold on the report rows")
    assert "no model is written to best/" in sentence and "Instead, use the sum merge" in sentence
    assert _summary(done).startswith(sentence + "\n")
    assert f"best on the search rows (not confirmed, not written): {winner['label']}" in done.stdout
    assert (out / "final.md").read_text(encoding="utf-8").startswith(sentence + "\n")
    assert read_json(out / "leaderboard.json")["verdict"] == "not_confirmed"


def test_best_is_written_only_when_confirmed_refused_when_foreign_and_removed_when_no_longer_confirmed(search_study,
                                                                                                       tmp_path):
    """A lenient level (verdict.level 0.75: a test of the mechanics, on 7 report rows whose many
    tied resamples give p = 0.56) confirms the grid's winner (it held, and beats the sum
    merge's 2.9% of task_b's gain): best/ is written. A NOTES.md put in best/ is refused before
    anything is scored. At the default level the same scores do not confirm it: best/ is removed.
    A joint adapter (here task_c's adapter stands in for one) is scored beside the merges."""
    out = tmp_path / "confirm"
    path = search_recipe(search_study, out, adapters=_two(search_study), methods=["linear"], sampler="grid",
                         grid=[0.8, 0.9, 1.1], budget=8, round_size=4, verdict={"level": 0.75},
                         joint=str(search_study[2][2]))
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    manifest = read_json(out / "manifest.json")
    assert manifest["final"]["verdict"] == "confirmed", manifest["final"]["verdict_sentence"]
    assert _summary(done).startswith("Verdict: confirmed.") and "< 0.75: beyond resampling noise" in done.stdout
    assert read_json(out / "best" / "adapter_config.json")["peft_type"] == "LORA"
    assert manifest["best_merge"] == str(out / "best")
    card = (out / "best" / "README.md").read_text(encoding="utf-8")      # its model card ends with final.md's figures
    assert card.startswith("---\nbase_model:") and "library_name: peft" in card and "## Report rows" in card
    assert manifest["final"]["verdict_sentence"] in card and "Space: methods linear" in card
    final = manifest["final"]                                             # the joint reference, on the report rows
    assert final["compared"] == ["sum", "linear 0.5", "best", "joint"] and manifest["inputs"]["joint"]["fingerprint"]
    assert all(final["retained"]["joint"][t]["ci95"] for t in TASKS[:2]) and final["summary"]["joint"]["worst"] is not None
    assert final["best_vs_joint"]["other"] == "joint" and final["best_vs_joint"]["task"] == final["best_vs_sum"]["task"]
    assert [e["rows"] for e in read_ledger(out) if e["key"] == "joint"] == ["report"]      # never on the search rows
    said = _summary(done)
    assert any(line.split()[-2:] == ["best", "joint"] for line in said.splitlines() if line.strip()) and "\n  mean" in said and "Best vs joint on the task best keeps least" in said
    assert "| joint kept |" in (out / "final.md").read_text(encoding="utf-8") and "Best vs joint" in card

    ledger = (out / "scores.jsonl").read_bytes()
    (out / "best" / "NOTES.md").write_text("mine", encoding="utf-8")
    refused = run_lf_wrap("merge", "search", path, "--set", "verdict.level=0.05")
    assert refused.returncode == 2 and refused.stderr.count("Error:") == 1, refused.stderr[-3000:]
    assert f"Error: out {out}: its best/ holds files lf-wrap did not write (NOTES.md)" in refused.stderr
    assert "--out" not in refused.stderr and "starting" not in refused.stderr
    assert (out / "best" / "NOTES.md").is_file() and (out / "scores.jsonl").read_bytes() == ledger

    (out / "best" / "NOTES.md").unlink()
    strict = run_lf_wrap("merge", "search", path, "--set", "verdict.level=0.05")
    assert strict.returncode == 0, strict.stderr[-3000:]
    manifest = read_json(out / "manifest.json")
    assert manifest["final"]["verdict"] == "not_confirmed" and manifest["scored"] == 0
    assert not (out / "best").exists() and f"removed {out}/best (an earlier run's merge" in strict.stdout
    assert "not below 0.05: within resampling noise" in manifest["final"]["verdict_sentence"]


def test_a_joint_adapter_that_cannot_be_scored_is_one_error_before_any_engine(search_study, tiny_model, tmp_path):
    """joint: a folder that is not there, or an adapter targeting a module the specialists do not
    (the engine patches only theirs): one Error naming the key, from `lf-wrap validate`."""
    from helpers.adapters import make_adapter

    other = make_adapter(tiny_model, tmp_path / "other-targets", 4, 8, targets=("q_proj", "k_proj"))
    path = search_recipe(search_study, tmp_path / "out", adapters=_two(search_study))
    for joint, says in ((tmp_path / "nothing", "model 'joint': "), (other, "joint: ")):
        done = run_lf_wrap("validate", path, "--set", f"joint={joint}")
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert done.returncode == 2 and len(errors) == 1 and says in errors[0], done.stderr[-3000:]
    assert "k_proj" in errors[0] and "lora_target" in errors[0]
    done = run_lf_wrap("validate", path, "--set", f"joint={search_study[2][2]}")
    assert done.returncode == 0 and f"joint reference {search_study[2][2]}" in done.stdout, done.stderr[-3000:]


def test_a_specialist_without_signal_stops_the_search_and_pareto_over_one_task_is_refused(search_study, tmp_path):
    """Adapters B and C given each other's task: their specialists do not beat the base there. By
    default the search stops before any candidate (no_signal); objective pareto is one Error."""
    root, eval_path, folders = search_study
    crossed = [{"path": str(folders[0]), "task": "task_a"}, {"path": str(folders[1]), "task": "task_c"},
               {"path": str(folders[2]), "task": "task_b"}]
    out = tmp_path / "crossed"
    path = search_recipe(search_study, out, adapters=crossed)
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    manifest = read_json(out / "manifest.json")
    assert manifest["final"]["verdict"] == "no_signal" and manifest["status"] == "finished"
    assert manifest["best"] is None and manifest["trials"] == 0 and not (out / "best").exists()
    assert _summary(done).startswith("Verdict: no signal. On the search rows the specialist of task_")
    assert "the search stopped before scoring any candidate" in done.stdout
    assert not (out / "leaderboard.json").exists() and len(read_ledger(out)) == 4      # base and 3 specialists
    assert (out / "final.md").read_text(encoding="utf-8").startswith(manifest["final"]["verdict_sentence"])

    others = tmp_path / "others"                          # rank on task_a alone, saying so everywhere
    ranked = run_lf_wrap("merge", "search", path, "--set", "verdict.without_signal=rank_the_others",
                         "--set", "budget=4", "--set", "methods=[linear]", "--set", f"out={others}")
    assert ranked.returncode == 0, ranked.stdout[-3000:] + ranked.stderr[-6000:]
    assert read_json(others / "leaderboard.json")["counted"] == ["task_a"]
    note = "does not beat the base beyond resampling noise"
    for text in (_summary(ranked), (others / "final.md").read_text(encoding="utf-8"),
                 (others / "leaderboard.md").read_text(encoding="utf-8")):
        assert "Not counted" in text and "(verdict.without_signal: rank_the_others)" in text and note in text

    pareto = run_lf_wrap("merge", "search", path, "--set", "objective=pareto", "--set", f"out={tmp_path / 'p'}")
    assert pareto.returncode == 2 and pareto.stderr.count("Error:") == 1, pareto.stderr[-3000:]
    assert "Traceback" not in pareto.stderr
    assert "Error: objective: pareto needs two counted tasks or more" in pareto.stderr
    assert "beats the base beyond resampling noise are: task_a (" in pareto.stderr


def test_a_sigterm_while_best_is_written_exits_143_and_leaves_no_best(search_study, tmp_path, monkeypatch):
    """best/ is written by the merge stage, which catches SIGTERM itself: the search said
    `interrupted (Ctrl-C)` and exited 130 (probe round three). Now SIGTERM and 143, as every stage,
    the manifest says interrupted and no half-written best/ is left."""
    import lf_wrap.merge.run as merge_run
    from lf_wrap.core.errors import Interrupted
    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.run import search

    out = tmp_path / "killed"
    path = search_recipe(search_study, out, adapters=_two(search_study), methods=["linear"], sampler="grid",
                         grid=[0.8, 0.9, 1.1], budget=8, round_size=4, verdict={"level": 0.75})

    def terminated_while_writing(plan, tmp):
        os.kill(os.getpid(), signal.SIGTERM)      # as `kill PID` from a job scheduler would
        time.sleep(30)

    monkeypatch.setattr(merge_run, "write_adapter", terminated_while_writing)
    recipe, text = load_search_recipe(path)
    with pytest.raises(Interrupted) as caught:
        search(recipe, text, recipe_path=path)
    assert caught.value.exit_code == 143 and "interrupted (SIGTERM)" in str(caught.value)
    assert read_json(out / "manifest.json")["status"] == "interrupted"
    assert not (out / "best").exists()


def _grid(search_study, out: Path, **extra) -> Path:
    """A grid of 36 linear merges of two adapters, ranked by the worst task's point value, the top 2
    checked on the report rows: the first task (task_a) is scored first, and on these rows most
    merges keep nothing of one of the two gains, so once two merges keep some of both, the others
    are pruned after task_a or after both."""
    return search_recipe(search_study, out, adapters=_two(search_study), methods=["linear"], sampler="grid",
                          grid=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25], budget=36, round_size=3,
                          uncertainty={"rank_by": "point"}, rows={"search": 6, "held": 2}, **extra)


def _top(board: dict) -> list[tuple]:
    return [(r["label"], r["ranked_value"]) for r in board["held"]]


def _scored_once(out: Path) -> None:
    """Every candidate's search rows generated once: each line of a key adds rows, one whole line at most."""
    lines: dict[tuple, list[dict]] = {}
    for e in read_ledger(out):
        lines.setdefault((e["rows"], e["key"]), []).append(e)
    for key, got in lines.items():
        sizes = [sum(len(t["row_scores"]) for t in e["per_row"].values()) for e in got]
        assert sizes == sorted(set(sizes)), key
        assert [e.get("partial", False) for e in got].count(False) <= 1, key


def test_pruning_keeps_the_grids_winner_and_top_held_and_generates_fewer_rows(search_study, tmp_path):
    runs = {}
    for prune in (False, True):
        out = tmp_path / f"grid-{prune}"
        done = run_lf_wrap("merge", "search", _grid(search_study, out, prune=prune))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
        runs[prune] = read_json(out / "manifest.json"), read_json(out / "leaderboard.json")
        _scored_once(out)
    (plain, plain_board), (pruned, pruned_board) = runs[False], runs[True]
    assert pruned["best"]["label"] == plain["best"]["label"] and _top(pruned_board) == _top(plain_board)
    assert plain["pruning"] == {"on": False, "pruned": 0, "stages": None}
    assert pruned["pruning"]["on"] and pruned["pruning"]["stages"] == ["task task_a", "task task_b"]
    assert pruned["pruning"]["pruned"] > 0
    assert pruned["generated_rows"]["search"] < plain["generated_rows"]["search"]
    cut = [r for r in pruned_board["rows"] if r["pruned"]]
    assert 0 < len(cut) <= pruned["pruning"]["pruned"] and pruned_board["rows"][-len(cut):] == cut
    # (a pruned grid point that is a reference merge, sum or linear 0.5, is scored whole at the end)
    needed = pruned_board["held"][-1]["ranked_value"]
    assert all(len(r["pruned"]["parts"]) == 1 and r["value"] < needed for r in cut)     # after one stage
    whole = {r["label"]: r["value"] for r in plain_board["rows"]}
    assert all(whole[r["label"]] <= r["value"] + 1e-12 for r in cut)      # the bound bounds the value it would have had
    assert "pruned at" in (tmp_path / "grid-True" / "leaderboard.md").read_text(encoding="utf-8")
    runs["pruned"] = pruned_board

    out = tmp_path / "grid-killed"                   # killed after some candidates were pruned, then run again
    path = _grid(search_study, out)
    argv = [str(Path(sys.executable).parent / "lf-wrap"), "merge", "search", str(path)]
    log = tmp_path / "killed.log"
    with open(log, "w") as handle:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)
    deadline = time.monotonic() + 600
    import re

    while time.monotonic() < deadline and child.poll() is None and not re.search(r" [1-9]\d* pruned\)",
                                                                                   log.read_text()):
        time.sleep(0.2)
    assert child.poll() is None, "the search ended before it could be killed: " + log.read_text()[-3000:]
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    before = {e["key"] for e in read_ledger(out) if e.get("partial")}
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "continuing the search" in done.stderr
    _scored_once(out)
    board = read_json(out / "leaderboard.json")
    assert board["rows"][0]["label"] == pruned_board["rows"][0]["label"] and _top(board) == _top(pruned_board)
    assert before <= {r["key"] for r in board["rows"]}                  # no pruned candidate lost
    assert len(board["rows"]) == len(pruned_board["rows"])


def test_prune_with_an_objective_it_is_not_exact_for_is_one_error(search_study, tmp_path):
    out = tmp_path / "bad-prune"
    done = run_lf_wrap("merge", "search", search_recipe(search_study, out, objective="pareto", prune=True))
    assert done.returncode == 2 and done.stderr.count("Error:") == 1, done.stderr[-3000:]
    assert "prune: true needs objective worst; with objective pareto" in done.stderr and not out.exists()


def test_seeds_run_once_each_into_one_folder_sharing_their_scores(search_study, tmp_path):
    out = tmp_path / "seeds"
    path = search_recipe(search_study, out, methods=["linear"], budget=3, round_size=3, seeds=[0, 1],
                          rows={"search": 5, "held": 1})
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    record = read_json(out / "seeds.json")
    assert [r["seed"] for r in record["runs"]] == [0, 1]
    first, second = record["runs"]
    assert second["reused"] >= 4                          # base and specialists (and more) scored once
    assert not (out / "seed-0" / "scores.jsonl").exists() and not (out / "seed-1" / "scores.jsonl").exists()
    keys = [(e["rows"], e["key"]) for e in read_ledger(out) if not e.get("partial")]
    assert len(keys) == len(set(keys))                    # nothing scored twice across the seeds
    final = (out / "final.md").read_text(encoding="utf-8")
    for r in record["runs"]:
        assert read_json(Path(r["folder"]) / "manifest.json")["space"]["seed"] == r["seed"]
        assert f"| {r['seed']} | `{r['winner']}` |" in final
        manifest = read_json(Path(r["folder"]) / "manifest.json")
        versus = manifest["final"]["best_vs_sum"]              # each seed's winner against the sum, its weakest task
        assert (r["weakest"], r["p_vs_sum"]) == (versus["task"], versus["p_value"])
        assert f"| {versus['task']}: {versus['difference']:+.4f}, p = {versus['p_value']:.3g} |" in final
    assert "Over 2 seeds" in final and "spread" in final and "spread" in done.stdout
    worst = [r["worst"] for r in record["runs"]]
    assert record["spread"]["worst"]["spread"] == pytest.approx(max(worst) - min(worst))


def test_seeds_that_are_not_integers_are_one_error(search_study, tmp_path):
    out = tmp_path / "bad-seeds"
    for value in ("[0,1.5]", "[a]"):
        done = run_lf_wrap("merge", "search", search_recipe(search_study, out), "--set", f"seeds={value}")
        assert done.returncode == 2 and done.stderr.count("Error:") == 1, done.stderr[-3000:]
        assert "seeds." in done.stderr and "Input should be a valid integer" in done.stderr and not out.exists()
