"""Folds of the search rows, the held column's arithmetic and the Pareto front, on numbers worked
out by hand (no model, no engine); the searches themselves run in tests/test_search.py."""

from __future__ import annotations

import pytest

from lf_wrap.core.errors import UserError
from lf_wrap.evaluation.requests import Request
from lf_wrap.search.candidates import Candidate
from lf_wrap.search.folder import search_space
from lf_wrap.search.report.held import held_rows, sentence
from lf_wrap.search.objective import Judge, rank_key, reference
from lf_wrap.search.report.pareto import mark_front
from lf_wrap.search.recipe import direct_recipe
from lf_wrap.search.splits import deal_folds
from lf_wrap.tasks import TASKS

ROWS = 40


def _rows(values):
    return [{"rouge1": v} for v in values]


def _judge(rank_by: str) -> Judge:
    """One task, base 0 and specialist 1 on every row; folds: the first 20 rows and the last 20."""
    ref = reference({"summarize": 0.0}, {"summarize": 1.0})
    return Judge(ref, {"summarize": TASKS["summarize"]}, {"summarize": _rows([0.0] * ROWS)},
                 {"summarize": _rows([1.0] * ROWS)}, rank_by=rank_by, folds={"summarize": [0] * 20 + [1] * 20})


def test_a_merge_that_wins_on_one_fold_only_loses_to_one_that_holds_on_every_fold():
    """lucky keeps 70% on fold 0 and 50% on fold 1 (60% on all rows); steady keeps 55% everywhere.
    Resampling 40 rows barely moves lucky's 60% (its 10% lower bound stays above 55%), so ranked by
    the lower bound it wins; its worst fold (50%) is below steady's (55%), so by folds it loses."""
    lucky = {"summarize": _rows([0.7] * 20 + [0.5] * 20)}
    steady = {"summarize": _rows([0.55] * ROWS)}
    linear = Candidate("linear", (0.5,)).complexity()
    by_bound, by_fold = _judge("lower_bound"), _judge("worst_fold")
    a, b = by_bound.assess({"summarize": 0.6}, lucky), by_bound.assess({"summarize": 0.55}, steady)
    assert a.bound > 0.55 and rank_key(a.gains, linear, a.value) < rank_key(b.gains, linear, b.value)
    a, b = by_fold.assess({"summarize": 0.6}, lucky), by_fold.assess({"summarize": 0.55}, steady)
    assert a.fold_values == pytest.approx((0.7, 0.5)) and a.value == pytest.approx(0.5)
    assert b.fold_values == pytest.approx((0.55, 0.55)) and b.value == pytest.approx(0.55)
    assert rank_key(b.gains, linear, b.value) < rank_key(a.gains, linear, a.value)
    assert a.per_task() == pytest.approx({"summarize": 0.5})      # each task's worst fold


def test_a_folds_gain_is_its_own_lift_over_the_whole_search_rows_gain():
    """Two tasks; on fold 1 task b's candidate does no better than the base: that fold's worst task is 0."""
    ref = reference({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 0.5})
    folds = {"a": [0, 0, 1, 1], "b": [0, 1, 0, 1]}
    judge = Judge(ref, {"a": TASKS["summarize"], "b": TASKS["summarize"]}, {t: _rows([0.0] * 4) for t in "ab"},
                  {"a": _rows([1.0] * 4), "b": _rows([0.5] * 4)}, rank_by="worst_fold", folds=folds)
    got = judge.assess({"a": 0.5, "b": 0.25}, {"a": _rows([0.5] * 4), "b": _rows([0.5, 0.0, 0.5, 0.0])})
    assert got.folds == (pytest.approx({"a": 0.5, "b": 1.0}), pytest.approx({"a": 0.5, "b": 0.0}))
    assert got.fold_values == pytest.approx((0.5, 0.0)) and got.value == 0.0


def _requests(prompts: list[str]) -> list[Request]:
    return [Request("qa", i, f"id{i}", p, f"hash-{p}", ["x"]) for i, p in enumerate(prompts)]


def test_folds_are_dealt_by_whole_prompts_seeded_and_even():
    search = _requests(["p0", "p1", "p1", "p2", "p3", "p4", "p5", "p6"])
    folds = deal_folds(search, 3, seed=0, task="qa")
    assert folds == deal_folds(search, 3, seed=0, task="qa")              # seeded
    assert folds[1] == folds[2]                                           # one prompt, one fold
    by_prompt = {r.prompt_sha256: f for r, f in zip(search, folds)}
    assert sorted(list(by_prompt.values()).count(f) for f in range(3)) == [2, 2, 3]
    assert any(deal_folds(search, 3, seed=s, task="qa") != folds for s in range(1, 5))
    with pytest.raises(UserError, match=r"rows\.folds: 3 folds of qa's 3 search rows \(2 distinct prompts\)"):
        deal_folds(_requests(["p0", "p0", "p1"]), 3, seed=0, task="qa")


