"""The study's metrics, computed offline and equal to Hugging Face `evaluate`.

`evaluate.load("bleu")` and `evaluate.load("rouge")` fetch their scripts from the Hub at run
time, which fails on an offline cluster. The same numbers are computed here:

- BLEU: `evaluate`'s "bleu" (the tensorflow/nmt `compute_bleu` it ships): corpus BLEU over
  sacrebleu's 13a tokens, n-grams up to 4, no smoothing, clipped counts against the union of
  the references, brevity penalty against the *shortest* reference. 0-1.
- ROUGE-1/2/L/Lsum: `rouge_score` per example with `evaluate`'s settings (no stemmer,
  F-measure, the best reference when there are several, rougeLsum splits sentences on "\\n"),
  then a plain mean. `evaluate`'s default (`use_aggregator=True`) reports the median of a
  bootstrap resampling instead, which moves by a few thousandths on small sets; the plain mean
  equals the mean of `evaluate`'s `use_aggregator=False` list.
- SQuAD v2 exact match and F1: the official script's normalisation and max over gold answers;
  an unanswerable question (no references) is right only when the normalised prediction is
  empty. A prediction equal (after normalisation) to the no-answer text the model was trained
  to say is read as "". 0-1, where `evaluate`'s "squad_v2" reports 0-100.
- Plain exact match (a user's task with `metric: exact_match`): SQuAD's normalisation, any
  reference, no no-answer rule.

A task declares a metric family (FAMILIES: bleu, rouge, exact_match, squad_v2); `score_task`
scores it through that family, whatever the task is called.
"""

from __future__ import annotations

import collections
import math
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str               # how the results table names it
    higher_is_better: bool
    definition: str


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("bleu", "BLEU", True, "evaluate 'bleu': corpus BLEU, 13a tokens, order 4, no smoothing, 0-1"),
    MetricInfo("rouge1", "ROUGE-1", True, "rouge_score ROUGE-1 F-measure, no stemmer, mean over rows"),
    MetricInfo("rouge2", "ROUGE-2", True, "rouge_score ROUGE-2 F-measure, no stemmer, mean over rows"),
    MetricInfo("rougeL", "ROUGE-L", True, "rouge_score ROUGE-L F-measure, no stemmer, mean over rows"),
    MetricInfo("rougeLsum", "ROUGE-Lsum", True,
               "rouge_score ROUGE-Lsum F-measure (sentences split on newlines), mean over rows"),
    MetricInfo("exact_match", "EM", True, "SQuAD v2 exact match after official normalisation, 0-1"),
    MetricInfo("f1", "F1", True, "SQuAD v2 token F1 after official normalisation, 0-1"),
)}


# ---------------------------------------------------------------- BLEU


