"""TIES-merging (Yadav et al. 2023, arXiv:2306.01708), as mergekit computes it.

1. Trim: keep the `density` fraction of each delta with the largest magnitude, zero the rest.
2. Weight: u_i = w_i * trimmed_i (mergekit applies the weights here, before the election).
3. Elect: per entry, the sign of sum_i u_i (a zero sum counts as +).
4. Disjoint mean: sum the u_i whose sign agrees with the elected one and divide by the sum of
   their weights (mergekit's `normalize: true`, the default for `ties`). With all weights 1
   this is the paper's mean over the agreeing, non-trimmed entries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_wrap.merge.methods.method import MergeMethod

if TYPE_CHECKING:
    import torch


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the int(density * numel) largest-magnitude entries (at least one); zero the rest."""
    import torch

    if density >= 1:
        return delta
    k = max(1, int(density * delta.numel()))
    flat = delta.reshape(-1)
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat.abs(), k, sorted=False).indices] = 1
    return (flat * keep).reshape(delta.shape)


def agreeing(weighted: torch.Tensor) -> torch.Tensor:
    """Mask (same shape as the stacked `weighted`) of the entries whose sign is the elected one.

    Trimmed (zero) entries have sign 0 and never agree, so they count in neither the sum nor
    the divisor: the mean is over the entries that were kept and agree."""
    import torch

    elected = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(weighted.dtype)
    return weighted.sign() == elected


def consensus(weighted: torch.Tensor, weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Sum the agreeing entries of `weighted` (stacked, adapters first); optionally divide by
    the sum of the agreeing adapters' weights (entries where nobody agrees stay zero)."""
    mask = agreeing(weighted)
    merged = (weighted * mask).sum(dim=0)
    if normalize:
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        merged = merged / divisor
    return merged


def stack_weighted(deltas: list[torch.Tensor], weights: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacked w_i * delta_i and the weights shaped to broadcast over it."""
    import torch

    stacked = torch.stack(deltas, dim=0)
    w = torch.tensor(weights, dtype=stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
    return stacked * w, w


def ties(deltas: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    weighted, w = stack_weighted([trim(d, density) for d in deltas], weights)
    return consensus(weighted, w, normalize=True)


def _combine(deltas, weights, density, generator, params=None):
    return ties(deltas, weights, density)


METHODS = {
    "ties": MergeMethod("trim each dW_i to density, elect sign, weighted disjoint mean (TIES)", _combine,
                        weighted=True, density=True, seeded=False, exact_adapter=False),
}
