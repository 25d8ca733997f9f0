"""CART, Centered Arithmetic with Rank-reduced Task vectors (Choi et al., "Revisiting Weight
Averaging for Model Merging", arXiv:2412.12153), as the Core Space paper's repository
(apanariello4/core-space-merging) defines it (/work/shared/references/merge-spaces-core.md).

Per module, with T adapters and p singular values (min(m, n) in full space, the core matrices'
size in core space):
1. t_i = w_i * dW_i (lf-wrap's per-task weight, as TSV-M applies it);
2. mean = (t_1 + ... + t_T) / T, and each task's centred part tau_i = t_i - mean;
3. each tau_i keeps its top ceil(p * rank_fraction) singular components (0.04 by default);
4. merged = mean + alpha * sum_i kept(tau_i) (alpha is CART's c, 0.1 by default; it scales the
   centred parts only, never the mean).

Rank-aware like the other SVD methods (spectrum.py): tau_i keeps at most its numerically non-zero
singular values, so nothing depends on singular vectors of zero singular values."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lf_wrap.merge.methods.method import MergeMethod, Param

if TYPE_CHECKING:
    import torch


def cart(deltas: list[torch.Tensor], weights: list[float], rank_fraction: float, alpha: float) -> torch.Tensor:
    from lf_wrap.merge.methods.spectrum import numerical_rank, svd, weighted

    tasks = weighted(deltas, weights)
    mean = sum(tasks) / len(tasks)
    k = math.ceil(min(deltas[0].shape) * rank_fraction)
    kept = mean.new_zeros(mean.shape)
    for task in tasks:
        u, s, vh = svd(task - mean)
        keep = min(k, numerical_rank(s))
        kept += (u[:, :keep] * s[:keep]) @ vh[:keep]
    return (mean + alpha * kept).to(deltas[0].dtype)


def _combine(deltas, weights, density, generator, params=None):
    params = METHODS["cart"].resolve(params or {}, len(deltas))
    return cart(deltas, weights, params["rank_fraction"], params["alpha"])


METHODS = {
    "cart": MergeMethod("CART: mean of the w_i dW_i plus alpha x each centred task's top singular components",
                        _combine, weighted=True, density=False, seeded=False, exact_adapter=False,
                        params={"rank_fraction": Param(0.04, "share of the p singular components each centred task "
                                                       "keeps: ceil(p x rank_fraction)", low=0.0, high=1.0,
                                                       low_open=True),
                                "alpha": Param(0.1, "scales the kept centred parts (CART's c; the mean is not "
                                               "scaled)", low=0.0, low_open=True)}),
}
