"""A search shared by several workers (`workers: shared`), end to end on the tiny model: two
`lf-wrap merge search` processes on one machine, one journal study, one score ledger; each
loads its own vLLM engine and scores other candidates. Then `kill -9` of one worker mid-search:
the other asks its candidate again and finishes the budget. A rerun of a finished shared search
scores nothing."""

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

pytestmark = pytest.mark.slow
LF_WRAP = str(Path(sys.executable).parent / "lf-wrap")


def _start(path: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([LF_WRAP, "merge", "search", str(path)], stdout=handle, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)


def _wait(children: list[subprocess.Popen], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    try:
        for child in children:
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def _states(out: Path, path: Path) -> list[str]:
    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.optimiser import open_study

    recipe, _ = load_search_recipe(path)
    return [t.state.name for t in open_study(out, recipe, list(TASKS)).trials]


def _no_score_twice(out: Path) -> list[dict]:
    lines = read_ledger(out)
    keys = [(e["rows"], e["key"]) for e in lines if not e.get("partial")]     # a pruned candidate's stages
    assert len(keys) == len(set(keys)), sorted(keys)                          # are partial lines before it
    return lines


def _is_trial(entry: dict) -> bool:
    """A score of one of the optimiser's candidates (not the base's, not a specialist's)."""
    weights = (entry["candidate"] or {}).get("weights")
    return entry["rows"] == "search" and weights is not None and sorted(weights) != [0.0] * (len(TASKS) - 1) + [1.0]


def test_two_workers_share_one_search_and_a_rerun_scores_nothing(search_study, tmp_path):
    out = tmp_path / "shared"
    path = search_recipe(search_study, out, budget=6, round_size=1, workers="shared")
    single = run_lf_wrap("merge", "search", path, "--set", "workers=single", "--check")
    assert single.returncode == 0, single.stderr[-3000:]
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    started = time.monotonic()
    children = [_start(path, log) for log in logs]
    _wait(children)
    seconds = time.monotonic() - started
    texts = [log.read_text() for log in logs]
    for child, text in zip(children, texts):
        assert child.returncode == 0, text[-4000:]
        assert "Traceback" not in text and "Verdict: " in text, text[-4000:]
    lines = _no_score_twice(out)
    by_worker = {}
    for entry in lines:
        by_worker[entry["worker"]] = by_worker.get(entry["worker"], 0) + 1
    assert len(by_worker) == 2, by_worker                  # each worker scored candidates of its own
    states = _states(out, path)
    assert states.count("COMPLETE") + states.count("PRUNED") == 6 and "RUNNING" not in states
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "finished" and manifest["workers"] == "shared"
    assert manifest["scores_by_worker"] == by_worker and manifest["finished_by"] in by_worker
    assert sum("finished by worker" in text for text in texts) <= 1     # the final steps: done once
    board = read_json(out / "leaderboard.json")
    trials = sorted(n for row in board["rows"] for n in row["trials"])
    assert len(trials) == 6                                 # the union of both workers' candidates
    print(f"two workers: {seconds:.0f}s, scores by worker {by_worker}")

    # A single run is refused while a worker holds the folder; a rerun of the finished search scores nothing.
    again = run_lf_wrap("merge", "search", path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_json(out / "manifest.json")["scored"] == 0 and "starting one engine" not in again.stderr
    assert read_ledger(out) == lines


def _scoring_a_trial(out: Path) -> set[int]:
    """PIDs of the workers holding a running trial (read from the journal, as Optuna replays it)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not (out / "optuna.journal").is_file():
        return set()
    storage = JournalStorage(JournalFileBackend(str(out / "optuna.journal")))
    try:
        trials = optuna.load_study(study_name="merge-search", storage=storage).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    except KeyError:                                        # the study is not created yet
        return set()
    return {int(t.user_attrs["worker"].split("-")[-2]) for t in trials if "worker" in t.user_attrs}


def test_kill_9_of_one_worker_loses_no_candidate(search_study, tmp_path):
    """A worker is killed while it scores a candidate of its own (the optimiser holds its trial as
    running): the other fails that trial, asks its candidate again, and finishes the budget."""
    out = tmp_path / "killed"
    path = search_recipe(search_study, out, budget=8, round_size=1, workers="shared")
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    children = [_start(path, log) for log in logs]
    by_pid = {child.pid: child for child in children}
    victim = None
    deadline = time.monotonic() + 600
    try:
        while victim is None and time.monotonic() < deadline and all(c.poll() is None for c in children):
            lines = read_ledger(out) if (out / "scores.jsonl").is_file() else []
            if sum(_is_trial(e) for e in lines) >= 2:          # the search is under way
                victim = next((by_pid[pid] for pid in _scoring_a_trial(out) if pid in by_pid), None)
            time.sleep(0.2)
        assert victim is not None, "no worker to kill: " + "".join(p.read_text()[-2000:] for p in logs)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        survivor = next(c for c in children if c is not victim)
        _wait([survivor])
    finally:
        _wait(children, timeout=1)
    text = logs[children.index(survivor)].read_text()
    assert survivor.returncode == 0, text[-4000:]
    assert "of a worker that stopped asked again" in text
    _no_score_twice(out)
    states = _states(out, path)
    assert states.count("COMPLETE") + states.count("PRUNED") == 8 and states.count("FAIL") >= 1 and "RUNNING" not in states
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "finished" and manifest["trials"] == len(states)
    print(f"killed pid {victim.pid}; trials {states}; scores by worker {manifest['scores_by_worker']}")


def test_a_worker_with_its_study_in_a_database(search_study, tmp_path):
    """storage: an RDB URL (SQLite here; PostgreSQL or MySQL on a cluster): the study lives there,
    the scores stay in out; the password of a URL never reaches the manifest."""
    import optuna

    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.optimiser import study_name

    out = tmp_path / "rdb"
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    path = search_recipe(search_study, out, budget=3, round_size=3, workers="shared", storage=url)
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert not (out / "optuna.journal").exists()
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "finished" and manifest["storage"] == url
    recipe, _ = load_search_recipe(path)
    name = study_name(recipe, manifest["identity"], manifest["space"])
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    _no_score_twice(out)
    moved = run_lf_wrap("merge", "search", path, "--set", f"storage=sqlite:///{tmp_path / 'other.db'}")
    assert moved.returncode == 2 and "give the same storage" in moved.stderr


def test_two_workers_share_a_pareto_search(search_study, tmp_path):
    """objective pareto with workers shared: both workers ask and tell one multi-objective study."""
    out = tmp_path / "shared-pareto"
    path = search_recipe(search_study, out, budget=4, round_size=1, workers="shared", objective="pareto",
                         methods=["linear"])
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    children = [_start(path, log) for log in logs]
    _wait(children)
    for child, log in zip(children, logs):
        assert child.returncode == 0, log.read_text()[-4000:]
    _no_score_twice(out)
    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.optimiser import open_study

    recipe, _ = load_search_recipe(path)
    trials = open_study(out, recipe, list(TASKS), objectives=3).trials
    assert [t.state.name for t in trials].count("COMPLETE") == 4 and all(len(t.values) == 3 for t in trials)
    board = read_json(out / "leaderboard.json")
    assert board["pareto_front"] and (out / "pareto.png").is_file()
