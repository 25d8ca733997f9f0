"""Exact pruning's arithmetic (lf_wrap.search.pruning), no model, no engine: the running bound
is never below the value a candidate ends with and equals it once every row is scored, for each
rank_by; the pruner prunes only below the top held; the recipe refuses prune where it is not
exact; a ledger keeps partial lines apart and an old ledger still loads. The searches with and
without pruning run in tests/test_search.py."""

from __future__ import annotations

import json
import random

import pytest

from lf_wrap.core.errors import UserError
from lf_wrap.search.ledger import Ledger
from lf_wrap.search.objective import Judge, reference
from lf_wrap.search.recipe import direct_recipe
from lf_wrap.tasks import TASKS

NAMES = ("a", "b", "c")
ROWS = 12


def _rows(values):
    return [{"rouge1": v} for v in values]


def _judge(rank_by: str, seed: int = 0) -> Judge:
    rng = random.Random(seed)
    base = {t: _rows([rng.uniform(0, 0.4) for _ in range(ROWS)]) for t in NAMES}
    own = {t: _rows([rng.uniform(0.5, 1.0) for _ in range(ROWS)]) for t in NAMES}
    mean = lambda rows: sum(r["rouge1"] for r in rows) / len(rows)          # noqa: E731
    ref = reference({t: mean(base[t]) for t in NAMES}, {t: mean(own[t]) for t in NAMES})
    folds = {t: [i % 3 for i in range(ROWS)] for t in NAMES} if rank_by == "worst_fold" else None
    return Judge(ref, {t: TASKS["summarize"] for t in NAMES}, base, own, rank_by=rank_by, folds=folds)


@pytest.mark.parametrize("rank_by", ["point", "lower_bound", "worst_fold"])
def test_the_running_bound_never_falls_below_the_final_value_and_ends_on_it(rank_by):
    from lf_wrap.search.pruning import stages
    from lf_wrap.search.scorer import Part

    for seed in range(20):
        judge = _judge(rank_by, seed)
        rng = random.Random(100 + seed)
        rows = {t: _rows([rng.uniform(0, 1) for _ in range(ROWS)]) for t in NAMES}
        scores = {t: sum(r["rouge1"] for r in rows[t]) / ROWS for t in NAMES}
        final = judge.assess(scores, rows).value

        class Fake:                     # what stages() reads of the search rows
            def __init__(self):
                self.search = [None] * ROWS

        parts = stages(judge, {t: Fake() for t in NAMES})
        assert all(isinstance(p, Part) for p in parts)
        assert len(parts) == (3 * len(NAMES) if rank_by == "worst_fold" else len(NAMES))
        assert all(len(p.rows) == 1 for p in parts)                             # one task a stage
        scored: dict[str, dict] = {}
        bounds = []
        for part in parts:
            for t, indices in part.rows.items():
                scored.setdefault(t, {}).update({i: rows[t][i] for i in indices})
            bounds.append(judge.running_bound(scored))
        assert all(b is not None for b in bounds)
        assert all(round(b, 12) >= round(final, 12) for b in bounds)               # an upper bound all along
        assert bounds == sorted(bounds, reverse=True)                             # that only goes down
        assert bounds[-1] == final                                                # and ends on the value


class _Search:                          # what stages() reads of a task's search rows
    search = [None] * ROWS


def test_stages_go_weakest_part_first_in_stages_of_1_1_2_4_parts():
    from lf_wrap.search.pruning import Stages

    judge = _judge("worst_fold")
    plan = Stages(judge, {t: _Search() for t in NAMES})
    rows = {t: {i: {"rouge1": 1.0 if t != "b" else 0.0} for i in range(ROWS)} for t in NAMES}
    rows["c"].update({i: {"rouge1": 0.0} for i in range(ROWS) if i % 3 == 2})        # fold 2 of c: weak too
    plan.learn({"per_row": {t: {"row_scores": [rows[t][i] for i in range(ROWS)]} for t in NAMES}})
    stages = plan.order()
    assert [len(s.name.split(", ")) for s in stages] == [1, 1, 2, 4, 1]               # 9 parts: 3 folds x 3 tasks
    assert {stages[0].name, stages[1].name} <= {"fold 0 of b", "fold 1 of b", "fold 2 of b", "fold 2 of c"}
    covered = [(t, i) for s in stages for t, indices in s.rows.items() for i in indices]
    assert sorted(covered) == sorted((t, i) for t in NAMES for i in range(ROWS))        # every row, once


