"""ROUGE-1/2/L/Lsum as Hugging Face `evaluate`'s "rouge", offline: `rouge_score` per row with
`evaluate`'s settings (no stemmer, F-measure, the best reference when there are several,
rougeLsum splits sentences on "\\n"), then a plain mean over rows. `evaluate`'s default
(`use_aggregator=True`) reports the median of a bootstrap resampling instead, which moves by a
few thousandths on small sets; the plain mean equals the mean of its `use_aggregator=False` list.

A row keeps its four F-measures, `{"rouge1": f, "rouge2": f, "rougeL": f, "rougeLsum": f}`:
ROUGE is computed once per row, and the corpus value and every resample are means of them."""

from __future__ import annotations

from typing import Sequence

from lf_wrap.scoring.family import MeanFamily, Metric, check_lengths

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_per_example(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, list[float]]:
    """F-measure per example for each ROUGE type (evaluate's `use_aggregator=False` output)."""
    from rouge_score import rouge_scorer

    check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(rouge_types=list(ROUGE_TYPES), use_stemmer=False)
    out: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for prediction, refs in zip(predictions, references):
        if not refs:
            raise ValueError("ROUGE needs at least one reference per prediction")
        scores = scorer.score_multi(list(refs), prediction)
        for rouge_type in ROUGE_TYPES:
            out[rouge_type].append(scores[rouge_type].fmeasure)
    return out


class Rouge(MeanFamily):
    name = "rouge"
    metrics = (
        Metric("rouge1", "ROUGE-1", True, "rouge_score ROUGE-1 F-measure, no stemmer, mean over rows"),
        Metric("rouge2", "ROUGE-2", True, "rouge_score ROUGE-2 F-measure, no stemmer, mean over rows"),
        Metric("rougeL", "ROUGE-L", True, "rouge_score ROUGE-L F-measure, no stemmer, mean over rows"),
        Metric("rougeLsum", "ROUGE-Lsum", True,
               "rouge_score ROUGE-Lsum F-measure (sentences split on newlines), mean over rows"),
    )

    def rows(self, predictions, references, no_answer_text=None) -> list[dict]:
        per_type = rouge_per_example(predictions, references)     # one scorer for every row
        return [{t: per_type[t][i] for t in ROUGE_TYPES} for i in range(len(predictions))]
