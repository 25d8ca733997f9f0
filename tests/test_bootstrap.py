"""Per-row scores, bootstrap intervals and paired tests (lf_wrap.scoring: the families and the bootstrap).

Hand-checked draws on four rows, the study's metrics recomputed from stored rows, and BLEU
checked against sacrebleu 2.6's own bootstrap and paired test for the same seed."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest, _bootstrap_resample

from lf_wrap.scoring import bootstrap as draws
from lf_wrap.scoring.bootstrap import Bootstrap
from lf_wrap.scoring.registry import FAMILIES, family
from lf_wrap.tasks import TASKS

FAMILY = {name: task.metric for name, task in TASKS.items()}    # translate: bleu, summarize: rouge, qa: squad_v2
BLEU_FAMILY = FAMILIES["bleu"]
# Which family resamples a metric in these tests (exact_match: squad_v2's and exact_match's are alike).
OWNER = {"bleu": "bleu", **{k: "rouge" for k in FAMILIES["rouge"].keys}, "exact_match": "squad_v2", "f1": "squad_v2"}


def keys(task: str) -> tuple[str, ...]:
    return FAMILIES[FAMILY[task]].keys


def row_scores(family: str, predictions, references, no_answer_text=None) -> list[dict]:
    if family not in FAMILIES:
        raise ValueError(f"unknown metric family '{family}'")
    scoring = FAMILIES[family]
    return scoring.rows(predictions, references, no_answer_text if scoring.no_answer else None)


def corpus_value(metric: str, rows) -> float:
    return FAMILIES[OWNER[metric]].value(metric, rows)


def bootstrap_interval(metric: str, rows, n_resamples=1000, seed=12345, confidence=0.95):
    owner = OWNER.get(metric, "squad_v2")       # an unknown metric: the family says so
    return FAMILIES[owner].interval(metric, rows, Bootstrap(n_resamples, seed, confidence))


def paired_test(metric: str, rows_a, rows_b, n_resamples=1000, seed=12345, confidence=0.95) -> dict:
    return FAMILIES[OWNER[metric]].paired(metric, rows_a, rows_b, Bootstrap(n_resamples, seed, confidence))

WORDS = ("the a cat dog bird sat ran flew on under over mat house tree red blue green quickly slowly "
         "today yesterday big small old new river").split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(6, 14))) + rng.choice([".", "!", ""])


def _perturbed(text: str, rate: float, rng: random.Random) -> str:
    """A system that gets each word wrong with probability `rate`."""
    return " ".join(w if rng.random() > rate else rng.choice(WORDS) for w in text.split())


def _systems(rates: tuple[float, ...], n: int = 30, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    refs = [_sentence(rng) for _ in range(n)]
    return [[_perturbed(r, rate, rng) for r in refs] for rate in rates], refs


SAMPLES = {
    # 13a punctuation and numbers, an empty prediction, a text ending in "-\n", two references for one row.
    "translate": (["The quick brown fox jumps over the lazy dog.", "Hello, world! 3.5 percent-rise", "",
                   "It is a guide to action which ensures that the military always obeys the party.",
                   "a rise of 3 percent-\n"],
                  [["A quick brown fox jumped over the lazy dog."], ["Hello world! 3.5 percent - rise"],
                   ["nothing here"],
                   ["It is a guide to action that ensures that the military will forever heed Party commands.",
                    "It is the practical guide for the army always to heed the directions of the party."],
                   ["a rise of three percent"]]),
    "summarize": (["the cat sat on the mat\nit was happy", "a dog ran", "nothing in common"],
                  [["the cat was on the mat\nit was very happy"], ["the dog ran home", "a dog ran fast"],
                   ["entirely different words"]]),
    # Unanswerable rows ([]), the trained no-answer text, several gold answers, articles and punctuation.
    "qa": (["Paris", "No answer.", "the Eiffel Tower!", "1889", "", "London"],
           [["Paris", "paris, france"], [], ["Eiffel Tower"], ["in 1889", "1889"], [], ["Berlin"]]),
}


# ---------------------------------------------------------------- per-row scores and corpus values


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_corpus_value_equals_score_task(task):
    predictions, references = SAMPLES[task]
    rows = row_scores(FAMILY[task], predictions, references, "No answer" if task == "qa" else None)
    assert len(rows) == len(predictions)
    assert {m: corpus_value(m, rows) for m in keys(task)} == TASKS[task].family.corpus(rows)


def test_plain_exact_match_family_has_no_no_answer_rule():
    # A task of your own scored with exact_match: "No answer" is just a string, every row has a reference.
    predictions, references = ["Paris", "No answer", "the Rome!"], [["paris"], ["No answer"], ["Rome", "Roma"]]
    rows = row_scores("exact_match", predictions, references, "No answer")
    assert rows == [{"exact_match": 1}, {"exact_match": 1}, {"exact_match": 1}]
    assert corpus_value("exact_match", rows) == FAMILIES["exact_match"].value("exact_match", rows) == 1.0
    squad = row_scores("squad_v2", ["No answer"], [["No answer"]], "No answer")
    assert squad == [{"exact_match": 0.0, "f1": 0.0}]     # squad_v2 reads the no-answer text as ""


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_rows_are_json_lines(task):
    predictions, references = SAMPLES[task]
    rows = row_scores(FAMILY[task], predictions, references)
    assert [json.loads(json.dumps(row)) for row in rows] == rows
    expected_keys = ["bleu_stats"] if task == "translate" else list(keys(task))
    assert all(sorted(row) == sorted(expected_keys) for row in rows)


def test_bleu_stats_are_sacrebleus():
    (hyps,), refs = _systems((0.3,))
    rows = row_scores("bleu", hyps, [[r] for r in refs])
    sacre = BLEU(tokenize="13a", smooth_method="none")._extract_corpus_statistics(hyps, [refs])
    assert [row["bleu_stats"] for row in rows] == sacre
    # Several references: evaluate's shortest reference length, where sacrebleu takes the closest.
    (row,) = row_scores("bleu", ["a b c d e"], [["a b c d e f", "a b"]])
    assert row["bleu_stats"][:2] == [5, 2]


def test_row_scores_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown metric 'poetry'; choose one of: bleu, rouge"):
        family("poetry")
    with pytest.raises(ValueError, match="2 predictions but 1"):
        row_scores("squad_v2", ["x", "y"], [["x"]])
    with pytest.raises(ValueError, match="at least one reference"):
        row_scores("bleu", ["x"], [[]])


# ---------------------------------------------------------------- intervals

F1_ROWS = [{"f1": v} for v in (0.0, 0.25, 0.5, 1.0)]


def test_interval_by_hand():
    # Seed 12345 draws rows [2,0,3,1], [0,3,2,2], [3,1,3,1] (sacrebleu's draw too):
    # means (0.5+0+1+0.25)/4 = 0.4375, (0+1+0.5+0.5)/4 = 0.5, (1+0.25+1+0.25)/4 = 0.625.
    assert np.random.default_rng(12345).integers(0, 4, (3, 4)).tolist() == [[2, 0, 3, 1], [0, 3, 2, 2], [3, 1, 3, 1]]
    # Three resamples at 95%: k = floor(3 * 0.025) = 0, so the smallest and the largest mean.
    assert bootstrap_interval("f1", F1_ROWS, n_resamples=3) == (0.4375, 0.625)
    # Forty resamples at 95%: the 2nd smallest and 2nd largest (k = 40 // 40 = 1).
    means = sorted(np.array([0.0, 0.25, 0.5, 1.0])[np.random.default_rng(12345).integers(0, 4, (40, 4))].mean(1))
    assert bootstrap_interval("f1", F1_ROWS, n_resamples=40) == (means[1], means[38])
    assert bootstrap_interval("f1", [{"f1": 0.5}] * 4, n_resamples=50) == (0.5, 0.5)


def test_paired_test_by_hand():
    # b scores 1 on every row; a's three resample means are 0.4375, 0.5, 0.625 (above).
    result = paired_test("f1", F1_ROWS, [{"f1": 1.0}] * 4, n_resamples=3)
    assert result["a"] == 0.4375 and result["b"] == 1.0 and result["difference"] == 0.5625
    assert result["ci95"] == [0.375, 0.5625]              # b - a on the resamples: 0.5625, 0.5, 0.375
    # |d_i| - mean = 0.083, 0.021, -0.104: none above |d| = 0.5625, so p = (0 + 1) / (3 + 1).
    assert result["p_value"] == 0.25


def test_numpy_resampling_is_the_index_matrix_mean():
    rng = np.random.default_rng(1)
    a, b = rng.random(37), rng.random(37)
    index = np.random.default_rng(99).integers(0, 37, (500, 37))
    means_a, means_b = a[index].mean(1), b[index].mean(1)
    ordered = np.sort(means_a)
    low, high = bootstrap_interval("rouge1", [{"rouge1": v} for v in a], 500, seed=99)
    assert (low, high) == pytest.approx((ordered[500 // 40], ordered[500 - 500 // 40 - 1]), abs=1e-12)
    diffs = np.abs(means_b - means_a)
    expected_p = (np.sum(diffs - diffs.mean() > abs(b.mean() - a.mean())) + 1) / 501
    result = paired_test("rouge1", [{"rouge1": v} for v in a], [{"rouge1": v} for v in b], 500, seed=99)
    assert result["p_value"] == pytest.approx(expected_p)


def test_chunked_draw_equals_one_draw(monkeypatch):
    (a, b), refs = _systems((0.3, 0.4))
    rows_a = row_scores("bleu", a, [[r] for r in refs])
    rows_b = row_scores("bleu", b, [[r] for r in refs])
    whole = bootstrap_interval("bleu", rows_a, 200), paired_test("bleu", rows_a, rows_b, 200)
    monkeypatch.setattr(draws, "_CACHED_ENTRIES", 0)
    monkeypatch.setattr(draws, "_CHUNK_ENTRIES", 70)        # 2 resamples a chunk, 100 chunks
    assert (bootstrap_interval("bleu", rows_a, 200), paired_test("bleu", rows_a, rows_b, 200)) == whole


@pytest.mark.parametrize("task", ["translate", "summarize", "qa"])
def test_interval_contains_point_and_repeats_with_its_seed(task):
    (hyps,), refs = _systems((0.3,))
    rows = row_scores(FAMILY[task], hyps, [[r] for r in refs])
    for metric in keys(task):
        low, high = bootstrap_interval(metric, rows)
        assert low <= corpus_value(metric, rows) <= high and low < high
        assert bootstrap_interval(metric, rows) == (low, high)
        if metric != "exact_match":    # 0/1 rows: means on a grid of 1/30, two seeds can share the ends
            assert bootstrap_interval(metric, rows, seed=7) != (low, high)
        narrow = bootstrap_interval(metric, rows, confidence=0.5)
        assert low <= narrow[0] <= narrow[1] <= high


def test_bleu_resamples_are_sacrebleus(monkeypatch):
    (hyps,), refs = _systems((0.3,))
    rows = row_scores("bleu", hyps, [[r] for r in refs])
    sacre_bleu = BLEU(tokenize="13a", smooth_method="none")
    sacre_stats = sacre_bleu._extract_corpus_statistics(hyps, [refs])
    for seed, n in ((12345, 1000), (4, 77)):
        monkeypatch.setenv("SACREBLEU_SEED", str(seed))
        _, sacre_scores = _bootstrap_resample(sacre_stats, sacre_bleu, n)
        totals = Bootstrap(n, seed).draw(len(rows)).sums(BLEU_FAMILY.stats("bleu", rows))
        assert BLEU_FAMILY.sacrebleu_scores(totals).tolist() == [s.score for s in sacre_scores]   # bit for bit
        # The interval scores the same resamples with the study's formula: sacrebleu's "score ± ci".
        score = BLEU(tokenize="13a", smooth_method="none").corpus_score(hyps, [refs], n_bootstrap=n)
        low, high = bootstrap_interval("bleu", rows, n, seed)
        assert score.score == pytest.approx(100 * corpus_value("bleu", rows), rel=1e-12)
        assert score._ci == pytest.approx(100 * (high - low) / 2, abs=1e-5)


def test_perfect_bleu_interval_is_one():
    # sacrebleu's own resamples score 100.00000000000004 here (float32 precisions, log then exp).
    refs = ["the cat sat on the mat today", "a dog ran home fast now"] * 10
    rows = row_scores("bleu", refs, [[r] for r in refs])
    assert corpus_value("bleu", rows) == 1.0 and bootstrap_interval("bleu", rows) == (1.0, 1.0)


# ---------------------------------------------------------------- paired tests


@pytest.mark.parametrize("task", ["translate", "summarize", "qa"])
def test_system_against_itself(task):
    (hyps,), refs = _systems((0.3,))
    rows = row_scores(FAMILY[task], hyps, [[r] for r in refs])
    for metric in keys(task):
        result = paired_test(metric, rows, [dict(row) for row in rows])
        assert result["difference"] == 0 and result["ci95"] == [0.0, 0.0]
        assert result["p_value"] == 1.0         # sacrebleu says 1/(N+1) here; see bootstrap.p_value


@pytest.mark.parametrize("task", ["translate", "summarize", "qa"])
def test_clearly_better_system_is_significant(task):
    (worse, better), refs = _systems((0.8, 0.1))
    rows_worse = row_scores(FAMILY[task], worse, [[r] for r in refs])
    rows_better = row_scores(FAMILY[task], better, [[r] for r in refs])
    for metric in keys(task):
        result = paired_test(metric, rows_worse, rows_better)
        assert result["difference"] == result["b"] - result["a"] > 0
        assert result["ci95"][0] > 0 and result["p_value"] < 0.01
        # Swapping the systems flips the difference, not the (two-sided) p-value.
        swapped = paired_test(metric, rows_better, rows_worse)
        assert swapped["difference"] == -result["difference"] and swapped["p_value"] == result["p_value"]


@pytest.mark.parametrize("rates", [(0.3, 0.35), (0.3, 0.25), (0.5, 0.2)])
def test_bleu_p_value_equals_sacrebleus(monkeypatch, rates):
    (a, b), refs = _systems(rates, n=40, seed=3)
    rows_a = row_scores("bleu", a, [[r] for r in refs])
    rows_b = row_scores("bleu", b, [[r] for r in refs])
    for seed, n in ((12345, 1000), (99, 300)):
        monkeypatch.setenv("SACREBLEU_SEED", str(seed))
        _, scores = PairedTest([("a", a), ("b", b)], {"BLEU": BLEU(tokenize="13a", smooth_method="none")},
                               [refs], test_type="bs", n_samples=n)()
        result = paired_test("bleu", rows_a, rows_b, n_resamples=n, seed=seed)
        assert result["p_value"] == scores["BLEU"][1].p_value
        assert result["b"] == pytest.approx(scores["BLEU"][1].score / 100, rel=1e-12)


def test_paired_interval_follows_the_confidence_and_the_p_value_does_not():
    (a, b), refs = _systems((0.3, 0.35))
    rows_a, rows_b = (row_scores("rouge", s, [[r] for r in refs]) for s in (a, b))
    wide = paired_test("rouge1", rows_a, rows_b, 400)
    narrow = paired_test("rouge1", rows_a, rows_b, 400, confidence=0.5)
    assert wide["ci95"][0] < narrow["ci95"][0] <= narrow["ci95"][1] < wide["ci95"][1]
    assert narrow["p_value"] == wide["p_value"] and narrow["difference"] == wide["difference"]
    with pytest.raises(ValueError, match="confidence"):
        paired_test("rouge1", rows_a, rows_b, confidence=1.0)


def test_paired_test_refuses_mismatched_rows():
    rows = [{"f1": 0.5}] * 4
    with pytest.raises(ValueError, match="4 rows against 3"):
        paired_test("f1", rows, rows[:3])


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_interval("meteor", F1_ROWS)
    with pytest.raises(ValueError, match="no 'bleu_stats'"):
        corpus_value("bleu", F1_ROWS)
    with pytest.raises(ValueError, match="no rows"):
        bootstrap_interval("f1", [])
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval("f1", F1_ROWS, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval("f1", F1_ROWS, confidence=95)