def test_a_candidate_goes_first_where_its_nearest_scored_neighbour_was_weakest():
    from lf_wrap.search.candidates import Candidate
    from lf_wrap.search.pruning import Stages
    from lf_wrap.search.scorer import as_dict

    judge = _judge("worst_fold")
    plan = Stages(judge, {t: _Search() for t in NAMES})

    def entry(candidate, like_base):     # the specialist's rows, or the base's on the tasks named
        rows = {t: judge.base_rows[t] if t in like_base else judge.specialist_rows[t] for t in NAMES}
        return {"candidate": as_dict(candidate), "per_row": {t: {"row_scores": rows[t]} for t in NAMES}}

    plan.learn(entry(Candidate("linear", (1.0, 1.0, 0.0)), like_base="c"))       # loses c
    plan.learn(entry(Candidate("linear", (0.0, 1.0, 1.0)), like_base="a"))       # loses a
    assert plan.order(Candidate("linear", (0.9, 0.8, 0.1)))[0].name.endswith(" of c")
    assert plan.order(Candidate("linear", (0.1, 0.9, 0.9)))[0].name.endswith(" of a")
    other = plan.order(Candidate("ties", (0.1, 0.9, 0.9), density=0.5))      # no ties scored: on average
    assert other[0].name == plan.order()[0].name


def test_no_bound_before_a_part_is_whole():
    judge = _judge("worst_fold")
    assert judge.running_bound({"a": {0: {"rouge1": 1.0}}}) is None         # fold 0 of a has rows 0, 3, 6, 9
    assert _judge("point").running_bound({"a": {i: {"rouge1": 1.0} for i in range(ROWS - 1)}}) is None
    mean = Judge(judge.ref, judge.definitions, judge.base_rows, judge.specialist_rows, objective="mean")
    with pytest.raises(ValueError, match="objective worst only"):
        mean.running_bound({})


def test_the_pruner_prunes_below_the_top_held_only(tmp_path):
    import optuna

    from lf_wrap.search.pruning import HeldPruner

    study = optuna.create_study(direction="maximize", pruner=HeldPruner(2))
    for label, value in (("x", 0.5), ("y", 0.3), ("x again", 0.5)):
        trial = study.ask()
        trial.set_user_attr("candidate", label.split()[0])
        study.tell(trial, value)
    trial = study.ask()
    trial.report(0.35, 0)
    assert trial.should_prune() is False       # x counts once: the top 2 are x 0.5 and y 0.3
    trial = study.ask()
    trial.set_user_attr("candidate", "z")
    study.tell(trial, 0.4)                     # the top 2: x 0.5, z 0.4
    for bound, pruned in ((0.45, False), (0.4, False), (0.4 - 1e-15, False), (0.39, True)):
        trial = study.ask()
        trial.report(bound, 0)
        assert trial.should_prune() is pruned, bound
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[-1].value == 0.39      # Optuna keeps a pruned trial's last bound as its value


def _recipe(tmp_path, **extra):
    data = {"eval": "recipes/eval.yaml", "adapters": [{"path": f"a{i}", "task": t} for i, t in enumerate(NAMES)],
            "out": str(tmp_path / "search")}
    return direct_recipe({**data, **extra})


