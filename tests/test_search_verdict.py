"""The search's verdict (lf_wrap.search.report.verdict) on report-row scores built by hand: each of the
three verdicts, the one rule that turns a p-value into "beyond" or "within" resampling noise,
and the metric at its floor. No model, no engine; the searches run in tests/test_search.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lf_wrap.scoring.bootstrap import Bootstrap
from lf_wrap.search.report.noise import Noise, described, noise_words
from lf_wrap.search.report.verdict import CONFIRMED, NO_SIGNAL, NOT_CONFIRMED, decide, report_verdict
from lf_wrap.tasks import TASKS

N = 40
NOISE = Noise.of(None, Bootstrap(1000, 12345))
DEFS = {"a": TASKS["summarize"], "b": TASKS["summarize"]}
LABELS = {"best": "ties[1,1] density 0.5", "sum": "linear[1,1]", "linear 0.5": "linear[0.5,0.5]"}


def _rows(values) -> list[dict]:
    return [{"rouge1": float(v)} for v in values]


def _noisy(mean: float, spread: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return _rows(np.clip(mean + spread * rng.standard_normal(N), 0, 1))


def _per_row(best: float, sum_: float, own_b: float = 0.8) -> dict:
    """Base 0.2 on both tasks; specialist a 0.8, b `own_b`; the merges keep `best` / `sum_` of each gain."""
    base = {t: _noisy(0.2, 0.1, i) for i, t in enumerate("ab")}
    own = {"a": _noisy(0.8, 0.1, 2), "b": _noisy(own_b, 0.1, 3) if own_b != 0.2 else _noisy(0.2, 0.1, 30)}
    merge = lambda kept, seed: {t: _noisy(0.2 + kept * 0.6, 0.1, seed + i) for i, t in enumerate("ab")}  # noqa: E731
    return {"base": base, "specialist a": own, "specialist b": own, "best": merge(best, 10), "sum": merge(sum_, 20)}


def _final(held: bool, report: float) -> dict:
    return {"labels": LABELS, "summary": {"best": {"worst": report, "mean": report}, "sum": {"worst": 0.3, "mean": 0.3},
                                          "linear 0.5": {"worst": 0.2, "mean": 0.2}},
            "held": [{"rank": 1, "label": LABELS["best"], "report": report, "ranked_value": 0.5, "held": held}]}


def test_confirmed_when_the_winner_holds_and_beats_the_sum_merge_beyond_noise():
    got = report_verdict(NOISE, DEFS, ["a", "b"], _per_row(best=0.9, sum_=0.3), _final(True, 0.9), mean=False)
    assert got["verdict"] == CONFIRMED and got["versus_sum"]["beyond"] and got["versus_sum"]["difference"] > 0
    assert got["verdict_sentence"].startswith(f"Verdict: confirmed. `{LABELS['best']}` held on the report rows")
    assert "< 0.05: beyond resampling noise" in got["verdict_sentence"]


def test_not_confirmed_when_the_winner_does_not_hold_or_does_not_beat_the_sum_merge():
    failed = report_verdict(NOISE, DEFS, ["a", "b"], _per_row(best=0.9, sum_=0.3), _final(False, 0.4), mean=False)
    assert failed["verdict"] == NOT_CONFIRMED
    text = failed["verdict_sentence"]
    assert text.startswith(f"Verdict: not confirmed. `{LABELS['best']}`, the best on the search rows, did not hold")
    assert "no model is written to best/" in text and "--method sum" in text
    assert "`ties[1,1] density 0.5` (the search's winner) keeps the most (worst task kept 40.0%, the sum" in text
    tie = report_verdict(NOISE, DEFS, ["a", "b"], _per_row(best=0.32, sum_=0.3), _final(True, 0.3), mean=False)
    assert tie["verdict"] == NOT_CONFIRMED and not tie["versus_sum"]["beyond"]
    assert "held on the report rows but does not beat the sum merge there" in tie["verdict_sentence"]
    assert "within resampling noise" in tie["verdict_sentence"]
    assert "On the report rows the sum merge keeps the most (worst task kept 30.0%)" in tie["verdict_sentence"]


def test_no_signal_when_a_specialist_does_not_beat_the_base_beyond_noise():
    rows = _per_row(best=0.9, sum_=0.3, own_b=0.2)        # b's specialist scores like the base
    got = report_verdict(NOISE, DEFS, ["a", "b"], rows, _final(True, 0.9), mean=False)
    assert got["verdict"] == NO_SIGNAL and not got["signal"]["report"]["b"]["gain"]
    assert got["verdict_sentence"].startswith("Verdict: no signal. On the report rows the specialist of b does not "
                                              "beat the base beyond resampling noise")
    others = report_verdict(NOISE, DEFS, ["a", "b"], rows, _final(True, 0.9), mean=False,
                            without_signal="rank_the_others")
    assert others["verdict_tasks"] == ["a"] and others["verdict"] == CONFIRMED
    assert others["notes"] and others["notes"][0].startswith("b: left out of the verdict")


@pytest.mark.parametrize("signal, held, versus, expected", [
    ({"a": {"gain": True}}, True, {"beyond": True, "difference": 0.2}, CONFIRMED),
    ({"a": {"gain": True}}, True, {"beyond": True, "difference": -0.2}, NOT_CONFIRMED),
    ({"a": {"gain": True}}, True, {"beyond": False, "difference": 0.2}, NOT_CONFIRMED),
    ({"a": {"gain": True}}, False, {"beyond": True, "difference": 0.2}, NOT_CONFIRMED),
    ({"a": {"gain": True}}, None, None, NOT_CONFIRMED),
    ({"a": {"gain": True}, "b": {"gain": False}}, True, {"beyond": True, "difference": 0.2}, NO_SIGNAL),
    ({}, True, {"beyond": True, "difference": 0.2}, NO_SIGNAL),
])
def test_the_rule_itself(signal, held, versus, expected):
    assert decide(signal, held, versus) == expected


def test_the_first_real_text_search_sentence_cannot_come_back():
    """hsk, BLEU: best 0.0000 against sum 0.0602 on 50 rows, p = 0.00599 with an interval that touches 0."""
    test = {"metric": "bleu", "a": 0.0602, "b": 0.0, "difference": -0.0602, "interval": [-0.0990, 0.0],
            "p_value": 0.00599, "confidence": 0.95, "level": 0.05}
    test["beyond"] = NOISE.beyond(test)
    text = described(test)
    assert "p = 0.00599 < 0.05: beyond resampling noise" in text and "within" not in text
    edge = {**test, "p_value": 0.04996}
    edge["beyond"] = NOISE.beyond(edge)
    assert "p = 0.04996 < 0.05" in noise_words(edge)             # never printed as "0.05 < 0.05"


def _bleu_rows(rng, n: int, quality: float) -> list[dict]:
    rows = []
    for _ in range(n):
        length = int(rng.integers(4, 12))
        matches = [int(rng.binomial(max(length - k, 0), quality)) for k in range(4)]
        rows.append({"bleu_stats": [length, length, *matches, *(max(length - k, 0) for k in range(4))]})
    return rows


@pytest.mark.parametrize("level", [0.05, 0.01, 0.2])
def test_no_sentence_pairs_a_p_value_below_the_level_with_within_noise(level):
    """Paired tests of BLEU (a corpus metric, often at its floor on short rows) and ROUGE on rows
    drawn at random: the words always follow p against the level, and the interval is at 1 - level."""
    noise = Noise.of(level, Bootstrap(300, 7))
    rng = np.random.default_rng(level.as_integer_ratio()[1])
    for case in range(30):
        n, qa, qb = int(rng.integers(5, 40)), float(rng.uniform(0, 0.4)), float(rng.uniform(0, 0.4))
        for task, a, b in ((TASKS["translate"], _bleu_rows(rng, n, qa), _bleu_rows(rng, n, qb)),
                           (TASKS["summarize"], _rows(rng.uniform(0, qa, n)), _rows(rng.uniform(0, qb, n)))):
            test = noise.paired(task, a, b)
            text = described(test)
            p = float(re.search(r"p = ([0-9.e-]+)", text).group(1))
            assert test["confidence"] == pytest.approx(1 - level) and f"({1 - level:.0%} interval)" in text
            assert ("within resampling noise" in text) == (not p < level), text
            assert ("beyond resampling noise" in text) == (p < level), text


def test_every_noise_sentence_of_lf_wrap_search_comes_from_the_one_rule():
    """The words "within/beyond resampling noise" are written in lf_wrap/search only by noise.py."""
    root = Path(__file__).resolve().parents[1] / "lf_wrap" / "search"
    for path in root.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "noise.py":
            assert "within resampling noise" not in text and "more than resampling noise" not in text, path


def test_the_smallest_confirmable_difference_is_where_the_p_value_crosses_the_level():
    """Noise.smallest: a difference just above it is beyond noise at the spread of the resamples,
    just below is not (the objective's percentile test)."""
    rng = np.random.default_rng(3)
    spread = rng.normal(0.0, 0.05, 1000)
    low = NOISE.smallest(np.zeros(1000), spread)
    assert low is not None and 0 < low < 0.2
    centred = spread - spread.mean()
    for d, below in ((low + 1e-6, True), (low - 1e-3, False)):
        assert (NOISE.percentile_test(centred + d)[1] < NOISE.level) is below


@pytest.mark.parametrize("level", [0.05, 0.01, 0.2])
def test_the_objectives_interval_excludes_zero_exactly_when_p_is_below_the_level(level):
    """The real-text search printed "-21.2% [-47.4%, +24.6%], p = 0.0445 < 0.05": a retained gain is
    a ratio and the worst task a minimum, so its resamples are skewed and sacrebleu's centred
    p-value disagreed with the interval. The objective's test reads both off the same resamples."""
    noise = Noise.of(level, Bootstrap(1000, 7))
    rng = np.random.default_rng(11)
    for case in range(200):
        n = int(rng.choice([40, 100, 999, 1000]))
        deltas = rng.lognormal(0, 1, n) - rng.uniform(0, 3) * rng.standard_exponential()
        interval, p = noise.percentile_test(deltas)
        assert (not interval[0] <= 0 <= interval[1]) == (p < level), (interval, p)


def test_a_corpus_metric_at_its_floor_is_flagged_with_the_suggestion_of_chrf():
    """BLEU with no 4-gram match is exactly 0 (the base here): flagged, with chrF suggested; ROUGE
    is not a corpus metric."""
    from lf_wrap.search.report.noise import floor_note, signal, signal_floor

    rng = np.random.default_rng(5)
    base = [{"bleu_stats": [6, 6, 3, 1, 0, 0, 6, 5, 4, 3]} for _ in range(N)]      # no 3- or 4-gram match
    own = _bleu_rows(rng, N, 0.6)
    tests = signal(NOISE, {"hsk": TASKS["translate"]}, ["hsk"], {"hsk": base}, {"hsk": own})
    assert tests["hsk"]["a"] == 0 and tests["hsk"]["b"] > 0
    floor = signal_floor(tests, {"hsk": TASKS["translate"]})
    assert floor == {"hsk": {"metric": "bleu", "models": ["base"]}}
    (note,) = floor_note({"floor": floor}, "search")
    assert note.startswith("hsk: bleu is exactly 0 for base on the search rows") and "chrF (metric: chrf)" in note
    rouge = signal(NOISE, {"a": TASKS["summarize"]}, ["a"], {"a": _rows([0.0] * N)}, {"a": _rows([0.5] * N)})
    assert signal_floor(rouge, {"a": TASKS["summarize"]}) == {}


def test_a_winner_with_every_weight_at_0_is_the_base_and_is_never_confirmed():
    # Every merge loses some task below the base, so linear[0,0] (the base) wins and beats the sum
    # merge beyond noise. It used to be "confirmed", and writing best/ then failed with
    # "Error: weights: all weights are 0".
    final = _final(True, 0.0)
    final["labels"] = {**LABELS, "best": "linear[0,0]"}
    final["held"][0]["label"] = "linear[0,0]"
    rows = _per_row(best=0.0, sum_=-0.3)
    assert report_verdict(NOISE, DEFS, ["a", "b"], rows, final, mean=False)["verdict"] == CONFIRMED   # as before
    got = report_verdict(NOISE, DEFS, ["a", "b"], rows, final, mean=False, best_is_base=True)
    assert got["verdict"] == NOT_CONFIRMED
    assert got["verdict_sentence"].startswith("Verdict: not confirmed. `linear[0,0]`, the best on the search rows, "
                                              "has every weight at 0: it is the base model, not a merge")
    assert "no model is written to best/" in got["verdict_sentence"]


def test_is_base_names_only_the_all_zero_merge():
    from lf_wrap.search.candidates import Candidate
    from lf_wrap.search.report.final import JOINT_CANDIDATE

    assert Candidate("linear", (0.0, 0.0)).is_base() and Candidate("tsv", ((0.0, 0.0), 0.0)).is_base()
    assert not Candidate("linear", (0.0, 0.5)).is_base() and not JOINT_CANDIDATE.is_base()
