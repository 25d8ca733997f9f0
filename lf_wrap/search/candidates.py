"""A candidate merge (method, weights, density, seed) and its per-module deltas, computed from
adapters read once (lf_wrap.merge.checks) by the same function `lf-wrap merge` uses
(lf_wrap.merge.run.merged_delta): a candidate patched into an engine and the same merge
written to disk are the same numbers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from lf_wrap.merge.checks import MergePlan
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS


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


def candidate_plan(plan: MergePlan, candidate: Candidate) -> MergePlan:
    """`plan` (adapters and base already read and checked) with the candidate's settings,
    validated like a merge recipe."""
    data = plan.config.model_dump(by_alias=True)
    data.update(method=candidate.method, weights=list(candidate.weights), density=candidate.density,
                seed=candidate.seed, rank=None)
    config = MergeConfig.model_validate(data)
    seed = (candidate.seed if candidate.seed is not None else 0) if METHODS[candidate.method].seeded else None
    return dataclasses.replace(plan, config=config, weights=[float(w) for w in candidate.weights], seed=seed)


class Deltas(Mapping):
    """{base weight name: merged float32 delta}, each computed when asked (one module in memory
    at a time when a consumer walks it, as WeightPatcher.apply does)."""

    def __init__(self, plan: MergePlan):
        self.plan = plan

    def __getitem__(self, name: str):
        from lf_wrap.merge.run import merged_delta

        if name not in self.plan.modules:
            raise KeyError(name)
        return merged_delta(self.plan, name)

    def __contains__(self, name) -> bool:       # Mapping's default would compute the delta
        return name in self.plan.modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.plan.modules)

    def __len__(self) -> int:
        return len(self.plan.modules)


def deltas(plan: MergePlan, candidate: Candidate) -> Deltas:
    return Deltas(candidate_plan(plan, candidate))
