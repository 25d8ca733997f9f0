"""Exact pruning (`prune`, default on for objective worst): a candidate is scored in stages, and
dropped as soon as the value it could still reach is below what it would need to enter the top
`rows.held` of the leaderboard (the candidates checked on the report rows).

Why it is exact: the ranked value of objective worst is a minimum over parts of the search rows
that are each computed from their own rows (Judge.running_bound): with rank_by worst_fold the
parts are (fold, task), one fold of one task; with point or lower_bound they are the tasks; a
stage scores the next 1, 1, 2, 4, ... parts, the weakest first (Stages). After each stage the
minimum over the parts scored so far bounds the final value from above. The value needed is the
`rows.held`-th best value among the candidates scored whole so far, which only rises as the
search goes on; a candidate whose bound is below it (to 12 decimals, lf_wrap.search.objective.DIGITS) cannot be in
the final top `rows.held`, whatever its tie-breaks. Hence, for proposals that do not depend on the
scores (the grid sampler), the winner and the top `rows.held` are those of the same search
without pruning. objective mean (an average can rise as parts are added) and pareto (a front has no
single bound) do not prune.

Optuna's own pruning API carries it: each stage's bound is `trial.report(bound, stage)`,
`trial.should_prune()` asks `HeldPruner` (an optuna.pruners.BasePruner), and a pruned trial is told
`TrialState.PRUNED` (Optuna then records its last bound as its value; TPE sorts pruned trials
after every complete one, deeper stages and higher bounds first; CMA-ES ignores them by default).
Each stage's rows go to the ledger as the candidate's partial line (lf_wrap.search.ledger), so a
pruned candidate keeps its bound and the parts it was scored on, and a stopped search goes on from
the stages on record."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from lf_wrap.search import optimiser, ranking
from lf_wrap.search.candidates import Candidate
from lf_wrap.search.objective import DIGITS, Judge
from lf_wrap.search.recipe import SearchRecipe
from lf_wrap.search.splits import TaskRows
from lf_wrap.search.scorer import Part, Scorer, from_dict, scored_rows


class HeldPruner(optuna.pruners.BasePruner):
    """Prunes a trial whose last reported bound is below the `held`-th best value among the
    distinct candidates of the study's complete trials (nothing while there are fewer)."""

    def __init__(self, held: int):
        self.held = held

    def needed(self, study) -> float | None:
        values: dict = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            values[trial.user_attrs.get("candidate", trial.number)] = trial.value
        ranked = sorted(values.values(), reverse=True)
        return ranked[self.held - 1] if len(ranked) >= self.held else None

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        needed = self.needed(study) if step is not None else None
        return needed is not None and round(trial.intermediate_values[step], DIGITS) < round(needed, DIGITS)


def stages(judge: Judge, rows: dict[str, TaskRows]) -> list[Part]:
    """The parts a candidate is scored on, one per stage: one fold of one counted task (rank_by
    worst_fold), or one counted task (point, lower_bound). A left-out task bounds nothing: its rows
    come with the last stage, which scores whatever is left. A part is as small as a bound allows,
    so that a candidate is dropped after the fewest rows; an engine call's cost follows its rows
    (docs/search.md, measured), so smaller stages cost little more in all."""
    counted = [t for t in judge.ref.tasks if t in rows]
    if judge.rank_by == "worst_fold":
        count = max(max(f) for f in judge.folds.values()) + 1
        return [Part(f"fold {k} of {t}", {t: [i for i, f in enumerate(judge.folds[t]) if f == k]}, (k, t))
                for k in range(count) for t in counted]
    return [Part(f"task {t}", {t: list(range(len(rows[t].search)))}, (None, t)) for t in counted]


