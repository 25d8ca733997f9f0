"""What `lf-wrap merge search` maximises: the share of each specialist's gain a merge keeps.

For task t with headline score s_t (higher is better), base model B and specialist adapter S_t:

    g_t(c) = (s_t(c) - s_t(B)) / (s_t(S_t) - s_t(B))

1 means the merge scores like the specialist on its task, 0 like the base, below 0 worse than
the base. The objective is the worst task's g_t (a merge is as good as the gain it loses
most of: the study's 3-in-1 kept part of every gain but most of summarize's was gone); ties
go to the higher mean g_t, then to the simpler merge (Candidate.complexity). A task whose
specialist does not beat the base has no gain to keep: it is left out, and said so.

With its uncertainty (`retained_gain`, `retained_gain_resamples`): base, specialist and
candidate scored on the same rows and resampled together (one draw of lf_wrap.scoring), so a
resample's g_t carries the noise of all three."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lf_wrap.scoring.bootstrap import Bootstrap, percentile_interval
from lf_wrap.tasks import Task

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


def rank_key(gains: Gains, complexity: tuple, value: float | None = None) -> tuple:
    """Sort key, best first: higher `value` (default: the worst g_t), then higher mean g_t, then simpler."""
    value = gains.worst if value is None else value
    return (-round(value, DIGITS), -round(gains.mean, DIGITS), complexity)


def retained_gain_resamples(task: Task, base: Sequence[dict], specialist: Sequence[dict], candidate: Sequence[dict],
                            bootstrap: Bootstrap = Bootstrap()) -> np.ndarray:
    """g_t of the task's headline metric on each resample of the rows (base, specialist and
    candidate on one draw); NaN where the specialist does not beat the base on that resample."""
    if not len(base) == len(specialist) == len(candidate):
        raise ValueError(f"retained gain needs the same rows: {len(base)}, {len(specialist)}, {len(candidate)}")
    family, metric, draw = task.family, task.headline, bootstrap.draw(len(base))
    resampled = family.resample_together(metric, [base, specialist, candidate], draw)
    gain = resampled[1] - resampled[0]
    usable = gain > 0
    out = np.full(bootstrap.resamples, np.nan)
    out[usable] = (resampled[2][usable] - resampled[0][usable]) / gain[usable]
    return out


def retained_gain(task: Task, base: Sequence[dict], specialist: Sequence[dict], candidate: Sequence[dict],
                  bootstrap: Bootstrap = Bootstrap()) -> dict:
    """How much of a specialist's gain over the base a candidate keeps on the task's headline
    metric, with its interval. Resamples where the specialist does not beat the base are left out
    of the interval (g is undefined there) and counted; {"value", "ci95", "resamples_used"}."""
    resampled = retained_gain_resamples(task, base, specialist, candidate, bootstrap)
    usable = ~np.isnan(resampled)
    s_base, s_spec, s_cand = (task.family.value(task.headline, rows) for rows in (base, specialist, candidate))
    value = (s_cand - s_base) / (s_spec - s_base) if s_spec > s_base else None
    interval = list(percentile_interval(resampled[usable], bootstrap.confidence)) if usable.sum() >= 40 else None
    return {"value": value, "ci95": interval, "resamples_used": int(usable.sum())}


@dataclass(frozen=True)
class Assessment:
    gains: Gains                     # the point estimates
    bound: float                     # the objective's lower bound over resamples of the rows
    value: float                     # what the search maximises (bound, point or worst fold, as the recipe says)
    folds: tuple[dict[str, float], ...] = ()    # each fold's retained gain per task (rows.folds)
    fold_values: tuple[float, ...] = ()         # the objective on each fold

    def per_task(self) -> dict[str, float]:
        """Each task's retained gain as the search ranks it: its worst fold (with folds), else the point."""
        if self.folds:
            return {t: min(f[t] for f in self.folds) for t in self.gains.per_task}
        return dict(self.gains.per_task)


