"""What `lf-wrap merge search` maximises: the share of each specialist's gain a merge keeps.

For task t with headline score s_t (higher is better), base model B and specialist adapter S_t:

    g_t(c) = (s_t(c) - s_t(B)) / (s_t(S_t) - s_t(B))

1 means the merge scores like the specialist on its task, 0 like the base, below 0 worse than
the base. The objective is the worst task's g_t (a merge is as good as the gain it loses
most of: the study's 3-in-1 kept part of every gain but most of summarize's was gone); ties
go to the higher mean g_t, then to the simpler merge (Candidate.complexity). A task whose
specialist does not beat the base has no gain to keep: it is left out, and said so."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DIGITS = 12      # scores equal to this many decimals are a tie (float noise is not a difference)


@dataclass(frozen=True)
class Reference:
    """Base and specialist scores, and which tasks the objective counts."""

    base: dict[str, float]
    specialist: dict[str, float]
    tasks: tuple[str, ...]                               # tasks with a gain to keep
    left_out: dict[str, str] = field(default_factory=dict)   # task -> why it does not count


def reference(base: dict[str, float], specialist: dict[str, float]) -> Reference:
    """`base`: each task's score of the base model; `specialist`: each task's score of its own
    adapter. Tasks where the specialist does not beat the base are left out, with a message."""
    missing = sorted(set(base) ^ set(specialist))
    if missing:
        raise ValueError(f"tasks scored for only one of base and specialists: {', '.join(missing)}")
    kept, left_out = [], {}
    for task in base:
        gain = specialist[task] - base[task]
        if round(gain, DIGITS) > 0:
            kept.append(task)
            continue
        left_out[task] = (f"{task}: the specialist scores {specialist[task]:.4g}, the base {base[task]:.4g}; "
                          "no gain to keep, so this task does not count in the objective")
        log.warning(left_out[task])
    if not kept:
        raise ValueError("no specialist beats the base on its own task: there is no gain for a merge to keep")
    return Reference(dict(base), dict(specialist), tuple(kept), left_out)


@dataclass(frozen=True)
class Gains:
    per_task: dict[str, float]       # g_t for every counted task
    worst: float
    mean: float


def retained_gains(ref: Reference, scores: dict[str, float]) -> Gains:
    """g_t of a candidate whose scores on the tasks are `scores`."""
    missing = [t for t in ref.tasks if t not in scores]
    if missing:
        raise ValueError(f"candidate not scored on {', '.join(missing)}")
    per_task = {t: (scores[t] - ref.base[t]) / (ref.specialist[t] - ref.base[t]) for t in ref.tasks}
    values = list(per_task.values())
    return Gains(per_task, min(values), sum(values) / len(values))


def rank_key(gains: Gains, complexity: tuple) -> tuple:
    """Sort key, best first: higher worst g_t, then higher mean g_t, then simpler."""
    return (-round(gains.worst, DIGITS), -round(gains.mean, DIGITS), complexity)
