"""Merge methods: plain functions from the adapters' full deltas dW_i = scaling_i * B_i @ A_i
(float32, one module at a time) and one weight per adapter to one merged delta.

`METHODS` is the registry the stage and the command line read; one file per method family
(linear.py, ties.py, dare.py, and the SVD-based tsv.py, iso.py, knots.py over spectrum.py;
lowrank.py turns a merged delta back into LoRA factors). Each entry says which parameters the
method takes, its named hyper-parameters (`params`: default and range, checked by
lf_wrap.merge.config), and whether its result is still a sum of LoRA products (then
`--as adapter` is exact, by concatenating ranks; otherwise a truncated SVD). docs/merge-methods.md
describes each. torch is imported when a method runs, not when the registry is read:
`lf-wrap --help` stays fast."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:
    import torch

# (deltas, weights, density, generator, params) -> merged delta; params: the resolved hyper-parameters
Combine = Callable[..., "torch.Tensor"]
Value = Union[float, str]


@dataclass(frozen=True)
class Param:
    """One named hyper-parameter: a number in [low, high] (an open end where `*_open`; None: no
    bound), or one of `choices`. `per_task`: the default and the upper bound are divided by the
    number of adapters (TSV-M's share of the spectrum, 1/T in the paper)."""

    default: Value
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    per_task: bool = False
    choices: tuple[str, ...] = ()

    def bounds(self, tasks: int) -> tuple[float | None, float | None]:
        high = self.high / tasks if self.per_task and self.high is not None else self.high
        return self.low, high

    def range_text(self, tasks: int | None) -> str:
        """E.g. "(0, inf)"; with tasks None, a per-task bound reads "1/T"."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low, high = self.bounds(tasks or 1)
        left = "(" if self.low_open or low is None else "["
        right = ")" if self.high_open or high is None else "]"
        high_text = "inf" if high is None else ("1/T" if self.per_task and tasks is None else f"{high:g}")
        return f"{left}{'-inf' if low is None else f'{low:g}'}, {high_text}{right}"

    def check(self, value: Any, tasks: int) -> Value:
        """The value, or a ValueError saying why it is refused (the caller names the key)."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{value!r} is not {self.range_text(tasks)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        low, high = self.bounds(tasks)
        if (low is not None and (value < low or (self.low_open and value == low))) or \
                (high is not None and (value > high or (self.high_open and value == high))):
            raise ValueError(f"{value:g} is not in {self.range_text(tasks)}")
        return float(value)

    def default_for(self, tasks: int) -> Value:
        return self.default / tasks if self.per_task else self.default


def _linear(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.linear import linear

    return linear(deltas, weights)


def _ties(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.ties import ties

    return ties(deltas, weights, density)


def _dare_linear(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.dare import dare_linear

    return dare_linear(deltas, weights, density, generator)


def _dare_ties(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.dare import dare_ties

    return dare_ties(deltas, weights, density, generator)


def _tsv(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.tsv import tsv

    params = METHODS["tsv"].resolve(params or {}, len(deltas))
    return tsv(deltas, weights, params["task_fraction"], params["alpha"])


def _iso_c(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.iso import iso_c

    return iso_c(deltas, weights, METHODS["iso_c"].resolve(params or {}, len(deltas))["alpha"])


def _iso_cts(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.iso import iso_cts

    params = METHODS["iso_cts"].resolve(params or {}, len(deltas))
    return iso_cts(deltas, weights, params["common_fraction"], params["alpha"])


def _knots(deltas, weights, density, generator, params=None):
    from lf_wrap.merge.methods.knots import knots

    params = METHODS["knots"].resolve(params or {}, len(deltas))
    return knots(deltas, weights, density, params["merge"], params["alpha"])


@dataclass(frozen=True)
class MergeMethod:
    summary: str
    combine: Combine  # (deltas, weights, density, generator[, params]) -> merged delta
    weighted: bool    # takes --weights (otherwise every weight is 1)
    density: bool     # needs --density
    seeded: bool      # takes --seed
    exact_adapter: bool  # merged delta = sum_i w_i dW_i: `--as adapter` concatenates ranks
    params: dict[str, Param] = field(default_factory=dict)   # named hyper-parameters (--param KEY=VALUE)
    density_when: tuple[str, str] | None = None   # density only when params[key] == value (knots: merge ties)

    def takes_density(self, params: dict[str, Value]) -> bool:
        if not self.density:
            return False
        return self.density_when is None or params.get(self.density_when[0]) == self.density_when[1]

    def resolve(self, given: dict[str, Any], tasks: int) -> dict[str, Value]:
        """Every hyper-parameter, the given ones checked and the others at their default.
        A ValueError names the key as `params.KEY`."""
        for key in given:
            if key not in self.params:
                known = ", ".join(self.params) or "none"
                raise ValueError(f"params.{key}: not a hyper-parameter of this method (its hyper-parameters: {known})")
        resolved = {}
        for key, param in self.params.items():
            if key not in given:
                resolved[key] = param.default_for(tasks)
                continue
            try:
                resolved[key] = param.check(given[key], tasks)
            except ValueError as err:
                raise ValueError(f"params.{key}: {err}") from None
        return resolved


ALPHA = Param(1.0, "scales the merged delta (FusionBench's alpha / scaling_factor; the papers tune it)",
              low=0.0, low_open=True)


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
    "tsv": MergeMethod("TSV-M: each w_i dW_i's top singular triplets, stacked vectors made orthonormal", _tsv,
                       weighted=True, density=False, seeded=False, exact_adapter=False,
                       params={"alpha": ALPHA,
                               "task_fraction": Param(1.0, "share of min(m, n) singular triplets each task keeps "
                                                      "(default 1/T)", low=0.0, high=1.0, low_open=True,
                                                      per_task=True)}),
    "iso_c": MergeMethod("Iso-C: sum_i w_i dW_i with every singular value set to their mean", _iso_c,
                         weighted=True, density=False, seeded=False, exact_adapter=False, params={"alpha": ALPHA}),
    "iso_cts": MergeMethod("Iso-CTS: common subspace of the sum plus each task's own directions, flat spectrum",
                           _iso_cts, weighted=True, density=False, seeded=False, exact_adapter=False,
                           params={"alpha": ALPHA,
                                   "common_fraction": Param(0.8, "share of the spectrum kept as the common subspace",
                                                            low=0.0, high=1.0)}),
    "knots": MergeMethod("KnOTS: align the deltas in one SVD basis, then TIES (or linear) on the aligned blocks",
                         _knots, weighted=True, density=True, seeded=False, exact_adapter=False,
                         params={"alpha": ALPHA,
                                 "merge": Param("ties", "how the aligned blocks combine", choices=("ties", "linear"))},
                         density_when=("merge", "ties")),
}