@dataclass(frozen=True)
class Judge:
    """Scores a candidate from its per-row scores on the search rows: the point retained gains,
    and the objective's lower bound, the `quantile` of its bootstrap distribution (base,
    specialist and candidate resampled together per task; the worst or mean over tasks taken
    on each resample). A merge chosen by its point score among many is flattered by the rows
    (a noisy task can lift a brittle merge to the top); ranking by the lower bound prefers the
    merge whose gains hold on most resamples of the same rows.

    With folds (`folds`: task -> the fold of each search row), the objective is also computed on
    each fold, and `rank_by` worst_fold ranks by the worst of them: resampling the same rows
    cannot show how other rows differ, a fold the candidate did badly on can. A fold's retained
    gain is (candidate - base on the fold's rows) / (specialist - base on all search rows): the
    gain to keep is the whole search rows' (a fold's own specialist gain, on a few rows, may be
    near zero or negative, and a ratio over it swings without bound)."""

    ref: Reference
    definitions: dict[str, Task]                # task -> how it is scored (its headline metric counts)
    base_rows: dict[str, list]                  # task -> the base's per-row scores
    specialist_rows: dict[str, list]            # task -> its specialist's per-row scores
    objective: str = "worst"
    rank_by: str = "lower_bound"
    quantile: float = 0.1
    resamples: int = 200
    seed: int = 12345
    folds: dict[str, list[int]] | None = None

    def fold_gains(self, rows: dict[str, list]) -> tuple[dict[str, float], ...]:
        """Each fold's retained gain per counted task (empty without folds)."""
        if not self.folds:
            return ()
        count = max(max(f) for f in self.folds.values()) + 1
        out = []
        for fold in range(count):
            gains = {}
            for t in self.ref.tasks:
                family, metric = self.definitions[t].family, self.definitions[t].headline
                picked = [i for i, f in enumerate(self.folds[t]) if f == fold]
                lift = (family.value(metric, [rows[t][i] for i in picked])
                        - family.value(metric, [self.base_rows[t][i] for i in picked]))
                gains[t] = lift / (self.ref.specialist[t] - self.ref.base[t])
            out.append(gains)
        return tuple(out)

    def running_bound(self, scored: dict[str, dict[int, dict]]) -> float | None:
        """An upper bound of `assess(...).value` from some of a candidate's search rows (task ->
        {row index: scores}), equal to it once every row is scored; None while no part is whole.
        Exact for objective worst only (lf_wrap.search.pruning): the value is a minimum over parts
        that are each computed from their own rows, and a minimum can only go down as parts are
        added. worst_fold: the parts are (fold, task), each fold's gain as fold_gains computes it;
        point: whole tasks; lower_bound: whole tasks, each resample's minimum over the tasks scored
        (never below its minimum over all tasks), on the resamples `assess` keeps (whether the
        specialist beats the base on a resample does not depend on the candidate), and a quantile
        of numbers that can only go down can only go down."""
        if self.objective != "worst":
            raise ValueError(f"a running bound is exact for objective worst only, not {self.objective}")
        gains = self.part_gains(scored)
        if not gains:
            return None
        if self.rank_by != "lower_bound":
            return min(gains.values())
        whole = [t for _, t in gains]
        rows = {t: [scored[t][i] for i in range(len(self.base_rows[t]))] for t in whole}
        point = {t: g for (_, t), g in gains.items()}
        bootstrap = Bootstrap(self.resamples, self.seed)
        usable = np.ones(self.resamples, dtype=bool)     # the resamples assess keeps: every specialist wins there
        for t in self.ref.tasks:
            usable &= ~np.isnan(retained_gain_resamples(self.definitions[t], self.base_rows[t],
                                                        self.specialist_rows[t], self.base_rows[t], bootstrap))
        if not usable.any():
            return min(point.values())
        draws = np.vstack([retained_gain_resamples(self.definitions[t], self.base_rows[t], self.specialist_rows[t],
                                                   rows[t], bootstrap) for t in whole])
        return float(np.quantile(draws[:, usable].min(axis=0), self.quantile))

    def part_gains(self, scored: dict[str, dict[int, dict]]) -> dict[tuple[int | None, str], float]:
        """The retained gain of each whole part among `scored`: (fold, task) with rank_by worst_fold
        (as fold_gains computes it), else (None, task) for each counted task scored whole."""
        out = {}
        for t in self.ref.tasks:
            family, metric, have = self.definitions[t].family, self.definitions[t].headline, scored.get(t, {})
            gain = self.ref.specialist[t] - self.ref.base[t]
            if self.rank_by == "worst_fold":
                for fold in sorted(set(self.folds[t])):
                    picked = [i for i, f in enumerate(self.folds[t]) if f == fold]
                    if all(i in have for i in picked):
                        lift = (family.value(metric, [have[i] for i in picked])
                                - family.value(metric, [self.base_rows[t][i] for i in picked]))
                        out[(fold, t)] = lift / gain
            elif len(have) == len(self.base_rows[t]):
                value = family.value(metric, [have[i] for i in range(len(self.base_rows[t]))])
                out[(None, t)] = (value - self.ref.base[t]) / gain
        return out

    def assess(self, scores: dict[str, float], rows: dict[str, list]) -> Assessment:
        gains = retained_gains(self.ref, scores)
        bootstrap = Bootstrap(self.resamples, self.seed)
        draws = np.vstack([retained_gain_resamples(self.definitions[t], self.base_rows[t], self.specialist_rows[t],
                                                   rows[t], bootstrap) for t in self.ref.tasks])
        usable = draws[:, ~np.isnan(draws).any(axis=0)]     # resamples where every specialist beats the base
        mean = self.objective == "mean"        # worst and pareto rank by the worst task
        per_draw = usable.mean(axis=0) if mean else usable.min(axis=0)
        point = gains.mean if mean else gains.worst
        bound = float(np.quantile(per_draw, self.quantile)) if per_draw.size else point
        folds = self.fold_gains(rows)
        fold_values = tuple((sum(f.values()) / len(f)) if mean else min(f.values()) for f in folds)
        value = {"lower_bound": bound, "point": point,
                 "worst_fold": min(fold_values) if fold_values else point}[self.rank_by]
        return Assessment(gains, bound, value, folds, fold_values)
