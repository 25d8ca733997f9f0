"""DARE (Yu et al. 2023, "Language Models are Super Mario", arXiv:2311.03099).

Drop And REscale: every entry of each delta is kept with probability `density` (a Bernoulli
draw from a seeded torch.Generator, so a merge is reproducible) and the kept entries are
divided by `density`, which keeps the expected delta unchanged. Then:
- `dare_linear`: sum_i w_i * dropped_i (task arithmetic on the dropped deltas);
- `dare_ties`: TIES sign election on w_i * dropped_i and the sum of the agreeing entries,
  without dividing by the weights (mergekit's defaults for `dare_ties`: normalize false).
mergekit rescales by matching the L1 norm of each delta instead of 1/density; lf-wrap
follows the paper."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_wrap.merge.methods.linear import linear
from lf_wrap.merge.methods.method import MergeMethod
from lf_wrap.merge.methods.ties import consensus, stack_weighted

if TYPE_CHECKING:
    import torch


def drop_and_rescale(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    import torch

    if density >= 1:
        return delta
    keep = torch.bernoulli(torch.full(delta.shape, density, dtype=torch.float32), generator=generator)
    return delta * keep.to(delta.dtype) / density


def dare_linear(deltas: list[torch.Tensor], weights: list[float], density: float,
                generator: torch.Generator) -> torch.Tensor:
    return linear([drop_and_rescale(d, density, generator) for d in deltas], weights)


def dare_ties(deltas: list[torch.Tensor], weights: list[float], density: float,
              generator: torch.Generator) -> torch.Tensor:
    weighted, w = stack_weighted([drop_and_rescale(d, density, generator) for d in deltas], weights)
    return consensus(weighted, w, normalize=False)


def _dare_linear(deltas, weights, density, generator, params=None):
    return dare_linear(deltas, weights, density, generator)


def _dare_ties(deltas, weights, density, generator, params=None):
    return dare_ties(deltas, weights, density, generator)


METHODS = {
    "dare_linear": MergeMethod("drop entries (keep prob. density), rescale 1/density, weighted sum",
                               _dare_linear, weighted=True, density=True, seeded=True, exact_adapter=False),
    "dare_ties": MergeMethod("DARE drop and rescale, TIES sign election, weighted sum of agreeing",
                             _dare_ties, weighted=True, density=True, seeded=True, exact_adapter=False),
}