def test_prune_defaults_to_where_it_is_exact_and_is_refused_elsewhere(tmp_path):
    assert _recipe(tmp_path).pruning is True
    assert _recipe(tmp_path, prune=False).pruning is False
    for objective in ("mean", "pareto"):
        assert _recipe(tmp_path, objective=objective).pruning is False
        with pytest.raises(UserError, match=f"prune: true needs objective worst; with objective {objective}"):
            _recipe(tmp_path, objective=objective, prune=True)


def test_a_partial_line_never_hides_a_whole_one_and_old_lines_load(tmp_path):
    old = {"identity": "i", "rows": "search", "key": "k", "candidate": None, "metrics": {"a": {"rouge1": 0.5}},
           "per_row": {"a": {"row_scores": [{"rouge1": 0.5}]}}, "seconds": 1.0}      # a line from before pruning
    part = {**old, "key": "p", "partial": True, "parts": ["task a"], "metrics": {},
            "per_row": {"a": {"rows": [0], "row_scores": [{"rouge1": 0.5}]}}}
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(e) + "\n" for e in (old, part)), encoding="utf-8")
    ledger = Ledger(tmp_path, "i")
    assert ledger.get("search", "k") == old and ledger.partial("search", "k") is None
    assert ledger.get("search", "p") is None and ledger.partial("search", "p")["parts"] == ["task a"]
    whole = {k: v for k, v in part.items() if k != "partial"}
    ledger.add(whole)
    ledger.add({**part, "parts": ["late"]})          # a partial line after the whole one changes nothing
    again = Ledger(tmp_path, "i")
    assert again.get("search", "p")["parts"] == ["task a"] and again.partial("search", "p") is None


def test_a_grid_trial_killed_before_its_parameters_were_suggested_is_asked_again_whole(tmp_path):
    """A run killed between asking a round and suggesting it leaves trials without parameters; the
    grid sampler refuses to ask such a trial again, so its grid point is asked again whole."""
    from lf_wrap.search import optimiser

    config = _recipe(tmp_path, methods=["linear"], sampler="grid", grid=[0.0, 1.0], budget=8)
    study = optimiser.open_study(tmp_path, config, list(NAMES))
    asked = study.ask()                                # killed here: no parameter suggested
    point = dict(zip(study.sampler._param_names, study.sampler._all_grids[asked.number]))
    assert optimiser.requeue_unfinished(study) == 1
    again = study.ask()
    assert optimiser.suggest(again, config, list(NAMES)).weights == tuple(point[f"weight.{t}"] for t in NAMES)


def test_a_grid_trial_killed_inside_ask_is_not_asked_again_empty(tmp_path):
    """A run killed inside `ask` (the trial made, no grid point given yet: the moment right after
    a round's progress line) left a trial the rerun enqueued with no parameters, and the grid
    sampler then refused it: "All parameters must be specified when using GridSampler with
    enqueue_trial". Now it is failed and nothing is enqueued; every grid point is still asked."""
    from lf_wrap.search import optimiser

    config = _recipe(tmp_path, methods=["linear"], sampler="grid", grid=[0.0, 1.0], budget=8)
    study = optimiser.open_study(tmp_path, config, list(NAMES))
    study._storage.create_new_trial(study._study_id)        # what ask() does before the sampler
    assert optimiser.requeue_unfinished(study) == 1
    points = {optimiser.suggest(study.ask(), config, list(NAMES)).weights for _ in range(2 ** len(NAMES))}
    assert len(points) == 2 ** len(NAMES)


def test_seeds_are_integers_each_given_once(tmp_path):
    assert _recipe(tmp_path, seeds=[0, 7]).seeds == [0, 7]
    for seeds, message in (([0, 1.5], "seeds.1: Input should be a valid integer"),
                           (["a"], "seeds.0: Input should be a valid integer"),
                           ([1, 1], "seeds: [1, 1] names a seed twice"), ([], "seeds: List should have at least 1")):
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
            _recipe(tmp_path, seeds=seeds)
