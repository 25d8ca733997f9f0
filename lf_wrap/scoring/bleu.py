"""BLEU as Hugging Face `evaluate`'s "bleu" (the tensorflow/nmt `compute_bleu` it ships), offline:
corpus BLEU over sacrebleu's 13a tokens, n-grams up to 4, no smoothing, clipped counts against
the union of the references, brevity penalty against the *shortest* reference. 0-1.

A row keeps its sufficient statistics, `{"bleu_stats": [hyp_len, ref_len, match_1..match_4,
total_1..total_4]}` (ints): the corpus value is BLEU of their sums, not a mean of sentence BLEUs,
and a resample's value is BLEU of the resample's sums. The statistics are sacrebleu 2.6's own
(`_extract_corpus_statistics`), with `evaluate`'s reference length.

The paired test's p-value goes through sacrebleu's own code over the stored statistics: the
same draw, the same summed statistics, sacrebleu's scoring of each resample
(`BLEU._compute_score_from_stats` on float32 sums, as `_paired_bs_test` has them) and its
`_compute_p_value`. So it is sacrebleu's for the same seed and resample count, bit for bit
(sacrebleu reads the seed from SACREBLEU_SEED, default 12345, the default here too), while a
resample's token count stays under 2**24 (sacrebleu's float32 sum is exact up to there) and the
seed is not 0 (`PairedTest` treats 0 as "no seed"). Intervals score each resample with the
study's formula instead, in float64, and match sacrebleu's to its float32 precision. These are
sacrebleu's private functions; requirements pin 2.6.0 and tests/test_scoring.py fails if
another version draws, counts or scores differently."""

from __future__ import annotations

import collections
import math
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from lf_wrap.scoring.bootstrap import Draw, p_value
from lf_wrap.scoring.family import Metric, StatsFamily, check_lengths

ORDER = 4                       # BLEU's n-gram orders, evaluate's and sacrebleu's default


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


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], max_order: int = ORDER) -> dict:
    """Corpus BLEU exactly as `evaluate.load("bleu").compute(...)`, with its other outputs
    (precisions, brevity penalty, lengths): the reference the family's statistics are held to."""
    check_lengths(predictions, references)
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


@lru_cache(maxsize=1)
def sacrebleu_bleu():
    """sacrebleu's BLEU as `evaluate`'s: no smoothing, all four orders, over tokens we pass in.

    The tokens come from `tokenize_13a`, the study's tokenisation, and sacrebleu counts them as
    given (tokenize="none"). That is BLEU(tokenize="13a") except for one corner: sacrebleu strips
    trailing whitespace before its 13a tokeniser, `evaluate` does not, and 13a deletes "-\\n",
    so a text ending in "-\\n" gets one token more under sacrebleu."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="none", smooth_method="none", effective_order=False, force=True)


class Bleu(StatsFamily):
    name = "bleu"
    metrics = (Metric("bleu", "BLEU", True, "evaluate 'bleu': corpus BLEU, 13a tokens, order 4, no smoothing, 0-1"),)
    stats_key = "bleu_stats"
    width = 2 + 2 * ORDER

    def rows(self, predictions, references, no_answer_text=None) -> list[dict]:
        """sacrebleu's per-sentence statistics, with `evaluate`'s reference length.

        With several references the two BLEUs differ in the brevity penalty only: `evaluate` (and
        so the study) sums the *shortest* reference's length, sacrebleu the *closest* one's (the
        shorter on a tie). The stored `ref_len` is the shortest, so the corpus value equals `bleu`
        for any number of references; sacrebleu's own `PairedTest` on the same strings gives the
        same p-value when each row has one reference (or shortest == closest)."""
        check_lengths(predictions, references)
        if any(not refs for refs in references):
            raise ValueError("BLEU needs at least one reference per prediction")
        if not predictions:
            return []
        hyps = [" ".join(tokenize_13a(p)) for p in predictions]
        ref_tokens = [[tokenize_13a(r) for r in refs] for refs in references]
        # sacrebleu takes references as streams (the i-th reference of every row), None where a row has fewer.
        streams = [[" ".join(toks[i]) if i < len(toks) else None for toks in ref_tokens]
                   for i in range(max(len(toks) for toks in ref_tokens))]
        rows = []
        for sentence, toks in zip(sacrebleu_bleu()._extract_corpus_statistics(hyps, streams), ref_tokens):
            sentence = [int(x) for x in sentence]
            sentence[1] = min(len(t) for t in toks)
            rows.append({self.stats_key: sentence})
        return rows

    def from_totals(self, totals: Sequence[float]) -> float:
        """`bleu`'s formula, operation for operation, on summed statistics (0-1)."""
        translation_length, reference_length = totals[0], totals[1]
        matches, possible = totals[2:2 + ORDER], totals[2 + ORDER:]
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
        geo_mean = math.exp(sum(math.log(p) / ORDER for p in precisions)) if min(precisions) > 0 else 0.0
        if reference_length == 0 or translation_length == 0:
            return 0.0
        ratio = translation_length / reference_length
        return geo_mean * (1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio))

    def sacrebleu_scores(self, totals: np.ndarray) -> np.ndarray:
        """sacrebleu's BLEU (0-100) on each resample, bit for bit: float32 sums, as its own code has them."""
        scorer = sacrebleu_bleu()
        return np.array([scorer._compute_score_from_stats(t).score for t in totals.astype(np.float32)])

    def significance(self, metric, rows_a, rows_b, draw: Draw, a, b, resampled_a, resampled_b) -> float:
        stats_a, stats_b = self.stats(metric, rows_a), self.stats(metric, rows_b)
        scorer = sacrebleu_bleu()
        return p_value(scorer._aggregate_and_compute(stats_a.tolist()).score,
                       scorer._aggregate_and_compute(stats_b.tolist()).score,
                       self.sacrebleu_scores(draw.sums(stats_a)), self.sacrebleu_scores(draw.sums(stats_b)))
