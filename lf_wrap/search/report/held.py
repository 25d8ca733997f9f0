"""Whether the search's winner holds on rows it never saw. The top `rows.held` (5) of the leaderboard are
scored on the report rows too (in the engine the final step runs anyway: a few patched
candidates more), and each one's objective there is set beside the value it was ranked by on
the search rows.

Held: the objective on the report rows is at least the value the candidate was ranked by on
the search rows (its worst fold, its lower bound or its point value, as the recipe ranks). That
value is the search's claim of what the merge keeps at least; the report rows, never searched
on, test the claim. The first demo search's TIES winner was ranked at 62% of QA's gain and kept
31% on the report rows: it did not hold. A task whose specialist does not beat the base on the
report rows has no gain to keep there and is left out of the report-row objective, as on the
search rows."""

from __future__ import annotations

from lf_wrap.search.objective import DIGITS, Judge


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def ranked_by(judge: Judge) -> str:
    """What a candidate's search-row value is, in words."""
    what = "mean kept" if judge.objective == "mean" else "worst task kept"
    if judge.rank_by == "worst_fold":
        return f"{what}, worst of {max(max(f) for f in judge.folds.values()) + 1} folds"
    return f"{what}, {judge.quantile:.0%} lower bound" if judge.rank_by == "lower_bound" else what


def report_gains(judge: Judge, rows: dict, base: dict, specialists: dict[str, dict], entry: dict) -> dict:
    """task -> a candidate's retained gain on the report rows (None where the specialist does not
    beat the base there), from ledger entries of the report rows."""
    out = {}
    for t in judge.ref.tasks:
        family, metric = rows[t].data.definition.family, rows[t].data.definition.headline
        value = {name: family.value(metric, e["per_row"][t]["row_scores"])
                 for name, e in (("base", base), ("specialist", specialists[t]), ("candidate", entry))}
        gain = value["specialist"] - value["base"]
        out[t] = (value["candidate"] - value["base"]) / gain if round(gain, DIGITS) > 0 else None
    return out


def held_rows(top: list[dict], gains: list[dict], judge: Judge) -> list[dict]:
    """One row per candidate of `top` (leaderboard rows, best first): its value on the search rows
    (what it was ranked by, the point objective, the range over folds) and on the report rows."""
    mean = judge.objective == "mean"
    out = []
    for row, per_task in zip(top, gains):
        defined = [g for g in per_task.values() if g is not None]
        report = (sum(defined) / len(defined) if mean else min(defined)) if defined else None
        folds = row.get("folds") or []
        out.append({"rank": row["rank"], "label": row["label"], "role": row["role"], "ranked_value": row["value"],
                    "search": row["mean"] if mean else row["worst"],
                    "search_folds": [min(folds), max(folds)] if folds else None,
                    "report": report, "report_retained": per_task,
                    "held": None if report is None else round(report, DIGITS) >= round(row["value"], DIGITS)})
    reported = sorted((r for r in out if r["report"] is not None), key=lambda r: -r["report"])
    for place, r in enumerate(reported, 1):
        r["report_place"] = place
    return out


def sentence(rows: list[dict], best_label: str, judge: Judge) -> str:
    """Whether the winner held, in one sentence (what final.md says)."""
    winner = next(r for r in rows if r["label"] == best_label)
    what = "mean kept" if judge.objective == "mean" else "worst task kept"
    if winner["report"] is None:
        return (f"Whether the winner `{best_label}` held cannot be said: on the report rows no specialist beats "
                "the base, so there is no gain to keep.")
    verdict = "held" if winner["held"] else "did not hold"
    compare = "at least" if winner["held"] else "below"
    text = (f"The winner {verdict}: `{best_label}` keeps {_pct(winner['report'])} ({what}) on the report rows, "
            f"{compare} the {_pct(winner['ranked_value'])} it was ranked by on the search rows ({ranked_by(judge)})")
    first = min((r for r in rows if r["report"] is not None), key=lambda r: r["report_place"])
    if len(rows) == 1:
        return text + "."
    if first is winner:
        return text + f", and it keeps the most of the top {len(rows)} there."
    return text + f"; of the top {len(rows)}, #{first['rank']} `{first['label']}` keeps the most there " \
                  f"({_pct(first['report'])})."


def markdown(rows: list[dict], judge: Judge) -> str:
    """The top candidates' objective on the search rows and on the report rows, side by side."""
    head = ["rank", "candidate", f"search: ranked by ({ranked_by(judge)})", "search: point"]
    with_folds = any(r["search_folds"] for r in rows)
    head += ["search: fold range"] if with_folds else []
    head += ["report rows", "report place", "held"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [str(r["rank"]), f"`{r['label']}`", _pct(r["ranked_value"]), _pct(r["search"])]
        if with_folds:
            cells.append(f"{_pct(r['search_folds'][0])} .. {_pct(r['search_folds'][1])}" if r["search_folds"] else "-")
        cells += [_pct(r["report"]), str(r.get("report_place", "-")),
                  {True: "yes", False: "no", None: "n/a"}[r["held"]]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nheld: the objective on the report rows (never searched on) is at least the value "
                               "the candidate was ranked by on the search rows.\n")
