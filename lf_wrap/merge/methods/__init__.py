"""Merge methods: plain functions from the adapters' full deltas dW_i = scaling_i * B_i @ A_i
(float32, one module at a time) and one weight per adapter to one merged delta.

`METHODS` is the registry the stage and the command line read; one file per method family
(linear.py, ties.py, dare.py; lowrank.py turns a merged delta back into LoRA factors). Each
entry says which parameters the method takes and whether its result is still a sum of LoRA
products (then `--as adapter` is exact, by concatenating ranks; otherwise a truncated SVD).
torch is imported when a method runs, not when the registry is read: `lf-wrap --help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    import torch

Combine = Callable[[list["torch.Tensor"], list[float], Optional[float], Optional["torch.Generator"]], "torch.Tensor"]


def _linear(deltas, weights, density, generator):
    from lf_wrap.merge.methods.linear import linear

    return linear(deltas, weights)


def _ties(deltas, weights, density, generator):
    from lf_wrap.merge.methods.ties import ties

    return ties(deltas, weights, density)


def _dare_linear(deltas, weights, density, generator):
    from lf_wrap.merge.methods.dare import dare_linear

    return dare_linear(deltas, weights, density, generator)


def _dare_ties(deltas, weights, density, generator):
    from lf_wrap.merge.methods.dare import dare_ties

    return dare_ties(deltas, weights, density, generator)


@dataclass(frozen=True)
class MergeMethod:
    summary: str
    combine: Combine  # (deltas, weights, density, generator) -> merged delta
    weighted: bool    # takes --weights (otherwise every weight is 1)
    density: bool     # needs --density
    seeded: bool      # takes --seed
    exact_adapter: bool  # merged delta = sum_i w_i dW_i: `--as adapter` concatenates ranks


METHODS: dict[str, MergeMethod] = {
    "sum": MergeMethod("W + dW1 + dW2 + ... (llamafactory-cli export with several adapters)", _linear,
                       weighted=False, density=False, seeded=False, exact_adapter=True),
    "linear": MergeMethod("W + sum_i w_i dW_i (task arithmetic)", _linear,
                          weighted=True, density=False, seeded=False, exact_adapter=True),
    "ties": MergeMethod("trim each dW_i to density, elect sign, weighted disjoint mean (TIES)", _ties,
                        weighted=True, density=True, seeded=False, exact_adapter=False),
    "dare_linear": MergeMethod("drop entries (keep prob. density), rescale 1/density, weighted sum",
                               _dare_linear, weighted=True, density=True, seeded=True, exact_adapter=False),
    "dare_ties": MergeMethod("DARE drop and rescale, TIES sign election, weighted sum of agreeing",
                             _dare_ties, weighted=True, density=True, seeded=True, exact_adapter=False),
}
