"""Candidate merges (method, weights, density, seed): how they are generated, how simple each
is, and their per-module deltas, computed from adapters read once (lf_wrap.merge.checks) by the
function `lf-wrap merge` uses (lf_wrap.merge.run.merged_delta): a candidate patched into an
engine and the same merge written to disk are the same numbers.

The search asks its candidates of Optuna (lf_wrap.search.study); `sample` draws seeded random
candidates without a study (the benchmark's 16)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass

from lf_wrap.merge.checks import MergePlan
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS
from lf_wrap.merge.run import Deltas


@dataclass(frozen=True)
class Candidate:
    method: str
    weights: tuple[float, ...]
    density: float | None = None
    seed: int | None = None

    def label(self) -> str:
        text = f"{self.method}[{','.join(f'{w:g}' for w in self.weights)}]"
        if self.density is not None:
            text += f" density {self.density:g}"
        return text + (f" seed {self.seed}" if self.seed is not None else "")

    def complexity(self) -> tuple:
        """Smaller is simpler, the objective's last tie-break: the method first (plain weighted
        sum, then TIES' trimming, then DARE's random drop), then how many different weights
        (one shared weight is one knob), then how much is trimmed or dropped (1 - density)."""
        rank = METHOD_ORDER.index(self.method) if self.method in METHOD_ORDER else len(METHOD_ORDER)
        return (rank, len(set(self.weights)), round(1 - (self.density if self.density is not None else 1), 6))


# From the simplest method to the most involved (`sum` is linear with every weight 1); the
# SVD-based methods last. Their hyper-parameters stay at their defaults in a search: every
# weight is a per-task scaling (docs/merge-methods.md).
METHOD_ORDER = ("sum", "linear", "ties", "dare_linear", "dare_ties", "tsv", "iso_c", "iso_cts", "knots")


def _make(method: str, weights: Iterable[float], density: float | None, seed: int | None) -> Candidate:
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose from {', '.join(METHODS)}")
    info = METHODS[method]
    if not info.weighted:
        raise ValueError(f"{method} takes no weights; search `linear` instead")
    return Candidate(method, tuple(float(w) for w in weights), density if info.density else None,
                     seed if info.seeded else None)


def sample(n_adapters: int, count: int, seed: int, low: float = 0.0, high: float = 1.5,
           methods: Iterable[str] = ("linear",), densities: Iterable[float] = (0.3, 0.5, 0.7),
           step: float = 0.05) -> list[Candidate]:
    """`count` candidates with weights drawn uniformly in [low, high], rounded to `step` (so a
    candidate reads well and repeats are found); method, density, seed drawn likewise. The same
    `seed` gives the same list."""
    rng = random.Random(seed)
    methods, densities = list(methods), list(densities)
    out: dict[Candidate, None] = {}
    for _ in range(count * 20):
        if len(out) == count:
            break
        weights = [round(round(rng.uniform(low, high) / step) * step, 6) for _ in range(n_adapters)]
        if any(weights):
            out[_make(rng.choice(methods), weights, rng.choice(densities), rng.randrange(2**31))] = None
    return list(out)


def candidate_plan(plan: MergePlan, candidate: Candidate) -> MergePlan:
    """`plan` (adapters and base already read and checked) with the candidate's settings,
    validated like a merge recipe."""
    data = plan.config.model_dump(by_alias=True)
    data.update(method=candidate.method, weights=list(candidate.weights), density=candidate.density,
                seed=candidate.seed, rank=None, params={})
    config = MergeConfig.model_validate(data)
    seed = (candidate.seed if candidate.seed is not None else 0) if METHODS[candidate.method].seeded else None
    return dataclasses.replace(plan, config=config, weights=[float(w) for w in candidate.weights], seed=seed)


def deltas(plan: MergePlan, candidate: Candidate) -> Deltas:
    return Deltas(candidate_plan(plan, candidate))
