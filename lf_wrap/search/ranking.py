"""How the search ranks candidates, as the recipe says: the judge built from the base's and the
specialists' scores on the search rows (objective, lower bound or folds), what the optimiser is
told of each candidate (one value, or one per task for `objective: pareto`)."""

from __future__ import annotations

from lf_wrap.search.objective import Judge, Reference
from lf_wrap.search.recipe import SearchRecipe
from lf_wrap.search.splits import TaskRows
from lf_wrap.search.scorer import headline_scores, row_scores


def make_judge(recipe: SearchRecipe, ref: Reference, rows: dict[str, TaskRows], base: dict,
               specialists: dict[str, dict]) -> Judge:
    """`base`: the base's ledger entry on the search rows; `specialists`: task -> its specialist's."""
    u = recipe.uncertainty
    folds = {t: r.folds for t, r in rows.items()} if recipe.rows.folds else None
    return Judge(ref, {t: r.data.definition for t, r in rows.items()}, row_scores(base),
                 {t: row_scores(entry)[t] for t, entry in specialists.items()}, recipe.objective,
                 u.rank_by, u.quantile, u.resamples, u.seed, folds)


def told(recipe: SearchRecipe, judge: Judge, rows: dict[str, TaskRows], entry: dict) -> float | list[float]:
    """What the optimiser is told of a scored candidate: the value it is ranked by, or with
    `objective: pareto` each counted task's retained gain (its worst fold, with folds)."""
    assessed = judge.assess(headline_scores(entry, rows), row_scores(entry))
    if recipe.objective == "pareto":
        per_task = assessed.per_task()
        return [per_task[t] for t in judge.ref.tasks]
    return assessed.value