def _recipe(tmp_path, **extra):
    data = {"eval": "recipes/eval.yaml", "adapters": [{"path": "a0", "task": "a"}, {"path": "a1", "task": "b"}],
            "out": str(tmp_path / "search")}
    return direct_recipe({**data, **extra})


@pytest.mark.parametrize("extra, message", [
    ({"rows": {"folds": 1}}, r"rows\.folds: .*greater than or equal to 2"),
    ({"rows": {"search": 4, "folds": 5}}, r"rows\.folds: 5 folds of 4 search rows per task would leave a fold empty"),
    ({"rows": {"folds": True}}, r"rows\.folds: .*integer"),
    ({"uncertainty": {"rank_by": "worst_fold"}}, r"uncertainty\.rank_by: worst_fold needs rows\.folds"),
    ({"objective": "pareto", "sampler": "cmaes"}, r"objective: pareto needs a sampler .*cmaes optimises one"),
])
def test_recipe_refuses_folds_and_objectives_that_cannot_work(tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        _recipe(tmp_path, **extra)


def test_folds_rank_by_their_worst_unless_told_and_leave_the_old_space_as_it_was(tmp_path):
    plain = _recipe(tmp_path)
    assert plain.uncertainty.rank_by == "lower_bound" and plain.rows.folds is None
    assert _recipe(tmp_path, rows={"folds": 5}).uncertainty.rank_by == "worst_fold"
    told = _recipe(tmp_path, rows={"folds": 5}, uncertainty={"rank_by": "point"})
    assert told.uncertainty.rank_by == "point"
    # the folds count is not part of the search space: changing it re-ranks the scores on record
    assert search_space(_recipe(tmp_path, rows={"folds": 3})) == search_space(_recipe(tmp_path, rows={"folds": 5}))
    assert search_space(plain) == search_space(_recipe(tmp_path, rows={"seed": 0}))


def _board(rows: list[tuple[str, float, float, list]]) -> list[dict]:
    return [{"rank": i, "label": label, "role": "candidate", "value": value, "worst": worst, "mean": worst,
             "folds": folds} for i, (label, value, worst, folds) in enumerate(rows, 1)]


def test_held_compares_the_report_rows_with_the_value_a_candidate_was_ranked_by():
    judge = _judge("worst_fold")
    top = _board([("ties", 0.5, 0.62, [0.5, 0.74]), ("linear", 0.45, 0.5, [0.45, 0.55])])
    rows = held_rows(top, [{"summarize": 0.31}, {"summarize": 0.48}], judge)
    assert [r["held"] for r in rows] == [False, True] and [r["report_place"] for r in rows] == [2, 1]
    assert rows[0]["search_folds"] == [0.5, 0.74] and rows[0]["search"] == 0.62
    text = sentence(rows, "ties", judge)
    assert text.startswith("The winner did not hold: `ties` keeps 31.0% (worst task kept) on the report rows, "
                           "below the 50.0% it was ranked by on the search rows (worst task kept, worst of 2 folds)")
    assert "#2 `linear` keeps the most there (48.0%)" in text
    kept = held_rows(top, [{"summarize": 0.55}, {"summarize": 0.48}], judge)
    assert sentence(kept, "ties", judge).startswith("The winner held: `ties` keeps 55.0%")
    assert sentence(kept, "ties", judge).endswith("and it keeps the most of the top 2 there.")
    unknown = held_rows(top[:1], [{"summarize": None}], judge)
    assert unknown[0]["held"] is None and "cannot be said" in sentence(unknown, "ties", judge)


def test_pareto_front_keeps_every_trade_off_and_drops_the_dominated():
    table = [{"label": k, "objectives": dict(zip("ab", v))} for k, v in
             {"even": (0.5, 0.5), "a-heavy": (0.9, 0.2), "b-heavy": (0.1, 0.8), "worse": (0.4, 0.4),
              "twin": (0.5, 0.5), "under a-heavy": (0.9, 0.1)}.items()]
    front = mark_front(table)
    assert [r["label"] for r in front] == ["even", "a-heavy", "b-heavy", "twin"]
