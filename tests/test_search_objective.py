"""The search's objective (retained gain, worst task, ties) and candidate generation, on
numbers worked out by hand. No model, no engine."""

from __future__ import annotations


import pytest

from lf_wrap.search.candidates import Candidate, sample
from lf_wrap.scoring.bootstrap import Bootstrap
from lf_wrap.search.objective import Judge, rank_key, reference, retained_gain, retained_gains
from lf_wrap.tasks import TASKS, resolve_task

BASE = {"translate": 0.20, "summarize": 0.30, "qa": 0.70}
SPECIALIST = {"translate": 0.25, "summarize": 0.40, "qa": 0.80}
MINE = resolve_task("mine", "exact_match")       # a task of your own, scored by plain exact match


def test_retained_gain_by_hand():
    ref = reference(BASE, SPECIALIST)
    gains = retained_gains(ref, {"translate": 0.24, "summarize": 0.33, "qa": 0.78})
    # (0.24-0.20)/(0.25-0.20) = 0.8; (0.33-0.30)/(0.40-0.30) = 0.3; (0.78-0.70)/(0.80-0.70) = 0.8
    assert gains.per_task == pytest.approx({"translate": 0.8, "summarize": 0.3, "qa": 0.8})
    assert gains.worst == pytest.approx(0.3) and gains.mean == pytest.approx(1.9 / 3)
    # as good as the specialist everywhere: 1; as the base: 0; worse than the base: negative
    assert retained_gains(ref, SPECIALIST).worst == pytest.approx(1.0)
    assert retained_gains(ref, BASE).mean == pytest.approx(0.0)
    assert retained_gains(ref, {**SPECIALIST, "qa": 0.65}).worst == pytest.approx(-0.5)


def test_the_studys_three_in_one():
    """SPEC §4: BLEU 0.1964 -> 0.2095 (specialist) / 0.2047 (3-in-1); ROUGE-1 0.2967 -> 0.3759 / 0.3117."""
    ref = reference({"translate": 0.1964, "summarize": 0.2967}, {"translate": 0.2095, "summarize": 0.3759})
    gains = retained_gains(ref, {"translate": 0.2047, "summarize": 0.3117})
    assert gains.per_task["translate"] == pytest.approx(0.0083 / 0.0131)     # 0.634
    assert gains.per_task["summarize"] == pytest.approx(0.0150 / 0.0792)     # 0.189: most of the gain lost
    assert gains.worst == gains.per_task["summarize"]


def test_worst_task_first_then_mean_then_simpler():
    ref = reference(BASE, SPECIALIST)
    scored = {
        "uneven": (Candidate("linear", (1.0, 0.5, 1.0)), {"translate": 0.24, "summarize": 0.33, "qa": 0.78}),  # 0.8 .3 .8
        "even": (Candidate("ties", (1.0, 1.0, 1.0), density=0.5), {"translate": 0.22, "summarize": 0.34,
                                                                   "qa": 0.74}),                      # .4 .4 .4
        "better_mean": (Candidate("ties", (1.0, 0.7, 1.0), density=0.5), {"translate": 0.23, "summarize": 0.34,
                                                                          "qa": 0.80}),               # .6 .4 1
        "same_as_better_mean_simpler": (Candidate("linear", (0.9, 0.9, 0.9)), {"translate": 0.23,
                                                                               "summarize": 0.34, "qa": 0.80}),
    }
    order = sorted(scored, key=lambda k: rank_key(retained_gains(ref, scored[k][1]), scored[k][0].complexity()))
    assert order == ["same_as_better_mean_simpler", "better_mean", "even", "uneven"]


def test_float_noise_is_a_tie():
    ref = reference(BASE, SPECIALIST)
    # g = 0.4 on every task, computed three ways: 0.3999999999999999, 0.40000000000000024, 0.4
    a = retained_gains(ref, {"translate": 0.22, "summarize": 0.34, "qa": 0.74})
    assert len(set(a.per_task.values())) == 3                        # the noise is real
    b = retained_gains(ref, {"translate": 0.22, "summarize": 0.34, "qa": 0.74 + 1e-15})
    simple, involved = Candidate("linear", (1.0, 1.0, 1.0)), Candidate("ties", (1.0, 1.0, 1.0), density=0.5)
    assert rank_key(b, simple.complexity()) < rank_key(a, involved.complexity())
    assert rank_key(a, simple.complexity()) < rank_key(b, involved.complexity())


