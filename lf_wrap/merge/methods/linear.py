"""Task arithmetic: the merged delta is a weighted sum of the adapters' full deltas.

`sum` is the study's 3-in-1 (every weight 1, what `llamafactory-cli export` computes when it
merges the adapters one after another); `linear` takes one weight per adapter. No
normalisation: weights (0.3, 0.3, 0.3) mean 0.3 of each delta, as in mergekit's
`task_arithmetic` (mergekit's `linear` on full models divides by the sum of the weights)."""

from __future__ import annotations

import torch


def linear(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_i w_i * dW_i."""
    merged = torch.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights):
        merged.add_(delta, alpha=weight)
    return merged
