"""From merged deltas back to one LoRA adapter (A: r x in, B: out x r, scaling 1).

A weighted sum of LoRA deltas is itself low-rank, so `concat` is exact: stacking the A's and
the B's (each B times w_i * scaling_i) gives B_cat @ A_cat = sum_i w_i * s_i * B_i @ A_i.
PEFT's add_weighted_adapter(combination_type="cat") does the same; its other modes mix A and
B separately, which adds cross terms B_i @ A_j. A TIES or DARE delta is not low-rank any more:
`truncated_svd` keeps its `rank` largest singular directions and reports what was lost."""

from __future__ import annotations

import torch


def concat(pairs: list[tuple[torch.Tensor, torch.Tensor]], factors: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """pairs: (A_i, B_i); factors: w_i * scaling_i. Returns (A_cat, B_cat)."""
    a_cat = torch.cat([a for a, _ in pairs], dim=0)
    b_cat = torch.cat([b * f for (_, b), f in zip(pairs, factors)], dim=1)
    return a_cat.contiguous(), b_cat.contiguous()


def truncated_svd(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with B @ A the best rank-`rank` approximation of `delta` (Eckart-Young).

    The singular values are split evenly (sqrt on each side) so A and B have similar
    magnitudes, which keeps them representable in half precision. A rank above min(out, in)
    is padded with zeros (exact), so every module of one adapter has the same rank."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    root = s[:rank].sqrt()
    a_mat, b_mat = root[:, None] * vh[:rank], u[:, :rank] * root
    missing = rank - root.numel()
    if missing > 0:
        a_mat = torch.cat([a_mat, a_mat.new_zeros(missing, a_mat.shape[1])], dim=0)
        b_mat = torch.cat([b_mat, b_mat.new_zeros(b_mat.shape[0], missing)], dim=1)
    return a_mat.contiguous(), b_mat.contiguous()


def relative_error(delta: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """||delta - B @ A||_F / ||delta||_F (0 for a zero delta reproduced exactly)."""
    norm = torch.linalg.norm(delta)
    diff = torch.linalg.norm(delta - b @ a)
    return float(diff / norm) if norm > 0 else float(diff)
