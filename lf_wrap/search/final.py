"""The figures a search reports: the best candidate, the study-style sum merge and linear 0.5
scored on the report rows (never the rows the best was chosen on), beside the base and the specialists on the
same rows, each retained gain with its bootstrap interval (objective.retained_gain: base,
specialist and candidate resampled together), with the eval recipe's bootstrap settings."""

from __future__ import annotations

from pathlib import Path

from lf_wrap.merge.config import MergeConfig
from lf_wrap.search import held, leaderboard
from lf_wrap.search.candidates import Candidate
from lf_wrap.search.objective import Judge, retained_gain
from lf_wrap.search.scoring import Scorer, from_dict


MERGES = leaderboard.MERGES


def references(n_adapters: int) -> dict[str, Candidate]:
    """The merges every search is compared with: the study's 3-in-1 (every adapter at weight 1,
    what LLaMA-Factory's export does) and linear at 0.5 each."""
    return {"sum": Candidate("linear", (1.0,) * n_adapters), "linear 0.5": Candidate("linear", (0.5,) * n_adapters)}


def specialist(index: int, n_adapters: int) -> Candidate:
    """Adapter `index` alone at weight 1: the specialist merged into the base."""
    return Candidate("linear", tuple(1.0 if j == index else 0.0 for j in range(n_adapters)))


def final_figures(scorer: Scorer, tasks: list[str], best: dict, bootstrap, top: list[dict] = (),
                  judge: Judge | None = None) -> dict:
    """`top`: the leaderboard's first rows, each also scored on the report rows (lf_wrap.search.held)."""
    rows = scorer.rows
    n = len(tasks)
    names = ["base", *(f"specialist {t}" for t in tasks), "best", *references(n)]
    candidates = [None, *(specialist(i, n) for i in range(n)), from_dict(best["candidate"]), *references(n).values()]
    entries = dict(zip(names, scorer.score_many("report", candidates)))
    draw = bootstrap.bootstrap()
    scores: dict[str, dict] = {name: {} for name in entries}
    retained: dict[str, dict] = {name: {} for name in MERGES}
    for task in tasks:
        definition = rows[task].data.definition
        family, metric = definition.family, definition.headline
        per_row = {name: e["per_row"][task]["row_scores"] for name, e in entries.items()}
        for name, values in per_row.items():
            scores[name][task] = {"metric": metric, "value": family.value(metric, values),
                                  "ci95": list(family.interval(metric, values, draw))}
        for name in retained:
            retained[name][task] = retained_gain(definition, per_row["base"], per_row[f"specialist {task}"],
                                                 per_row[name], draw)
    summary = {}
    for name, per_task in retained.items():
        values = [g["value"] for g in per_task.values() if g["value"] is not None]
        summary[name] = {"worst": min(values) if values else None,
                         "mean": sum(values) / len(values) if values else None}
    labels = {"best": best["label"], **{name: c.label() for name, c in references(n).items()}}
    out = {"rows": {t: len(rows[t].report) for t in tasks}, "labels": labels,
           "scores": scores, "retained": retained, "summary": summary,
           "bootstrap": {"n_resamples": draw.resamples, "seed": draw.seed, "confidence": draw.confidence}}
    if judge is not None and top:
        top = list(top) + ([] if any(r["label"] == best["label"] for r in top) else [best])
        found = scorer.score_many("report", [from_dict(r["candidate"]) for r in top])    # best's is reused
        specialists = {t: entries[f"specialist {t}"] for t in tasks}
        gains = [held.report_gains(judge, rows, entries["base"], specialists, entry) for entry in found]
        out["held"] = held.held_rows(top, gains, judge)
        out["held_sentence"] = held.sentence(out["held"], best["label"], judge)
    return out


def write_best(out: Path, plan, best: dict, output_form: str) -> Path:
    """The best candidate written by the merge stage itself (its manifest, its checks)."""
    from lf_wrap.merge.run import merge

    c = best["candidate"]
    config = MergeConfig(adapters=[a.given for a in plan.adapters], base=plan.config.base, method=c["method"],
                         weights=c["weights"], density=c["density"], seed=c["seed"], out=str(out / "best"),
                         **{"as": output_form})
    return merge(config, force=(out / "best").exists()).out


def summary(result) -> str:
    """What the command prints: best vs the reference merges on the report rows, task by task."""
    final = result.final
    lines = [f"best merge: {result.best['label']} -> {result.merge_out}",
             f"retained gain on the report rows ({', '.join(f'{t} {n} rows' for t, n in final['rows'].items())}):",
             f"  {'task':<12}" + "".join(f"{name:>26}" for name in MERGES)]
    for task in final["rows"]:
        cells = []
        for name in MERGES:
            g = final["retained"][name][task]
            text = leaderboard.pct(g["value"])
            if g["ci95"]:
                text += f" [{g['ci95'][0]:.0%}, {g['ci95'][1]:.0%}]"
            cells.append(text)
        lines.append(f"  {task:<12}" + "".join(f"{c:>26}" for c in cells))
    lines.append(f"  {'worst task':<12}" + "".join(f"{leaderboard.pct(final['summary'][n]['worst']):>26}" for n in MERGES))
    lines.append(f"{result.scored} scores computed, {result.reused} reused; leaderboard: {result.out}/leaderboard.md, "
                 f"report rows: {result.out}/final.md, chart: {result.out}/chart.png")
    return "\n".join(lines)
