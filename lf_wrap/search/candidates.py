"""Candidate merges (method, weights, density, seed): how they are generated, how simple each
is, and their per-module deltas, computed from adapters read once (lf_wrap.merge.checks) by the
function `lf-wrap merge` uses (lf_wrap.merge.run.merged_delta): a candidate patched into an
engine and the same merge written to disk are the same numbers.

The search asks its candidates of Optuna (lf_wrap.search.optimiser); `sample` draws seeded random
candidates without a study (the benchmark's 16)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass

from lf_wrap.merge.blocks import KINDS
from lf_wrap.merge.checks import MergePlan, resolve_weights
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS, SPACES
from lf_wrap.merge.spaces import Deltas


JOINT = "joint"      # the joint adapter (SearchRecipe.joint): patched in whole, never a merge of the specialists


@dataclass(frozen=True)
class Candidate:
    method: str
    weights: tuple            # one per adapter: a number, or layer-wise (freeze below)
    density: float | None = None
    seed: int | None = None
    space: str = "full"       # lf_wrap.merge.spaces

    def label(self) -> str:
        """E.g. `linear[0.5,1]`; layer-wise, `linear[1/0.5,0.5]` (block weights joined by /) or
        `linear[attention=1/0.5 mlp=0/1,0.5]`; `tsv[1,0.5] space core` outside full space: the
        candidate's identity in the score ledger (full space says nothing: earlier ledgers' labels);
        `joint` for the joint adapter."""
        if self.method == JOINT:
            return JOINT
        text = f"{self.method}[{','.join(_text(w) for w in self.weights)}]"
        if self.density is not None:
            text += f" density {self.density:g}"
        text += f" seed {self.seed}" if self.seed is not None else ""
        return text + (f" space {self.space}" if self.space != "full" else "")

    def complexity(self) -> tuple:
        """Smaller is simpler, the objective's last tie-break: the method first, in the registry's
        order (plain weighted sum, then TIES' trimming, then DARE's random drop, then the SVD
        methods: lf_wrap.merge.methods), then how many different weights (one shared weight is one
        knob), then how much is trimmed or dropped (1 - density), then the space (full first)."""
        order = list(METHODS)
        rank = order.index(self.method) if self.method in order else len(order)
        simple = (rank, len(set(self.numbers())), round(1 - (self.density if self.density is not None else 1), 6))
        return simple + ((SPACES.index(self.space),) if self.space != "full" else ())

    def numbers(self) -> list[float]:
        """Every weight, whatever its form (one per adapter, or per block and kind)."""
        return [v for w in self.weights for v in _flat(w)]

    def is_base(self) -> bool:
        """Every weight at 0: the base model itself, no merge (a grid with 0 in it proposes it)."""
        return self.method != JOINT and not any(self.numbers())


# One adapter's weight in a candidate, hashable: a number; per block, a tuple of numbers; per kind,
# a tuple of (kind, number or block tuple) pairs. `thaw` gives the merge recipe's form
# (lf_wrap.merge.config.Weight: number, list, mapping), `freeze` takes it back.


def freeze(weight):
    if isinstance(weight, dict):
        return tuple((kind, freeze(value)) for kind, value in sorted(weight.items()))
    if isinstance(weight, (list, tuple)):
        return tuple(weight) if weight and isinstance(weight[0], tuple) else tuple(float(v) for v in weight)
    return float(weight)


def thaw(weight):
    if isinstance(weight, tuple):
        if weight and isinstance(weight[0], tuple):
            return {kind: thaw(value) for kind, value in weight}
        return list(weight)
    return weight


def _flat(weight) -> list[float]:
    if isinstance(weight, tuple):
        return [v for item in weight for v in (_flat(item[1]) if isinstance(item, tuple) else [item])]
    return [weight]


def _text(weight) -> str:
    if isinstance(weight, tuple) and weight and isinstance(weight[0], tuple):
        return " ".join(f"{kind}={_text(value)}" for kind, value in weight)
    if isinstance(weight, tuple):
        return "/".join(f"{v:g}" for v in weight)
    return f"{weight:g}"


def weight_params(task: str, blocks: int, per_kind: bool) -> list[tuple[str, str | None, int]]:
    """(optimiser parameter, kind, block) of one adapter's weights: `weight.<task>` alone for one
    weight per adapter (the names every earlier search used), else `weight.<task>[.<kind>][.<block>]`."""
    kinds = KINDS if per_kind else (None,)
    return [(f"weight.{task}" + (f".{kind}" if kind else "") + (f".{block}" if blocks > 1 else ""), kind, block)
            for kind in kinds for block in range(blocks)]


def gather(values: dict[str | None, list[float]]):
    """kind (None: no split by kind) -> block weights, as one adapter's candidate weight: one
    number when they are all equal (the same merge as one weight per adapter, the same key)."""
    flat = [v for block_values in values.values() for v in block_values]
    if len(set(flat)) == 1:
        return flat[0]
    if None in values:
        return tuple(values[None])
    return tuple((kind, v[0] if len(v) == 1 else tuple(v)) for kind, v in values.items())


def _make(method: str, weights: Iterable[float], density: float | None, seed: int | None,
          space: str = "full") -> Candidate:
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose from {', '.join(METHODS)}")
    info = METHODS[method]
    if not info.weighted:
        raise ValueError(f"{method} takes no weights; search `linear` instead")
    return Candidate(method, tuple(freeze(w) for w in weights), density if info.density else None,
                     seed if info.seeded else None, space)


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
    data.update(method=candidate.method, weights=[thaw(w) for w in candidate.weights], density=candidate.density,
                seed=candidate.seed, rank=None, params={}, space=candidate.space, isotropize=False)
    config = MergeConfig.model_validate(data)
    seed = (candidate.seed if candidate.seed is not None else 0) if METHODS[candidate.method].seeded else None
    weights, per_module = resolve_weights(config.weights, len(plan.adapters), plan.modules, plan.layers)
    return dataclasses.replace(plan, config=config, weights=weights, per_module=per_module, seed=seed)


def deltas(plan: MergePlan, candidate: Candidate, joint: MergePlan | None = None) -> Deltas:
    """The candidate's merged deltas; the joint adapter's own (`joint`: its plan, one adapter at weight 1)."""
    if candidate.method == JOINT:
        if joint is None:
            raise ValueError("the joint adapter is scored only when the search names one (joint:)")
        return Deltas(joint)
    return Deltas(candidate_plan(plan, candidate))
