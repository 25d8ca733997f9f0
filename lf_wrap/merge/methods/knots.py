"""KnOTS, Knowledge Orientation Through SVD (Stoica et al., ICLR 2025, arXiv:2410.19735), after
its official code (gstoica27/KnOTS: task_merger.py SVDMerger, merging_functions.py, masking_ops.py).

1. Align: [dW_1 | ... | dW_T] (m x T n) = U S Vh, keeping the non-zero singular values; Vh
   splits into T blocks of r x n, and task i is dW_i = U @ (diag(S) Vh_i). Every task now
   speaks in the same basis U.
2. Merge the aligned blocks diag(S) Vh_i:
   - `ties`: trim each block to `density` (largest magnitudes), u_i = w_i * trimmed_i, elect
     the sign of sum_i u_i per entry, and average the agreeing non-zero entries (divided by
     their count, KnOTS's `disjoint_mean`);
   - `linear`: sum_i w_i diag(S) Vh_i, which is task arithmetic again (U @ that = sum w_i dW_i).
3. merged = alpha * U @ merged block.

KnOTS's scaling_coeffs is one number applied to every block before the mean; lf-wrap's per-task
weights generalise it (all weights equal to c: c times the weight-1 merge), and alpha scales the
result. Differences from the official code: the trim is per module (KnOTS's topK runs over the
whole model's concatenated blocks) and keeps int(density * numel) entries (KnOTS's
topk_values_mask keeps one more); a zero sign sum elects + (KnOTS: the majority sign); the
non-zero singular values are those above spectrum.RTOL of the largest (KnOTS: above 1e-5
absolute; FusionBench's subspace_alignment: 1e-4 absolute, which drops every direction of a
small delta)."""

from __future__ import annotations

import torch

from lf_wrap.merge.methods.spectrum import numerical_rank, svd
from lf_wrap.merge.methods.ties import consensus, trim


def align(deltas: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(U, [diag(S) Vh_i]): the shared basis and each task's coordinates in it (float64)."""
    u, s, vh = svd(torch.cat(deltas, dim=1))
    r = numerical_rank(s)
    blocks = torch.split(s[:r, None] * vh[:r], deltas[0].shape[1], dim=1)
    return u[:, :r], list(blocks)


def knots(deltas: list[torch.Tensor], weights: list[float], density: float | None, merge: str,
          alpha: float) -> torch.Tensor:
    basis, blocks = align(deltas)
    if basis.shape[1] == 0:
        return torch.zeros_like(deltas[0])
    if merge == "linear":
        merged = sum(float(w) * block for block, w in zip(blocks, weights))
    else:
        stacked = torch.stack([float(w) * trim(block, density) for block, w in zip(blocks, weights)])
        merged = consensus(stacked, torch.ones(len(blocks), *([1] * (stacked.dim() - 1)), dtype=stacked.dtype),
                           normalize=True)
    return (alpha * basis @ merged).to(deltas[0].dtype)
