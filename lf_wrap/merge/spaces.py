"""Where a merge method runs, one module at a time: full, KnOTS or Core Space
(/work/shared/references/merge-spaces-core.md; docs/merge-methods.md). The method (which) and
the space (where) are two settings: `method:` and `space:` of a merge recipe.

- full: the method on the m x n deltas dW_i = s_i B_i A_i (what every method did before spaces);
- knots: the deltas aligned in one SVD basis, [dW_1 | ... | dW_T] = U S [V_1 | ... | V_T]^T, the
  method on the blocks diag(S) V_i^T, the update U @ merged (methods/knots.py);
- core: the method on R x R core matrices from the factors, R the summed rank (methods/core.py):
  the fastest, and its result is exactly one LoRA of rank R.

`merged_delta` is the one place a module's merged delta is computed, for `merge adapters` (both
output forms) and for the search's patched engine (`Deltas`): a candidate served by the search
and the same merge written to disk are the same numbers, in every space."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from lf_wrap.merge.methods import METHODS

if TYPE_CHECKING:
    import torch

    from lf_wrap.merge.checks import MergePlan

SPACES = {
    "full": "the method on the full m x n deltas",
    "knots": "the method on the deltas aligned in one SVD basis (KnOTS)",
    "core": "the method on R x R core matrices of the stacked LoRA factors (Core Space; R = sum of ranks; "
            "--as adapter exact)",
}


def _generator(plan: MergePlan, name: str):
    """One random stream per module, derived from the seed and the name: the same module draws
    the same mask whatever order the modules are processed in (None: the method draws nothing)."""
    import torch

    if plan.seed is None:
        return None
    digest = hashlib.sha256(f"{plan.seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _method(plan: MergePlan, name: str):
    """The plan's method with its weights, density, random stream and parameters bound."""
    config, weights, generator = plan.config, plan.weights_of(name), _generator(plan, name)
    combine = METHODS[config.method].combine
    return lambda items: combine(items, weights, config.density, generator, config.params)


def core_factors(plan: MergePlan, name: str, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Core space: (A, B), float64, with B @ A the module's merged delta (padded to `rank`)."""
    from lf_wrap.merge.methods.core import merge_in_core

    pairs = [adapter.factors[name] for adapter in plan.adapters]
    return merge_in_core(pairs, [a.scaling for a in plan.adapters], plan.weights_of(name), _method(plan, name),
                         isotropize=plan.config.isotropize, rank=rank)


def merged_delta(plan: MergePlan, name: str) -> torch.Tensor:
    """The merged float32 delta of one module, in the plan's space."""
    import torch

    if plan.config.space == "core":      # the m x n product in float32, the precision of the result
        a_mat, b_mat = core_factors(plan, name)
        return b_mat.to(torch.float32) @ a_mat.to(torch.float32)
    deltas = []
    for adapter in plan.adapters:
        a_mat, b_mat = adapter.factors[name]
        deltas.append(adapter.scaling * (b_mat @ a_mat))
    if plan.config.space == "knots":
        from lf_wrap.merge.methods.knots import in_knots_space

        return in_knots_space(deltas, _method(plan, name))
    return _method(plan, name)(deltas)


class Deltas(Mapping):
    """{base weight name: merged float32 delta}, each computed when asked (one module in memory
    at a time when a consumer walks it, as WeightPatcher.apply does)."""

    def __init__(self, plan: MergePlan):
        self.plan = plan

    def __getitem__(self, name: str):
        if name not in self.plan.modules:
            raise KeyError(name)
        return merged_delta(self.plan, name)

    def __contains__(self, name) -> bool:       # Mapping's default would compute the delta
        return name in self.plan.modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.plan.modules)

    def __len__(self) -> int:
        return len(self.plan.modules)