@lru_cache(maxsize=1)
def _tokenizer_13a() -> Callable[[str], str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def tokenize_13a(text: str) -> list[str]:
    """mteval-v13a tokens, as `evaluate`'s "bleu" splits them (sacrebleu's tokenizer, split)."""
    return _tokenizer_13a()(text).split()


def _ngrams(tokens: list[str], max_order: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for order in range(1, max_order + 1):
        for i in range(len(tokens) - order + 1):
            counts[tuple(tokens[i:i + order])] += 1
    return counts


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], max_order: int = 4) -> dict:
    """Corpus BLEU exactly as `evaluate.load("bleu").compute(...)` (tensorflow/nmt compute_bleu)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    matches = [0] * max_order
    possible = [0] * max_order
    reference_length = translation_length = 0
    for prediction, refs in zip(predictions, references):
        if not refs:
            raise ValueError("BLEU needs at least one reference per prediction")
        ref_tokens = [tokenize_13a(r) for r in refs]
        pred_tokens = tokenize_13a(prediction)
        reference_length += min(len(r) for r in ref_tokens)
        translation_length += len(pred_tokens)
        merged: collections.Counter = collections.Counter()
        for tokens in ref_tokens:
            merged |= _ngrams(tokens, max_order)
        overlap = _ngrams(pred_tokens, max_order) & merged
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            if len(pred_tokens) - order + 1 > 0:
                possible[order - 1] += len(pred_tokens) - order + 1
    precisions = [matches[i] / possible[i] if possible[i] > 0 else 0.0 for i in range(max_order)]
    geo_mean = math.exp(sum(math.log(p) / max_order for p in precisions)) if min(precisions) > 0 else 0.0
    if reference_length == 0 or translation_length == 0:
        ratio, bp = 0.0, 0.0   # evaluate's script divides by zero here; BLEU is 0 either way
    else:
        ratio = translation_length / reference_length
        bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return {"bleu": geo_mean * bp, "precisions": precisions, "brevity_penalty": bp, "length_ratio": ratio,
            "translation_length": translation_length, "reference_length": reference_length}


# ---------------------------------------------------------------- ROUGE

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_per_example(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, list[float]]:
    """F-measure per example for each ROUGE type (evaluate's `use_aggregator=False` output)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    scorer = rouge_scorer.RougeScorer(rouge_types=list(ROUGE_TYPES), use_stemmer=False)
    out: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for prediction, refs in zip(predictions, references):
        if not refs:
            raise ValueError("ROUGE needs at least one reference per prediction")
        scores = scorer.score_multi(list(refs), prediction)
        for rouge_type in ROUGE_TYPES:
            out[rouge_type].append(scores[rouge_type].fmeasure)
    return out


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Plain mean of the per-example F-measures (deterministic, unlike a bootstrap median)."""
    per_example = rouge_per_example(predictions, references)
    return {t: (sum(v) / len(v) if v else 0.0) for t, v in per_example.items()}


# ---------------------------------------------------------------- SQuAD v2

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def _exact(gold: str, prediction: str) -> int:
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


def squad_v2(predictions: Sequence[str], references: Sequence[Sequence[str]],
             no_answer_text: str | None = None) -> dict[str, float]:
    """Mean exact match and F1 (0-1); `references` [] marks an unanswerable question."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    exact_total = f1_total = 0.0
    for prediction, refs in zip(predictions, references):
        prediction = map_no_answer(prediction, no_answer_text)
        golds = [r for r in refs if normalize_answer(r)] or [""]
        exact_total += max(_exact(g, prediction) for g in golds)
        f1_total += max(_f1(g, prediction) for g in golds)
    n = len(predictions)
    return {"exact_match": exact_total / n if n else 0.0, "f1": f1_total / n if n else 0.0}


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Plain exact match (0-1): 1 when the prediction equals any reference after SQuAD's
    normalisation, mean over rows. No no-answer rule: every row needs a reference."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    total = 0
    for prediction, refs in zip(predictions, references):
        if not refs:
            raise ValueError("exact match needs at least one reference per prediction")
        total += max(_exact(r, prediction) for r in refs)
    return {"exact_match": total / len(predictions) if predictions else 0.0}


# ---------------------------------------------------------------- families: what a task declares


@dataclass(frozen=True)
class MetricFamily:
    """A task's `metric`: the scores it reports (METRICS keys, headline first) and how they are
    computed from predictions, reference lists and the no-answer text."""

    name: str
    keys: tuple[str, ...]
    no_answer: bool          # references [] mean "unanswerable"; the no-answer text reads as ""
    score: Callable[[Sequence[str], Sequence[Sequence[str]], str | None], dict[str, float]]
    definition: str | None = None   # where METRICS' text for a key does not describe this family

    def describe(self, key: str) -> str:
        return self.definition or METRICS[key].definition


FAMILIES: dict[str, MetricFamily] = {f.name: f for f in (
    MetricFamily("bleu", ("bleu",), False, lambda p, r, _: {"bleu": bleu(p, r)["bleu"]}),
    MetricFamily("rouge", ROUGE_TYPES, False, lambda p, r, _: rouge(p, r)),
    MetricFamily("exact_match", ("exact_match",), False, lambda p, r, _: exact_match(p, r),
                 "exact match after SQuAD's normalisation (lower case, no punctuation, no a/an/the, single "
                 "spaces) against any reference, mean over rows, 0-1; no no-answer rule"),
    MetricFamily("squad_v2", ("exact_match", "f1"), True, squad_v2),
)}


def score_task(task, predictions: Sequence[str], references: Sequence[Sequence[str]],
               no_answer_text: str | None = None) -> dict[str, float]:
    """The metrics of one task (a `lf_wrap.tasks.Task`), keyed by metric name (the keys
    `lf-wrap score --json` prints). The no-answer text counts only for a no-answer family."""
    family = FAMILIES[task.metric]
    return family.score(predictions, references, no_answer_text if family.no_answer else None)
