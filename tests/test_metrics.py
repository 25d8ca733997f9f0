"""The study's metrics equal Hugging Face `evaluate` ("bleu", "rouge", "squad_v2"), offline.

Expected values are the documented examples of those metrics and results of `evaluate.load(...)`
on the local copies of its metric scripts (recorded here, since the Hub scripts cannot load in
tests), plus cases computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from conftest import run_lf_wrap
from lf_wrap.scoring.bleu import bleu, tokenize_13a
from lf_wrap.scoring.registry import FAMILIES, METRICS
from lf_wrap.scoring.rouge import rouge_per_example
from lf_wrap.scoring.squad import normalize_answer

ROUGE, SQUAD = FAMILIES["rouge"], FAMILIES["squad_v2"]


# ---------------------------------------------------------------- BLEU


def test_bleu_documented_examples():
    # evaluate's metrics/bleu/README.md: one reference each, then two references for the first.
    one = bleu(["hello there general kenobi", "foo bar foobar"],
                       [["hello there general kenobi"], ["foo bar foobar"]])
    assert one == {"bleu": 1.0, "precisions": [1.0, 1.0, 1.0, 1.0], "brevity_penalty": 1.0,
                   "length_ratio": 1.0, "translation_length": 7, "reference_length": 7}
    two = bleu(["hello there general kenobi", "foo bar foobar"],
                       [["hello there general kenobi", "hello there!"], ["foo bar foobar"]])
    # The shortest reference ("hello there !", 3 tokens) sets the reference length: 6, not 7.
    assert two["reference_length"] == 6 and two["length_ratio"] == pytest.approx(7 / 6) and two["bleu"] == 1.0


def test_bleu_hand_computed_brevity_penalty():
    # 6 predicted tokens, 8 reference tokens. n-gram precisions 6/6, 4/5, 3/4, 2/3.
    result = bleu(["the cat sat on the mat"], [["the cat sat on the red mat today"]])
    expected_geo = (1.0 * 0.8 * 0.75 * (2 / 3)) ** 0.25
    expected_bp = math.exp(1 - 8 / 6)
    assert result["precisions"] == [1.0, 0.8, 0.75, 2 / 3]
    assert result["brevity_penalty"] == pytest.approx(expected_bp, abs=1e-15)
    assert result["bleu"] == pytest.approx(expected_geo * expected_bp, abs=1e-15)
    assert result["bleu"] == 0.5698363775444273          # evaluate.load("bleu"), same inputs


def test_bleu_equals_evaluate_on_recorded_cases():
    # Papineni et al.'s example with three references (evaluate: 0.5401725898595141).
    papineni = bleu(
        ["It is a guide to action which ensures that the military always obeys the commands of the party."],
        [["It is a guide to action that ensures that the military will forever heed Party commands.",
          "It is the guiding principle which guarantees the military forces always being under the command of "
          "the Party.",
          "It is the practical guide for the army always to heed the directions of the party."]])
    assert papineni["bleu"] == 0.5401725898595141
    assert papineni["translation_length"] == 19 and papineni["reference_length"] == 17
    # A corpus with 13a punctuation and number rules, and an empty prediction (evaluate: 0.36039626112317097).
    corpus = bleu(["The quick brown fox jumps over the lazy dog.", "Hello, world! 3.5 percent-rise", ""],
                          [["A quick brown fox jumped over the lazy dog."], ["Hello world! 3.5 percent - rise"],
                           ["nothing here"]])
    assert corpus["bleu"] == 0.36039626112317097
    assert corpus["translation_length"] == 16 and corpus["reference_length"] == 19


def test_bleu_chinese_and_13a_tokens():
    # 13a splits on spaces and punctuation, never inside CJK runs (evaluate: 0.8187307530779819).
    assert tokenize_13a("今天天气很好。") == ["今天天气很好。"]
    assert tokenize_13a("It costs $3.50, (really).") == ["It", "costs", "$", "3.50", ",", "(", "really", ")", "."]
    result = bleu(["我 爱 北京 天安门", "今天天气很好"], [["我 爱 北京 天安门 。"], ["今天天气很好"]])
    assert result["bleu"] == 0.8187307530779819


def test_bleu_all_predictions_empty_is_zero_not_a_crash():
    result = bleu(["", ""], [["a reference"], ["another one"]])
    assert result["bleu"] == 0.0 and result["translation_length"] == 0


# ---------------------------------------------------------------- ROUGE


def test_rouge_documented_examples():
    # evaluate's metrics/rouge docstring example, and its README example with use_aggregator=False.
    # (The README prints rouge1 [0.5, 0.0]; evaluate.load("rouge") itself returns [0.666..., 0.0]:
    # "hello goodbye" vs "goodbye" has precision 1/2, recall 1, F-measure 2/3.)
    assert ROUGE.score(["hello there", "general kenobi"], [["hello there"], ["general kenobi"]]) == {
        "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0}
    per_example = rouge_per_example(["hello goodbye", "ankh morpork"], [["goodbye"], ["general kenobi"]])
    assert per_example == {"rouge1": [2 / 3, 0.0], "rouge2": [0.0, 0.0], "rougeL": [2 / 3, 0.0],
                           "rougeLsum": [2 / 3, 0.0]}
    # Our aggregate is the plain mean of that list; evaluate's default is a bootstrap median.
    assert ROUGE.score(["hello goodbye", "ankh morpork"], [["goodbye"], ["general kenobi"]])["rouge1"] == 1 / 3


def test_rouge_equals_evaluate_on_recorded_cases():
    # evaluate.load("rouge").compute(..., use_aggregator=False) on the same inputs.
    scores = rouge_per_example(
        ["The quick brown fox jumps over the lazy dog.", "Hello, world! 3.5 percent-rise", ""],
        [["A quick brown fox jumped over the lazy dog."], ["Hello world! 3.5 percent - rise"], ["nothing here"]])
    assert scores["rouge1"] == [0.7777777777777778, 1.0, 0.0]
    assert scores["rouge2"] == [0.625, 1.0, 0.0]
    assert scores["rougeL"] == [0.7777777777777778, 1.0, 0.0]
    papineni = rouge_per_example(["the cat sat on the mat"], [["the cat sat on the red mat today"]])
    assert papineni["rouge1"] == [0.8571428571428571] and papineni["rouge2"] == [0.6666666666666666]


def test_rouge_lsum_splits_sentences_on_newlines():
    # Same sentences in another order: rougeL (one sequence) 0.5, rougeLsum (per sentence) 1.0.
    scores = rouge_per_example(["the cat sat.\nthe dog ran."], [["the dog ran.\nthe cat sat."]])
    assert scores["rougeL"] == [0.5] and scores["rougeLsum"] == [1.0] and scores["rouge1"] == [1.0]


def test_rouge_several_references_takes_the_best():
    scores = rouge_per_example(["a b c d"], [["x y z", "a b c d"]])
    assert scores["rouge1"] == [1.0]


def test_rouge_chinese_text_scores_zero_as_in_evaluate():
    # rouge_score's default tokenizer keeps only [a-z0-9]: Chinese text has no tokens at all.
    assert ROUGE.score(["我 爱 北京"], [["我 爱 北京"]]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0,
                                                              "rougeLsum": 0.0}


# ---------------------------------------------------------------- SQuAD v2


def test_squad_v2_documented_examples():
    # evaluate's metrics/squad_v2/README.md: 100, 0, and 2 of 3 (66.67, reported 0-1 here).
    assert SQUAD.score(["1976"], [["1976"]]) == {"exact_match": 1.0, "f1": 1.0}
    assert SQUAD.score(["1999"], [["1976"]]) == {"exact_match": 0.0, "f1": 0.0}
    partial = SQUAD.score(["1976", "Beyonce", "climate change"],
                               [["1976"], ["Beyoncé and Bruno Mars"], ["climate change"]])
    assert partial["exact_match"] == pytest.approx(2 / 3) and partial["f1"] == pytest.approx(2 / 3)


def test_squad_v2_normalisation_and_f1_by_hand():
    assert normalize_answer("  The Eiffel-Tower!  ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    # Tokens: pred {university, of, belmont, college}, gold {university, of, belmont}: P 3/4, R 1, F1 6/7.
    result = SQUAD.score(["University of Belmont College"], [["the University of Belmont"]])
    assert result["exact_match"] == 0.0 and result["f1"] == pytest.approx(6 / 7)


def test_squad_v2_unanswerable_and_no_answer_text():
    # Unanswerable (references []): right only when the normalised prediction is empty.
    assert SQUAD.score([""], [[]]) == {"exact_match": 1.0, "f1": 1.0}
    assert SQUAD.score(["Paris"], [[]]) == {"exact_match": 0.0, "f1": 0.0}
    # The model was taught to answer "unanswerable": that text counts as "" (case and punctuation aside).
    assert SQUAD.score(["Unanswerable."], [[]], no_answer_text="unanswerable")["exact_match"] == 1.0
    assert SQUAD.score(["unanswerable"], [["Paris"]], no_answer_text="unanswerable")["exact_match"] == 0.0
    # Without the mapping, the literal text is just a wrong answer.
    assert SQUAD.score(["unanswerable"], [[]])["exact_match"] == 0.0


def test_squad_v2_several_gold_answers_take_the_max_and_empty_prediction():
    assert SQUAD.score(["Denver Broncos"], [["Broncos", "Denver Broncos", "the Broncos"]])["exact_match"] == 1.0
    assert SQUAD.score([""], [["Broncos"]]) == {"exact_match": 0.0, "f1": 0.0}


def test_every_metric_says_higher_is_better():
    assert set(METRICS) == {"bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match", "f1"}
    assert all(info.higher_is_better for info in METRICS.values())


# ---------------------------------------------------------------- lf-wrap score


def _write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_score_command_json_keys_and_values(tmp_path):
    qa = _write(tmp_path / "qa.jsonl", [{"prediction": "1976", "references": ["1976"]},
                                        {"prediction": "unanswerable", "references": []},
                                        {"prediction": "", "references": ["Paris"]},
                                        {"prediction": "the Paris", "references": ["Paris", "in Paris"]}])
    done = run_lf_wrap("score", qa, "--task", "qa", "--json")
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert list(scores) == ["exact_match", "exact_match_ci95", "f1", "f1_ci95"]      # each metric, then its interval
    assert {k: v for k, v in scores.items() if not k.endswith("_ci95")} == {"exact_match": 0.75, "f1": 0.75}
    # Rows right, right, wrong, right. The interval's ends are the sorted resample means at k = 1000 // 40
    # = 25 from each end. Of 1,000 resamples of 4 rows, about 4 hold no right row (mean 0) and 47 one
    # (0.25): the mean at k is 0.25; 0.75^4 = 32% are all right (1.0), so the mean at k from the top is 1.0.
    assert scores["exact_match_ci95"] == scores["f1_ci95"] == [0.25, 1.0]
    summaries = _write(tmp_path / "sum.jsonl", [{"prediction": "hello goodbye", "references": ["goodbye"]},
                                                {"prediction": "ankh morpork", "references": ["general kenobi"]}])
    done = run_lf_wrap("score", summaries, "--task", "summarize", "--json")
    scores = json.loads(done.stdout)
    assert {k: v for k, v in scores.items() if not k.endswith("_ci95")} == {
        "rouge1": 1 / 3, "rouge2": 0.0, "rougeL": 1 / 3, "rougeLsum": 1 / 3}
    # Two rows, rouge1 2/3 and 0: a resample holds 0, 1 or 2 of the first (1/4, 1/2, 1/4 of them).
    assert scores["rouge1_ci95"] == [0.0, 2 / 3] and scores["rouge2_ci95"] == [0.0, 0.0]
    translations = _write(tmp_path / "tr.jsonl", [{"prediction": "the cat sat on the mat",
                                                   "references": ["the cat sat on the red mat today"]}])
    done = run_lf_wrap("score", translations, "--task", "translate")
    assert done.returncode == 0 and "bleu" in done.stdout and "0.5698" in done.stdout
    # One row: every resample is that row, so the interval is the value itself.
    assert "0.5698 [0.5698, 0.5698]" in done.stdout


def test_score_command_bad_file_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prediction": "a", "references": ["a"]}\n{"prediction": "b", "references": "b"}\n')
    done = run_lf_wrap("score", bad, "--task", "translate")
    assert done.returncode == 2 and "line 2" in done.stderr and "references" in done.stderr
    unanswerable = _write(tmp_path / "tr.jsonl", [{"prediction": "a", "references": []}])
    done = run_lf_wrap("score", unanswerable, "--task", "translate")
    assert done.returncode == 2 and "line 1" in done.stderr
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"prediction": "a", "references": ["a"]}\n{"prediction": "b", "refer\n')
    done = run_lf_wrap("score", torn, "--task", "qa")
    assert done.returncode == 2 and "torn.jsonl:2" in done.stderr


def test_score_command_on_a_file_that_is_not_utf8(tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"prediction": "a", "references": ["a"]}\n{"prediction": "caf\xe9", "references": ["x"]}\n')
    done = run_lf_wrap("score", latin1, "--task", "translate")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message
    assert f"{latin1}:2:" in message and "not UTF-8" in message and "byte 0xe9" in message