def test_a_task_without_gain_is_left_out_with_a_message(lf_log):
    ref = reference(BASE, {**SPECIALIST, "qa": 0.70})
    assert ref.tasks == ("translate", "summarize") and set(ref.left_out) == {"qa"}
    assert "qa: the specialist scores 0.7, the base 0.7; no gain to keep" in lf_log.text
    gains = retained_gains(ref, {"translate": 0.25, "summarize": 0.35, "qa": 0.10})   # qa does not count
    assert gains.worst == pytest.approx(0.5) and set(gains.per_task) == {"translate", "summarize"}
    with pytest.raises(ValueError, match="no specialist beats the base"):
        reference(BASE, {"translate": 0.2, "summarize": 0.1, "qa": 0.7})
    with pytest.raises(ValueError, match="only one of"):
        reference(BASE, {"translate": 0.3})
    with pytest.raises(ValueError, match="not scored on summarize"):
        retained_gains(ref, {"translate": 0.3})


def test_complexity():
    assert Candidate("linear", (1, 1, 1)).complexity() < Candidate("linear", (1, 0.5, 1)).complexity()
    assert Candidate("linear", (1, 0.5, 0.2)).complexity() < Candidate("ties", (1, 1, 1), 0.9).complexity()
    assert Candidate("ties", (1, 1, 1), 0.9).complexity() < Candidate("ties", (1, 1, 1), 0.5).complexity()
    assert Candidate("ties", (1, 0.5), 0.1).complexity() < Candidate("dare_ties", (1, 1), 0.9, 0).complexity()


def test_sample_is_reproducible_and_rounded():
    a, b = sample(3, 10, seed=7), sample(3, 10, seed=7)
    assert a == b and len(set(a)) == 10 and a != sample(3, 10, seed=8)
    assert all(0 <= w <= 1.5 and abs(w / 0.05 - round(w / 0.05)) < 1e-9 for c in a for w in c.weights)
    mixed = sample(2, 20, seed=0, methods=("ties", "dare_ties"), densities=(0.4,))
    assert {c.density for c in mixed} == {0.4} and all((c.seed is None) == (c.method == "ties") for c in mixed)



def test_lower_bound_prefers_the_gain_that_holds_on_every_resample():
    """One task, ROUGE-1 per row: base 0, specialist 1 on every row. A merge keeping 0.5 on every
    row has no spread (bound = point); one keeping all of 6 rows and none of 4 has the higher point
    (0.6) but its 10% bootstrap bound lies below 0.5: ranked by the bound it comes second."""
    rows = lambda values: [{"rouge1": v} for v in values]          # noqa: E731
    ref = reference({"summarize": 0.0}, {"summarize": 1.0})
    judge = Judge(ref, {"summarize": TASKS["summarize"]}, {"summarize": rows([0.0] * 10)}, {"summarize": rows([1.0] * 10)})
    steady = judge.assess({"summarize": 0.5}, {"summarize": rows([0.5] * 10)})
    lucky = judge.assess({"summarize": 0.6}, {"summarize": rows([1.0] * 6 + [0.0] * 4)})
    assert steady.bound == pytest.approx(0.5) and steady.value == steady.bound
    assert lucky.gains.worst == pytest.approx(0.6) and 0.2 < lucky.bound < 0.5
    linear = Candidate("linear", (0.5,)).complexity()
    assert rank_key(steady.gains, linear, steady.value) < rank_key(lucky.gains, linear, lucky.value)
    by_point = Judge(ref, judge.definitions, judge.base_rows, judge.specialist_rows, rank_by="point")
    assert by_point.assess({"summarize": 0.6}, {"summarize": rows([1.0] * 6 + [0.0] * 4)}).value == pytest.approx(0.6)


def test_retained_gain_and_its_interval_by_hand():
    """Base scores 0 on every row, the specialist 1 on every row, a candidate 1 on half the rows:
    it keeps half the gain. Every resample keeps the specialist's full gain, so the interval is
    the candidate's own resampling spread around 0.5, and a candidate equal to the specialist
    keeps exactly 1 on every resample."""
    n = 40
    base = [{"exact_match": 0.0} for _ in range(n)]
    spec = [{"exact_match": 1.0} for _ in range(n)]
    half = [{"exact_match": float(i % 2)} for i in range(n)]
    result = retained_gain(MINE, base, spec, half, Bootstrap(400, 3))
    assert result["value"] == 0.5 and result["resamples_used"] == 400
    low, high = result["ci95"]
    assert low < 0.5 < high and 0.25 < low and high < 0.75
    same = retained_gain(MINE, base, spec, spec, Bootstrap(400, 3))
    assert same["value"] == 1.0 and same["ci95"] == [1.0, 1.0]
    no_gain = retained_gain(MINE, base, base, half, Bootstrap(400, 3))
    assert no_gain["value"] is None and no_gain["ci95"] is None and no_gain["resamples_used"] == 0
    with pytest.raises(ValueError, match="same rows"):
        retained_gain(MINE, base, spec, half[:-1])
