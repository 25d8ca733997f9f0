"""The merge search's parts that need no engine: the recipe's checks, the split of rows, the
Optuna study (reference merges first, a killed trial asked again), the score ledger."""

from __future__ import annotations

import json

import pytest

from lf_wrap.core.errors import UserError
from lf_wrap.evaluation.requests import Request
from lf_wrap.search.candidates import Candidate
from lf_wrap.search.ledger import Ledger
from lf_wrap.search.recipe import direct_recipe
from lf_wrap.search.splits import _draw
from lf_wrap.search import optimiser

TASKS = ["translate", "summarize", "qa"]


def recipe(tmp_path, **extra):
    data = {"eval": "recipes/eval.yaml", "adapters": [{"path": f"a{i}", "task": t} for i, t in enumerate(TASKS)],
            "out": str(tmp_path / "search")}
    data.update(extra)
    return direct_recipe(data)


def test_recipe_refuses_what_cannot_be_searched(tmp_path):
    with pytest.raises(UserError, match="methods.*sum takes no weights"):
        recipe(tmp_path, methods=["sum"])
    with pytest.raises(UserError, match="unknown merge method 'slerp'"):
        recipe(tmp_path, methods=["linear", "slerp"])
    with pytest.raises(UserError, match="density: low and high must lie in"):
        recipe(tmp_path, density={"low": 0.0, "high": 1.0})
    with pytest.raises(UserError, match=r"adapters: .*at least 2"):
        recipe(tmp_path, adapters=[{"path": "a"}])
    widened = recipe(tmp_path, weights={"high": 2.0})        # the other keys keep their defaults
    assert (widened.weights.low, widened.weights.high, widened.weights.step) == (0.0, 2.0, 0.05)


def _requests(prompts: list[str]) -> list[Request]:
    return [Request("qa", i, f"id{i}", p, f"hash-{p}", ["x"]) for i, p in enumerate(prompts)]


def test_rows_are_drawn_by_whole_prompts_seeded_and_disjoint():
    requests = _requests(["a", "b", "a", "c", "d", "e", "b", "f"])
    search, report = _draw(requests, 3, seed=0, task="qa")
    assert {r.row for r in search}.isdisjoint(r.row for r in report)
    assert len(search) + len(report) == len(requests)
    assert {r.prompt for r in search}.isdisjoint(r.prompt for r in report)     # a prompt on one side only
    assert len(search) >= 3
    again, _ = _draw(requests, 3, seed=0, task="qa")
    assert [r.row for r in again] == [r.row for r in search]
    other = {tuple(r.row for r in _draw(requests, 3, seed=s, task="qa")[0]) for s in range(8)}
    assert len(other) > 1                                                      # the seed matters


def test_study_asks_the_reference_merges_first_and_reasks_a_killed_trial(tmp_path):
    config = recipe(tmp_path, methods=["linear", "ties"], budget=8)
    folder = tmp_path / "search"
    folder.mkdir()
    study = optimiser.open_study(folder, config, TASKS)
    first, second = study.ask(), study.ask()
    assert optimiser.suggest(first, config, TASKS) == Candidate("linear", (1.0, 1.0, 1.0))
    assert optimiser.suggest(second, config, TASKS) == Candidate("linear", (0.5, 0.5, 0.5))
    study.tell(first, 0.4)
    study.tell(second, 0.5)
    third = study.ask()
    candidate = optimiser.suggest(third, config, TASKS)
    assert all(0.0 <= w <= 1.5 and abs(round(w / 0.05) * 0.05 - w) < 1e-9 for w in candidate.weights)
    if candidate.method == "ties":
        assert 0.1 <= candidate.density <= 1.0
    # The process dies while scoring the third trial: the journal holds it as RUNNING.
    reopened = optimiser.open_study(folder, config, TASKS)
    assert optimiser.requeue_unfinished(reopened) == 1
    assert optimiser.suggest(reopened.ask(), config, TASKS) == candidate
    assert len(optimiser.completed(reopened)) == 2


def test_grid_sampler_walks_the_grid(tmp_path):
    config = recipe(tmp_path, sampler="grid", grid=[0.0, 1.0], budget=8)
    folder = tmp_path / "search"
    folder.mkdir()
    study = optimiser.open_study(folder, config, TASKS)
    assert optimiser.budget(config, TASKS) == 8
    assert optimiser.budget(recipe(tmp_path, sampler="grid", grid=[0.0, 1.0], budget=3), TASKS) == 3
    seen = set()
    for _ in range(8):
        trial = study.ask()
        seen.add(optimiser.suggest(trial, config, TASKS).weights)
        optimiser.tell(study, trial, 0.0)           # the last one walks the grid: Optuna stops the study
    assert len(seen) == 8 and all(set(w) <= {0.0, 1.0} for w in seen)
    assert len(optimiser.completed(study)) == 8


