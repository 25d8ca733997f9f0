"""SQuAD v2 exact match and F1: the official script's normalisation and max over gold answers;
an unanswerable question (no references) is right only when the normalised prediction is empty.
A prediction equal (after normalisation) to the no-answer text the model was trained to say is
read as "". 0-1, where `evaluate`'s "squad_v2" reports 0-100.

A row keeps its two scores, `{"exact_match": 0.0 or 1.0, "f1": f}`; the corpus value is their mean.
`normalize_answer` is also the plain exact_match family's normalisation."""

from __future__ import annotations

import collections
import re
import string

from lf_wrap.scoring.family import MeanFamily, Metric

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def _f1(gold: str, prediction: str) -> float:
    gold_tokens, pred_tokens = _answer_tokens(gold), _answer_tokens(prediction)
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)   # a no-answer is right only against a no-answer
    same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def map_no_answer(prediction: str, no_answer_text: str | None) -> str:
    """The model was trained to say `no_answer_text` for an unanswerable question: that means ""."""
    if no_answer_text and normalize_answer(prediction) == normalize_answer(no_answer_text):
        return ""
    return prediction


class SquadV2(MeanFamily):
    name = "squad_v2"
    metrics = (Metric("exact_match", "EM", True, "SQuAD v2 exact match after official normalisation, 0-1"),
               Metric("f1", "F1", True, "SQuAD v2 token F1 after official normalisation, 0-1"))
    no_answer = True

    def row_scores(self, prediction, references, no_answer_text) -> dict:
        prediction = map_no_answer(prediction, no_answer_text)
        golds = [r for r in references if normalize_answer(r)] or [""]
        return {"exact_match": float(max(exact(g, prediction) for g in golds)),
                "f1": max(_f1(g, prediction) for g in golds)}