class Stages:
    """The stages in the order that prunes soonest: first the part a candidate is likeliest to keep
    least of, where its bound drops below the value needed, so that it is dropped after one stage
    rather than several. Any order is exact. A candidate's order is that of the nearest candidate of
    its method and space scored whole so far (its weights the closest: a merge that weighs an
    adapter little loses that adapter's task, whichever it is); before there is one, the parts the
    candidates scored whole kept least of on average go first."""

    def __init__(self, judge: Judge, rows: dict[str, TaskRows], study=None, ledger=None):
        self.judge, self.parts = judge, stages(judge, rows)
        self.sums = [0.0] * len(self.parts)
        self.seen: list[tuple[Candidate, list[float]]] = []     # (candidate, its gain on each part)
        for trial in optimiser.completed(study) if study is not None else []:    # a resumed search's so far
            entry = ledger.get("search", trial.user_attrs.get("candidate", ""))
            if entry is not None:
                self.learn(entry)

    def learn(self, entry: dict) -> None:
        """A candidate scored whole: its retained gain on each stage's part."""
        gains = self.judge.part_gains(scored_rows(entry))
        values = [gains.get(part.key, float("inf")) for part in self.parts]
        self.sums = [total + value for total, value in zip(self.sums, values)]
        if entry.get("candidate") is not None:
            self.seen.append((from_dict(entry["candidate"]), values))

    def nearest(self, candidate: Candidate | None) -> list[float] | None:
        """The part gains of the candidate scored whole closest to `candidate` (same method, space
        and number of weights), or None."""
        if candidate is None:
            return None
        mine = candidate.numbers()
        alike = [(sum((a - b) ** 2 for a, b in zip(mine, c.numbers())), values) for c, values in self.seen
                 if (c.method, c.space, len(c.numbers())) == (candidate.method, candidate.space, len(mine))]
        return min(alike, key=lambda pair: pair[0])[1] if alike else None

    def order(self, candidate: Candidate | None = None) -> list[Part]:
        """The parts, likeliest weakest first (for `candidate`, else on average), in stages of 1, 1,
        2, 4, ... parts: most candidates that are dropped are dropped after the first stage or two,
        and a candidate that survives them is scored in a few engine calls rather than one per part
        (each call costs a little of its own)."""
        near = self.nearest(candidate)
        key = (lambda k: (near[k], self.sums[k])) if near is not None else (lambda k: self.sums[k])
        ranked = [self.parts[k] for k in sorted(range(len(self.parts)), key=key)]
        out, start = [], 0
        while start < len(ranked):
            size = 1 if len(out) < 2 else 2 ** (len(out) - 1)
            out.append(joined(ranked[start:start + size]))
            start += size
        return out


def joined(parts: list[Part]) -> Part:
    """One stage of several parts: their rows in one engine call."""
    if len(parts) == 1:
        return parts[0]
    rows: dict[str, list[int]] = {}
    for part in parts:
        for task, indices in part.rows.items():
            rows.setdefault(task, []).extend(indices)
    return Part(", ".join(p.name for p in parts), {t: sorted(set(i)) for t, i in rows.items()})


def score_round(study, trials: list, candidates: list, scorer: Scorer, judge: Judge, recipe: SearchRecipe,
                rows: dict[str, TaskRows], plan: Stages) -> int:
    """Score a round's candidates stage by stage, pruning as it goes, and tell the study each
    outcome; the last stage completes the survivors. Returns how many were pruned. One engine: one
    candidate at a time, all its stages (its weights stay patched in between, and each candidate
    told raises the value the next one needs); data-parallel replicas: each stage over the round
    (the replicas share it)."""
    pairs = list(zip(trials, candidates))
    groups = [pairs] if scorer.replicas > 1 else [[pair] for pair in pairs]
    return sum(_score_group(study, group, scorer, judge, recipe, rows, plan) for group in groups)


def _score_group(study, live: list, scorer: Scorer, judge: Judge, recipe: SearchRecipe,
                 rows: dict[str, TaskRows], plan: Stages) -> int:
    # Fewer than rows.held candidates scored whole: none can be pruned yet, so one pass each (fewer
    # engine calls, and the ledger as without pruning).
    one = live[0][1] if len(live) == 1 else None          # one engine: this candidate's own order
    parts = plan.order(one) if study.pruner.needed(study) is not None else []
    pruned = 0
    for step, part in enumerate(parts[:-1]):
        still = []
        for (trial, candidate), entry in zip(live, scorer.score_many("search", [c for _, c in live], part)):
            bound = judge.running_bound(scored_rows(entry))
            if entry.get("partial") and bound is not None:
                trial.report(bound, step)
                if trial.should_prune():
                    optimiser.tell(study, trial, state=TrialState.PRUNED)
                    pruned += 1
                    continue
            still.append((trial, candidate))
        live = still
    for (trial, candidate), entry in zip(live, scorer.score_many("search", [c for _, c in live])):
        optimiser.tell(study, trial, ranking.told(recipe, judge, rows, entry))
        plan.learn(entry)
    return pruned


def settle(table: list[dict], scorer: Scorer, held: int) -> int:
    """Score whole every pruned candidate of the leaderboard `table` whose bound is not below the
    `held`-th complete row's value: none in a search run straight through (the value needed only
    rises), some after a resume with other folds or a larger rows.held. Returns how many."""
    complete = [r for r in table if not r.get("pruned")]
    needed = complete[held - 1]["value"] if len(complete) >= held else None
    contenders = [r for r in table if r.get("pruned") and (needed is None or r["value"] is None
                                                            or round(r["value"], DIGITS) >= round(needed, DIGITS))]
    if contenders:
        scorer.score_many("search", [from_dict(r["candidate"]) for r in contenders])
    return len(contenders)
