"""Iso-C and Iso-CTS, isotropic merging (Marczak et al., ICML 2025, arXiv:2502.04959), as
FusionBench 0.2.33 computes them (isotropic_merging/iso_utils.py: iso_c, iso_cts, then the
scaling_factor, here `alpha`).

Iso-C: Sigma = sum_i w_i dW_i = U S Vh; every singular value is replaced by their mean:
merged = alpha * mean(S) * U @ Vh (a flat spectrum: no direction of the sum dominates).

Iso-CTS: the top c directions of Sigma are the common subspace; each task then adds its top d
directions of what the common subspace does not explain, R_i = w_i dW_i - U_c U_c^T w_i dW_i;
the stacked directions are made orthonormal and get one flat singular value:
merged = alpha * mean(s) * polar([U'_1 .. U'_T | U_c]) @ polar([Vh'_1 .. Vh'_T ; Vh_c]).
The split: c0 = int(p * common_fraction), then c = p - round((p - c0) / T) * T so the task
part divides evenly, d = (p - c) / T; Python's round rounds half to even (p = 64, T = 2:
c = 52, d = 6), as in FusionBench.

The per-task weights w_i are lf-wrap's (FusionBench's Iso takes none): with every w_i = 1 the
paper's merge; the result is homogeneous, so weights all equal to c scale it by c.

Rank-aware (a deviation from the paper's full-rank setting, docs/merge-methods.md): p above is
the numerical rank r of Sigma (spectrum.RTOL), not min(m, n); the mean runs over the r non-zero
singular values; a task keeps min(d, rank of R_i) directions, R_i's rank measured against the
largest singular value of w_i dW_i (R_i of a task that the common subspace explains is float
rounding, not a direction). FusionBench averages over all min(m, n) values, zeros included, and
adds an arbitrary partial isometry between the null spaces: on LoRA deltas its Iso-C output is
full rank with every real direction shrunk by r / min(m, n). Where Sigma is full rank (and,
for Iso-CTS, every R_i has d non-zero singular values) the two are the same computation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_wrap.merge.methods.method import ALPHA, MergeMethod, Param

if TYPE_CHECKING:
    import torch


def iso_c(deltas: list[torch.Tensor], weights: list[float], alpha: float) -> torch.Tensor:
    import torch

    from lf_wrap.merge.methods.spectrum import numerical_rank, svd, weighted

    u, s, vh = svd(sum(weighted(deltas, weights)))
    r = numerical_rank(s)
    if r == 0:
        return torch.zeros_like(deltas[0])
    merged = s[:r].mean() * u[:, :r] @ vh[:r]
    return (alpha * merged).to(deltas[0].dtype)


def cts_split(p: int, tasks: int, common_fraction: float) -> tuple[int, int]:
    """(c, d): common directions and task-specific directions per task, FusionBench's split
    of p singular directions (c may come out negative for small p: the caller refuses it)."""
    common = int(p * common_fraction)
    task_total = round((p - common) / tasks) * tasks
    common = p - task_total
    return common, int((p - common) / tasks)


def iso_cts(deltas: list[torch.Tensor], weights: list[float], common_fraction: float, alpha: float) -> torch.Tensor:
    import torch

    from lf_wrap.merge.methods.spectrum import numerical_rank, polar, svd, weighted

    tasks = weighted(deltas, weights)
    u, s, vh = svd(sum(tasks))
    r = numerical_rank(s)
    if r == 0:
        return torch.zeros_like(deltas[0])
    common, per_task = cts_split(r, len(tasks), common_fraction)
    if common < 0:            # a rank too small for the split (checks.py refuses the nominal case)
        common, per_task = 0, r // len(tasks)
    u_c = u[:, :common]
    columns, values, rows = [], [], []
    for task in tasks:
        scale = float(svd(task)[1][0])
        u_t, s_t, vh_t = svd(task - u_c @ (u_c.T @ task))
        keep = min(per_task, numerical_rank(s_t, scale))
        columns.append(u_t[:, :keep])
        values.append(s_t[:keep])
        rows.append(vh_t[:keep])
    columns.append(u_c)
    values.append(s[:common])
    rows.append(vh[:common])
    flat = torch.cat(values).mean()
    merged = flat * polar(torch.cat(columns, dim=1)) @ polar(torch.cat(rows, dim=0))
    return (alpha * merged).to(deltas[0].dtype)


def cts_rank_check(params: dict, ranks: list[int], sizes: list[int]) -> None:
    """A common_fraction whose split of the summed rank leaves no task-specific direction."""
    summed = min(sum(ranks), min(sizes))
    common, per_task = cts_split(summed, len(ranks), params["common_fraction"])
    if common < 0 or (per_task < 1 and params["common_fraction"] < 1):
        raise ValueError(f"params.common_fraction: {params['common_fraction']:g} leaves no task-specific "
                         f"direction: the adapters' summed rank is {summed} (ranks {'+'.join(map(str, ranks))}) "
                         f"for {len(ranks)} tasks; lower common_fraction, or use iso_c (common_fraction 1)")


def _iso_c(deltas, weights, density, generator, params=None):
    return iso_c(deltas, weights, METHODS["iso_c"].resolve(params or {}, len(deltas))["alpha"])


def _iso_cts(deltas, weights, density, generator, params=None):
    params = METHODS["iso_cts"].resolve(params or {}, len(deltas))
    return iso_cts(deltas, weights, params["common_fraction"], params["alpha"])


METHODS = {
    "iso_c": MergeMethod("Iso-C: sum_i w_i dW_i with every singular value set to their mean", _iso_c,
                         weighted=True, density=False, seeded=False, exact_adapter=False, params={"alpha": ALPHA}),
    "iso_cts": MergeMethod("Iso-CTS: common subspace of the sum plus each task's own directions, flat spectrum",
                           _iso_cts, weighted=True, density=False, seeded=False, exact_adapter=False,
                           rank_check=cts_rank_check,
                           params={"alpha": ALPHA,
                                   "common_fraction": Param(0.8, "share of the spectrum kept as the common subspace",
                                                            low=0.0, high=1.0)}),
}
