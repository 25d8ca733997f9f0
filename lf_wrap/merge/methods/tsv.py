"""TSV-M, Task Singular Vectors: Merging (Gargiulo et al., CVPR 2025, arXiv:2412.00081), as
FusionBench 0.2.33 computes it (task_singular_vector/utils/TSVM_utils.py:
compute_and_sum_svd_mem_reduction, then TaskSingularVectorMerging's alpha).

Per module, with p = min(m, n) and T adapters:
1. w_i * dW_i = U_i S_i Vh_i (a per-task weight multiplies the delta before the SVD, as
   FusionBench's list-valued alpha does);
2. each task keeps its top k = int(p * task_fraction) singular triplets (the paper: 1/T);
3. U = [U_1[:, :k] | ... | U_T[:, :k]], s and Vh likewise;
4. merged = alpha * polar(U) @ diag(s) @ polar(Vh): the stacked singular vectors are made
   orthonormal (decorrelating the tasks), the singular values kept as they are.

Rank-aware (a deviation from the paper's full-rank setting, docs/merge-methods.md): task i keeps
min(k, rank_i) triplets, rank_i its numerically non-zero singular values (spectrum.RTOL).
FusionBench keeps k whatever the rank; on a LoRA delta k - r_i of them belong to zero singular
values, are arbitrary, and rotate the real ones through the polar factors. Where k <= rank_i
for every task the two are the same computation (FusionBench pads U with zero columns, which
the polar factor and the zero singular values leave out)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_wrap.merge.methods.method import ALPHA, MergeMethod, Param

if TYPE_CHECKING:
    import torch


def tsv(deltas: list[torch.Tensor], weights: list[float], task_fraction: float, alpha: float) -> torch.Tensor:
    import torch

    from lf_wrap.merge.methods.spectrum import numerical_rank, polar, svd, weighted

    k = int(min(deltas[0].shape) * task_fraction)
    columns, values, rows = [], [], []
    for delta in weighted(deltas, weights):
        u, s, vh = svd(delta)
        keep = min(k, numerical_rank(s))
        columns.append(u[:, :keep])
        values.append(s[:keep])
        rows.append(vh[:keep])
    s = torch.cat(values)
    if s.numel() == 0:
        return torch.zeros_like(deltas[0])
    merged = polar(torch.cat(columns, dim=1)) * s @ polar(torch.cat(rows, dim=0))
    return (alpha * merged).to(deltas[0].dtype)


def rank_check(params: dict, ranks: list[int], sizes: list[int]) -> None:
    """A task_fraction that keeps no singular direction of the narrowest matrix (a module's
    min(m, n) in full space; the summed rank in core and KnOTS space)."""
    smallest = min(sizes)
    if int(smallest * params["task_fraction"]) < 1:
        raise ValueError(f"params.task_fraction: {params['task_fraction']:g} of a {smallest}-wide module keeps no "
                         f"singular direction per task; give at least {1 / smallest:.3g}")


def _combine(deltas, weights, density, generator, params=None):
    params = METHODS["tsv"].resolve(params or {}, len(deltas))
    return tsv(deltas, weights, params["task_fraction"], params["alpha"])


METHODS = {
    "tsv": MergeMethod("TSV-M: each w_i dW_i's top singular triplets, stacked vectors made orthonormal", _combine,
                       weighted=True, density=False, seeded=False, exact_adapter=False, rank_check=rank_check,
                       params={"alpha": ALPHA,
                               "task_fraction": Param(1.0, "share of min(m, n) singular triplets each task keeps "
                                                      "(default 1/T)", low=0.0, high=1.0, low_open=True,
                                                      per_task=True)}),
}