def test_ledger_reuses_its_own_lines_and_cuts_a_torn_one(tmp_path):
    ledger = Ledger(tmp_path, "id-1")
    ledger.add({"rows": "search", "key": "base", "metrics": {"qa": {"exact_match": 0.1}}, "per_row": {}})
    ledger.add({"rows": "search", "key": "linear[1,1]", "metrics": {"qa": {"exact_match": 0.5}}, "per_row": {}})
    Ledger(tmp_path, "id-2").add({"rows": "search", "key": "base", "metrics": {}})     # another search's line
    good = (tmp_path / "scores.jsonl").read_bytes()
    with open(tmp_path / "scores.jsonl", "ab") as handle:
        handle.write(b'{"identity": "id-1", "rows": "search", "key": "linear[0.5')          # killed mid-write
    again = Ledger(tmp_path, "id-1")
    assert again.get("search", "linear[1,1]")["metrics"]["qa"]["exact_match"] == 0.5
    assert again.get("report", "base") is None and again.foreign == 1
    assert (tmp_path / "scores.jsonl").read_bytes() == good
    again.add({"rows": "report", "key": "base", "metrics": {}, "per_row": {}})
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["base", "linear[1,1]", "base", "base"]


def _scores(tmp_path, count: int) -> bytes:
    ledger = Ledger(tmp_path, "id-1")
    for i in range(count):
        ledger.add({"rows": "search", "key": f"linear[{i}]", "candidate": None, "metrics": {"qa": {"em": i}},
                    "per_row": {}})
    return (tmp_path / "scores.jsonl").read_bytes()


@pytest.mark.parametrize("bad, what", [(b"{garbagexxxx\n", "not a JSON object"),
                                       (b'{"key": "\xff\xfe"}\n', "not UTF-8"),
                                       (b"[1, 2]\n", "not a JSON object"),
                                       (b'{"identity": "id-1", "rows": "search"}\n', "without a valid 'key'")])
def test_ledger_refuses_a_damaged_line_in_the_middle_and_keeps_every_score(tmp_path, bad, what):
    lines = _scores(tmp_path, 8).splitlines(keepends=True)
    damaged = b"".join(lines[:5]) + bad + b"".join(lines[5:])
    (tmp_path / "scores.jsonl").write_bytes(damaged)
    with pytest.raises(UserError, match=rf"scores\.jsonl:6: .*{what}.*delete or fix that line"):
        Ledger(tmp_path, "id-1")
    assert (tmp_path / "scores.jsonl").read_bytes() == damaged         # not one score cut
    (tmp_path / "scores.jsonl").write_bytes(b"".join(lines[:5]) + b"".join(lines[5:]))   # the line deleted
    assert len(Ledger(tmp_path, "id-1").entries) == 8


def test_ledger_that_is_a_folder_is_one_error(tmp_path):
    (tmp_path / "scores.jsonl").mkdir()
    with pytest.raises(UserError, match=r"scores\.jsonl: not a file"):
        Ledger(tmp_path, "id-1")


def _told(folder, config, count: int):
    study = optimiser.open_study(folder, config, TASKS)
    for _ in range(count):
        trial = study.ask()
        trial.set_user_attr("candidate", optimiser.suggest(trial, config, TASKS).label())
        study.tell(trial, 0.5)
    return study


