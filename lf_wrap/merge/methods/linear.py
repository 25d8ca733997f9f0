"""Task arithmetic: the merged delta is a weighted sum of the adapters' full deltas.

`sum` is the study's 3-in-1 (every weight 1, what `llamafactory-cli export` computes when it
merges the adapters one after another); `linear` takes one weight per adapter. No
normalisation: weights (0.3, 0.3, 0.3) mean 0.3 of each delta, as in mergekit's
`task_arithmetic` (mergekit's `linear` on full models divides by the sum of the weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_wrap.merge.methods.method import MergeMethod

if TYPE_CHECKING:
    import torch


def linear(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_i w_i * dW_i."""
    import torch

    merged = torch.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights):
        merged.add_(delta, alpha=weight)
    return merged


def _combine(deltas, weights, density, generator, params=None):
    return linear(deltas, weights)


METHODS = {
    # `--as model` is LLaMA-Factory's own export; the other spaces would only repeat linear's sum
    "sum": MergeMethod("W + dW1 + dW2 + ... (llamafactory-cli export with several adapters)", _combine,
                       weighted=False, density=False, seeded=False, exact_adapter=True, spaces=("full",),
                       spaces_note="use method linear, which runs in every space", export_with_llamafactory=True),
    "linear": MergeMethod("W + sum_i w_i dW_i (task arithmetic)", _combine,
                          weighted=True, density=False, seeded=False, exact_adapter=True),
}
