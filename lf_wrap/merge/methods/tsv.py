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

import torch

from lf_wrap.merge.methods.spectrum import numerical_rank, polar, svd, weighted


def tsv(deltas: list[torch.Tensor], weights: list[float], task_fraction: float, alpha: float) -> torch.Tensor:
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
