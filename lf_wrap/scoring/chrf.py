"""chrF: sacrebleu's `CHRF()` with its defaults (character n-grams up to 6, no word n-grams, beta 2,
case-sensitive, whitespace ignored, sacrebleu's effective-order averaging), on the 0-1 scale
(sacrebleu reports 0-100). With several references a row is held to the one with the best chrF,
as sacrebleu does.

Like BLEU, chrF is a corpus metric: a row keeps its character n-gram statistics,
`{"chrf_stats": [hyp_1, ref_1, match_1, ..., hyp_6, ref_6, match_6]}` (ints), and the corpus
value is chrF of their sums (sacrebleu's `corpus_score`), not a mean of sentence chrFs; a
resample's value is chrF of the resample's sums. The paired test's p-value is the shared one
(`bootstrap.p_value`) on these 0-1 values."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from lf_wrap.scoring.family import Metric, StatsFamily, check_lengths


@lru_cache(maxsize=1)
def sacrebleu_chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


class Chrf(StatsFamily):
    name = "chrf"
    metrics = (Metric("chrf", "chrF", True,
                      "sacrebleu chrF: character 6-grams, beta 2, no word n-grams, corpus statistics summed, 0-1"),)
    stats_key = "chrf_stats"
    width = 3 * 6

    def rows(self, predictions, references, no_answer_text=None) -> list[dict]:
        check_lengths(predictions, references)
        if any(not refs for refs in references):
            raise ValueError("chrF needs at least one reference per prediction")
        if not predictions:
            return []
        # sacrebleu takes references as streams (the i-th reference of every row), None where a row has fewer.
        streams = [[refs[i] if i < len(refs) else None for refs in references]
                   for i in range(max(len(refs) for refs in references))]
        statistics = sacrebleu_chrf()._extract_corpus_statistics(list(predictions), streams)
        return [{self.stats_key: [int(x) for x in sentence]} for sentence in statistics]

    def from_totals(self, totals: Sequence[float]) -> float:
        return sacrebleu_chrf()._compute_f_score(list(totals)) / 100
