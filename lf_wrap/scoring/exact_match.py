"""Plain exact match (a task of your own with `metric: exact_match`): 1 when the prediction
equals any reference after SQuAD's normalisation, mean over rows, 0-1. No no-answer rule: every
row needs a reference. A row keeps `{"exact_match": 0.0 or 1.0}`."""

from __future__ import annotations

from lf_wrap.scoring.family import MeanFamily, Metric
from lf_wrap.scoring.squad import exact


class ExactMatch(MeanFamily):
    name = "exact_match"
    metrics = (Metric("exact_match", "EM", True,
                      "exact match after SQuAD's normalisation (lower case, no punctuation, no a/an/the, single "
                      "spaces) against any reference, mean over rows, 0-1; no no-answer rule"),)

    def row_scores(self, prediction, references, no_answer_text) -> dict:
        if not references:
            raise ValueError("exact match needs at least one reference per prediction")
        return {"exact_match": float(max(exact(r, prediction) for r in references))}
