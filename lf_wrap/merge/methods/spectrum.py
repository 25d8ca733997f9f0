"""What the SVD-based methods (tsv.py, iso.py, knots.py) share: a float64 thin SVD, the
numerical rank, and the polar factor.

Why a numerical rank. The papers (TSV-M, Iso-C, Iso-CTS) assume full-rank task vectors. A LoRA
delta scaling * B @ A has rank r (4 to 64) in a module of min(m, n) = 896 to 8192, and a sum of
three has at most r1 + r2 + r3 non-zero singular values. Past them, LAPACK returns singular
vectors of zero singular values, which are arbitrary: FusionBench's outputs on LoRA deltas move by
about their largest element under a 3e-8 change of the input or another thread count
(docs/merge-methods.md). lf-wrap's methods keep only the singular values above RTOL times the
largest one of the matrix they came from; everything they return is then a function of the
deltas. RTOL sits well above float32 rounding (the deltas are float32: their rounding noise
reaches about 1e-6 of the largest singular value on large modules) and well below what a
trained LoRA direction carries."""

from __future__ import annotations

import torch

RTOL = 1e-4   # a singular value counts when above RTOL x the largest of its matrix
SKETCH = 64   # first sketch width; x4 per try while at most half of min(m, n)


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64, U (m x q), S (q, descending), Vh (q x n), complete down to the
    numerically zero singular values: q = min(m, n) for a full-rank matrix, possibly fewer
    (but more than its numerical rank) for a low-rank one.

    Why not always LAPACK's full SVD: on a loaded 2-core CPU it takes seconds for a 896 x 896
    LoRA delta (longer for a low-rank one than for a random one), and a model has hundreds of
    modules. A LoRA delta of rank r < k is exactly X = Q Q^T X with Q an orthonormal basis of
    X @ G, G a fixed (seeded) n x k Gaussian matrix; the SVD of the small Q^T X gives X's. A
    sketch whose numerical rank reaches k may have missed directions: a wider one is tried,
    then the full SVD."""
    matrix = matrix.to(torch.float64)
    p = min(matrix.shape)
    width = SKETCH
    while width <= p // 2:
        gaussian = torch.randn(matrix.shape[1], width, generator=torch.Generator().manual_seed(width),
                               dtype=torch.float64)
        basis, _ = torch.linalg.qr(matrix @ gaussian)
        u, s, vh = torch.linalg.svd(basis.T @ matrix, full_matrices=False)
        if numerical_rank(s) < width:
            return basis @ u, s, vh
        width *= 4
    return torch.linalg.svd(matrix, full_matrices=False)


def numerical_rank(values: torch.Tensor, scale: float | None = None) -> int:
    """How many of the (descending) singular values exceed RTOL x `scale`, the largest
    singular value of the matrix they measure (default: the first of `values`)."""
    if values.numel() == 0:
        return 0
    scale = float(values[0]) if scale is None else scale
    return int((values > RTOL * scale).sum()) if scale > 0 else 0


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (or rows): P @ Qh from matrix = P S Qh.
    FusionBench calls it the orthogonalisation of the stacked singular vectors.

    Rank-aware: only the singular values above RTOL count (a partial isometry where the stacked
    vectors are dependent, e.g. the same adapter given twice: there P and Qh of the zero singular
    values are arbitrary, and FusionBench's result moves by its own size under a 1e-7 change)."""
    p, s, qh = torch.linalg.svd(matrix, full_matrices=False)
    r = numerical_rank(s)
    return p[:, :r] @ qh[:r]


def weighted(deltas: list[torch.Tensor], weights: list[float]) -> list[torch.Tensor]:
    """w_i * dW_i in float64: the per-task scaling every SVD method applies first."""
    return [float(w) * d.to(torch.float64) for d, w in zip(deltas, weights)]