def test_a_damaged_journal_is_one_error_naming_it(tmp_path):
    config = recipe(tmp_path, budget=8)
    folder = tmp_path / "search"
    folder.mkdir()
    _told(folder, config, 3)
    journal = folder / optimiser.JOURNAL
    data = journal.read_bytes()
    journal.write_bytes(data[:len(data) // 2] + b"garbage{{{\n" + data[len(data) // 2:])
    with pytest.raises(UserError, match=r"optuna\.journal:\d+: not a line Optuna wrote.*delete .*--force"):
        optimiser.open_study(folder, config, TASKS)
    journal.write_bytes(data + b'{"op_code": 99}\n')     # valid JSON, an operation Optuna does not know (probe SJ2)
    last = data.count(b"\n") + 1
    with pytest.raises(UserError, match=rf"optuna\.journal:{last}: op_code 99 is no operation Optuna knows.*delete "):
        optimiser.open_study(folder, config, TASKS)
    journal.write_bytes(data + b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "torn-mid-wr')     # killed mid-write
    assert len(optimiser.completed(optimiser.open_study(folder, config, TASKS))) == 3
    after = journal.read_bytes()
    assert after.startswith(data) and b"torn-mid-wr" not in after                           # the torn line cut


def test_completed_trials_without_a_score_are_found_to_score_again(tmp_path):
    config = recipe(tmp_path, methods=["linear", "ties"], budget=8)
    folder = tmp_path / "search"
    folder.mkdir()
    study = _told(folder, config, 4)
    labels = [t.user_attrs["candidate"] for t in optimiser.completed(study)]
    ledger = Ledger(folder, "id-1")
    for label in labels[:2]:
        ledger.add({"rows": "search", "key": label, "candidate": None, "metrics": {}, "per_row": {}})
    lost = optimiser.unscored(study, ledger, config, TASKS)
    assert [c.label() for c in lost] == labels[2:]


@pytest.mark.parametrize("extra, message", [
    ({"weights": {"low": 0, "high": float("inf")}}, r"weights\.high: .*finite"),
    ({"sampler": "grid", "grid": [float("nan"), 1.0]}, r"grid\.0: .*finite"),
    ({"density": {"step": float("nan")}}, r"density\.step: .*finite"),
    ({"budget": True}, r"budget: .*integer"),
    ({"round_size": True}, r"round_size: .*integer"),
    ({"weights": {"low": 0, "high": 0.5, "step": 10}}, r"weights: step \(10.0\) is larger than the range"),
    ({"sampler": "grid", "grid": [1.0, 1.0]}, r"grid: 1.0 is given twice"),
])
def test_recipe_refuses_values_that_would_fail_or_mislead_mid_search(tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        recipe(tmp_path, **extra)


def test_a_search_set_for_a_task_the_search_does_not_have_is_refused(tmp_path):
    from lf_wrap.search.splits import split_rows

    config = recipe(tmp_path, rows={"search_datasets": {"task_zzz": "other"}})
    with pytest.raises(UserError, match=r"rows\.search_datasets\.task_zzz: not a task of this search \(tasks: "
                                        r"translate, summarize, qa\)"):
        split_rows(config, None, TASKS, None)        # refused before any dataset is read


@pytest.mark.parametrize("name", ["SEARCH.YAML", "search.yml.txt"])
def test_a_recipe_with_an_unusual_name_is_read_as_a_recipe(tmp_path, name):
    from click.testing import CliRunner

    from lf_wrap.cli import cli

    path = tmp_path / name
    path.write_text("eval: eval.yaml\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["merge", "search", str(path), "--check"])
    assert result.exit_code == 2
    assert f"{name}: adapters: required" in result.output and "--eval" not in result.output      # read as a recipe


# A search shared by several workers (lf_wrap.search.workers): the parts that need no engine.
# Another worker is played here by a child process holding the same locks (flock is per process).

def _hold_in_child(*paths):
    """A child process holding an exclusive flock on each path until it is killed (a worker)."""
    import subprocess
    import sys
    import time

    code = ("import fcntl, os, sys, time\n"
            "fds = [os.open(p, os.O_RDWR | os.O_CREAT) for p in sys.argv[1:]]\n"
            "[fcntl.flock(fd, fcntl.LOCK_EX) for fd in fds]\n"
            "print('held', flush=True)\ntime.sleep(600)\n")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", code, *map(str, paths)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    time.sleep(0.05)
    return child


def test_shared_folder_lock_admits_workers_and_refuses_a_single_run(tmp_path):
    from lf_wrap.core.locks import folder_lock

    out = tmp_path / "search"
    with folder_lock(out, option="out", shared=True):
        import subprocess
        import sys

        probe = ("import sys\nfrom lf_wrap.core.locks import folder_lock\nfrom lf_wrap.core.errors import UserError\n"
                 "try:\n    with folder_lock(sys.argv[1], option='out', shared=sys.argv[2] == 'shared'):\n"
                 "        print('joined')\nexcept UserError as err:\n    print(err)\n")
        joined = subprocess.run([sys.executable, "-c", probe, str(out), "shared"], capture_output=True, text=True)
        single = subprocess.run([sys.executable, "-c", probe, str(out), "single"], capture_output=True, text=True)
    assert joined.stdout.strip() == "joined", joined.stderr
    assert "is being written by another lf-wrap run (pid" in single.stdout, single.stderr
    with folder_lock(out, option="out"):                  # every worker gone: a single run takes it
        worker = subprocess.run([sys.executable, "-c", probe, str(out), "shared"], capture_output=True, text=True)
    assert "is being written by another lf-wrap run (pid" in worker.stdout, worker.stderr   # and refuses a worker


def test_ledger_of_several_workers_refreshes_and_claims(tmp_path):
    mine, theirs = Ledger(tmp_path, "id-1", worker="w1"), Ledger(tmp_path, "id-1", worker="w2")
    theirs.add({"rows": "search", "key": "base", "candidate": None, "metrics": {}, "per_row": {}})
    assert mine.get("search", "base") is None and mine.refresh() == 1
    assert mine.get("search", "base")["worker"] == "w2"
    with (tmp_path / "scores.jsonl").open("ab") as handle:
        handle.write(b'{"identity": "id-1", "rows": "sea')                 # another worker mid-write
    assert mine.refresh() == 0                                            # a line is read once it is whole
    with mine.claim("search", ["a", "b"]) as held:
        assert held == ["a", "b"]
        child = _hold_in_child(mine._claim_file("search", "c"))           # another worker scores "c"
        try:
            with theirs.claim("search", ["a", "c", "d"]) as other:
                assert other == ["d"]                                     # "a" is this one's, "c" the child's
        finally:
            child.kill()
            child.wait()
    with theirs.claim("search", ["a", "c"]) as other:                     # released, or its holder died
        assert other == ["a", "c"]
    single = Ledger(tmp_path / "single", "id-1")
    with single.claim("search", ["a"]) as held:
        assert held == ["a"] and not (tmp_path / "single" / "workers").exists()


def test_ledger_append_cuts_a_dead_workers_torn_line_under_its_lock(tmp_path):
    ledger = Ledger(tmp_path, "id-1", worker="w1")
    ledger.add({"rows": "search", "key": "base", "candidate": None, "metrics": {}, "per_row": {}})
    with (tmp_path / "scores.jsonl").open("ab") as handle:
        handle.write(b'{"identity": "id-1", "rows": "search", "key": "tor')     # a worker killed mid-line
    ledger.add({"rows": "search", "key": "next", "candidate": None, "metrics": {}, "per_row": {}})
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["base", "next"]
    again = Ledger(tmp_path, "id-1")
    assert set(again.entries) == {("search", "base"), ("search", "next")}


def test_workers_ask_within_the_budget_and_retry_only_a_dead_workers_trials(tmp_path):
    from lf_wrap.search.workers import Crew

    config = recipe(tmp_path, budget=4, workers="shared")
    folder = tmp_path / "search"
    folder.mkdir()
    study = optimiser.open_study(folder, config, TASKS)
    me, live, dead = Crew(folder), Crew(folder), Crew(folder)
    me.register()
    child = _hold_in_child(folder / "workers" / "alive" / live.id)       # a live worker in another process
    try:
        live_trial = live.ask(study, 1, 4)[0]
        dead_trial = dead.ask(study, 1, 4)[0]                               # its process is gone: nothing held
        dead_params = optimiser.suggest(dead_trial, config, TASKS)
        optimiser.suggest(live_trial, config, TASKS)
        assert me.alive(me.id) and me.alive(live.id) and not me.alive(dead.id) and not me.alive(None)
        got = me.ask(study, 4, 4)                                           # the budget: 4 asked in all
        assert len(got) == 3 and {t.user_attrs["worker"] for t in got} == {me.id}
        assert optimiser.suggest(got[0], config, TASKS) == dead_params      # the dead worker's candidate, again
        states = {t.number: t.state.name for t in study.get_trials()}
        assert states[live_trial.number] == "RUNNING" and states[dead_trial.number] == "FAIL"
        assert me.ask(study, 4, 4) == []                                    # nothing left to ask
    finally:
        child.kill()
        child.wait()
    assert me.requeue(study) == 1                                           # the live worker died after all
    me._stack.close()


def test_storage_is_an_rdb_url_and_its_password_is_never_shown(tmp_path):
    with pytest.raises(UserError, match="storage: .*not an RDB URL"):
        recipe(tmp_path, storage=str(tmp_path / "optuna.journal"))
    config = recipe(tmp_path, budget=4, storage=f"sqlite:///{tmp_path / 'studies.db'}")
    name = optimiser.study_name(config, "ident", {"methods": ["linear"]})
    assert name.startswith("merge-search-") and name != optimiser.study_name(config, "other", {})
    study = optimiser.open_study(tmp_path, config, TASKS, name)
    assert len(study.get_trials()) == 2 and not (tmp_path / optimiser.JOURNAL).exists()   # the references
    assert len(optimiser.open_study(tmp_path, config, TASKS, name).get_trials()) == 2      # found, not enqueued again
    assert optimiser.redacted("postgresql://me:secret@db.example/search") == "postgresql://me:***@db.example/search"
