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
small delta).

The alignment is also a merge space (`space: knots`, lf_wrap.merge.spaces): any weighted method
runs on the aligned blocks in place of step 2 (`in_knots_space`). Method `knots` is that space
with KnOTS's own TIES inside: at every weight 1, the same as `space: knots` with method `ties`
(lf-wrap's TIES divides by the agreeing adapters' weights, KnOTS's mean by their count)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from lf_wrap.merge.methods.method import ALPHA, MergeMethod, Param
from lf_wrap.merge.methods.ties import consensus, trim

if TYPE_CHECKING:
    import torch


def align(deltas: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(U, [diag(S) Vh_i]): the shared basis and each task's coordinates in it (float64)."""
    import torch

    from lf_wrap.merge.methods.spectrum import numerical_rank, svd

    u, s, vh = svd(torch.cat(deltas, dim=1))
    r = numerical_rank(s)
    blocks = torch.split(s[:r, None] * vh[:r], deltas[0].shape[1], dim=1)
    return u[:, :r], list(blocks)


def knots(deltas: list[torch.Tensor], weights: list[float], density: float | None, merge: str,
          alpha: float) -> torch.Tensor:
    import torch

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


def in_knots_space(deltas: list[torch.Tensor], merge: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
    """Any method in KnOTS space: `merge` (the method, weights bound) combines the aligned blocks
    diag(S) Vh_i (r x n, float64); the merged delta is U @ its result."""
    import torch

    basis, blocks = align(deltas)
    if basis.shape[1] == 0:
        return torch.zeros_like(deltas[0])
    return (basis @ merge(blocks).to(torch.float64)).to(deltas[0].dtype)


def _combine(deltas, weights, density, generator, params=None):
    params = METHODS["knots"].resolve(params or {}, len(deltas))
    return knots(deltas, weights, density, params["merge"], params["alpha"])


METHODS = {
    # KnOTS space with KnOTS's TIES (or linear) inside; `space: knots` runs the other methods there
    "knots": MergeMethod("KnOTS: align the deltas in one SVD basis, then TIES (or linear) on the aligned blocks",
                         _combine, weighted=True, density=True, seeded=False, exact_adapter=False, spaces=("full",),
                         spaces_note="it is itself KnOTS space with TIES: use space knots with method ties",
                         params={"alpha": ALPHA,
                                 "merge": Param("ties", "how the aligned blocks combine", choices=("ties", "linear"))},
                         density_when=("merge", "ties")),
}
