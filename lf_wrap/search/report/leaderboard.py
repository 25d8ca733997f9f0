"""What a search leaves to read: the leaderboard (every candidate scored on the search rows,
best first, with the sum and linear-0.5 merges as reference rows), the final figures on the
report rows, a chart of retained gain per task, and the best merge written by the merge stage when
the verdict confirms it (lf_wrap.search.report.verdict).

    leaderboard.md / .csv / .json   rank, candidate, method, weights, density, each task's score
                                    and retained gain, worst, mean, role, Optuna trial numbers
    final.md                        best vs sum vs linear 0.5 (vs the joint adapter, when named) on the
                                    report rows, with 95% intervals;
                                    whether the winner held (the top `rows.held` on both sets of rows,
                                    lf_wrap.search.report.held); the verdict first (lf_wrap.search.report.verdict)
    pareto.png                      objective pareto: each task's retained gain, the front (report.pareto)
    chart.png                       retained gain per task: the best candidates and the sum merge
                                    (search rows); best, sum, linear 0.5 with intervals (report rows)"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lf_wrap.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from lf_wrap.search.report import held, pareto
from lf_wrap.search.report.chart import chart
from lf_wrap.search.report.noise import described, floor_note, smallest_sentence
from lf_wrap.search.ledger import Ledger
from lf_wrap.search.objective import Gains, Judge, rank_key
from lf_wrap.search.candidates import JOINT, thaw
from lf_wrap.search.layerwise import Layout
from lf_wrap.search.report.panels import markdown as block_markdown, weight_columns, weight_values
from lf_wrap.search.scorer import from_dict, headline_scores, key_of, row_scores, scored_rows
from lf_wrap.search.splits import TaskRows

MERGES = ("sum", "linear 0.5", "best")     # the merges whose retained gains the report rows give


def _row(entry: dict, judge: Judge, rows: dict[str, TaskRows], tasks: list[str]) -> dict:
    candidate = from_dict(entry["candidate"])
    scores = headline_scores(entry, rows)
    assessed = judge.assess(scores, row_scores(entry))
    gains = assessed.gains
    return {"label": candidate.label(), "key": entry["key"], "role": "candidate", "method": candidate.method,
            "weights": dict(zip(tasks, map(thaw, candidate.weights))), "density": candidate.density,
            "seed": candidate.seed,
            "scores": scores, "retained": gains.per_task, "worst": gains.worst, "mean": gains.mean,
            "lower_bound": assessed.bound, "value": assessed.value,
            "folds": list(assessed.fold_values), "objectives": assessed.per_task(),
            "trials": [], "complexity": list(candidate.complexity()), "candidate": entry["candidate"], "pruned": None}


def _pruned_row(entry: dict, judge: Judge, rows: dict[str, TaskRows], tasks: list[str]) -> dict:
    """A candidate pruned part-way (lf_wrap.search.pruning): the tasks scored whole, and `value` its
    bound (the most it could have reached), not a ranked value."""
    candidate = from_dict(entry["candidate"])
    scores = {t: entry["metrics"][t][rows[t].data.definition.headline] if t in entry["metrics"] else None
              for t in tasks}
    retained = {t: (scores[t] - judge.ref.base[t]) / (judge.ref.specialist[t] - judge.ref.base[t])
                for t in judge.ref.tasks if scores[t] is not None}
    bound = judge.running_bound(scored_rows(entry))
    return {"label": candidate.label(), "key": entry["key"], "role": "candidate", "method": candidate.method,
            "weights": dict(zip(tasks, map(thaw, candidate.weights))), "density": candidate.density,
            "seed": candidate.seed, "scores": scores, "retained": retained, "worst": None, "mean": None,
            "lower_bound": None, "value": bound, "folds": [], "objectives": {}, "trials": [],
            "complexity": list(candidate.complexity()), "candidate": entry["candidate"],
            "pruned": {"bound": bound, "parts": entry.get("parts", [])}}


def rows(study, ledger: Ledger, judge: Judge, task_rows: dict[str, TaskRows],
         references: dict | None = None) -> list[dict]:
    """Every completed trial's candidate (one row per distinct candidate) and the reference
    merges, ranked best first (lf_wrap.search.objective.rank_key on the judge's value)."""
    from lf_wrap.search.optimiser import finished

    tasks = list(task_rows)
    table: dict[str, dict] = {}
    for trial in finished(study):
        key = trial.user_attrs.get("candidate")
        entry = ledger.get("search", key) if key else None
        if entry is None and key and ledger.partial("search", key) is not None:      # pruned
            entry = ledger.partial("search", key)
            table.setdefault(key, _pruned_row(entry, judge, task_rows, tasks))["trials"].append(trial.number)
            continue
        if entry is None:
            continue
        table.setdefault(key, _row(entry, judge, task_rows, tasks))["trials"].append(trial.number)
    for role, candidate in (references or {}).items():
        entry = ledger.get("search", key_of(candidate))
        if entry is not None:
            table.setdefault(entry["key"], _row(entry, judge, task_rows, tasks))["role"] = f"reference: {role}"
    ranked = sorted((r for r in table.values() if not r["pruned"]),
                    key=lambda r: rank_key(Gains(r["retained"], r["worst"], r["mean"]), tuple(r["complexity"]),
                                           r["value"]))
    ranked += sorted((r for r in table.values() if r["pruned"]),      # after every row scored whole
                     key=lambda r: (-r["value"] if r["value"] is not None else float("inf"), r["trials"]))
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    if judge.objective == "pareto":
        pareto.mark_front(ranked)
    return ranked


def best_row(table: list[dict]) -> dict:
    """The first row; with objective pareto, the first row on the Pareto front."""
    return next((r for r in table if r.get("front", True)), table[0])


def pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def leaderboard_markdown(table: list[dict], judge: Judge, tasks: list[str], layout: Layout | None = None) -> str:
    ref = judge.ref
    folds, front = bool(judge.folds), judge.objective == "pareto"
    scalar = "mean" if judge.objective == "mean" else "worst"
    head = ["rank", "candidate", "role"] + [f"{t} score" for t in tasks] + [f"{t} kept" for t in ref.tasks] + \
        ["worst", "mean", f"{scalar} {judge.quantile:.0%} bound"] + (["worst fold", "fold range"] if folds else []) + \
        (["front"] if front else []) + ["trials"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in table:
        role = r["role"] if not r["pruned"] else \
            f"pruned at {pct(r['value'])} or less after {', '.join(r['pruned']['parts'])}"
        cells = [str(r["rank"]), f"`{r['label']}`", role] + \
            ["-" if r["scores"][t] is None else f"{r['scores'][t]:.4f}" for t in tasks] + \
            [pct(r["retained"].get(t)) for t in ref.tasks] + [pct(r["worst"]), pct(r["mean"]), pct(r["lower_bound"])]
        if folds:
            cells += [pct(min(r["folds"])), f"{pct(min(r['folds']))} .. {pct(max(r['folds']))}"] if r["folds"] \
                else ["-", "-"]
        cells += ["yes" if r["front"] else ""] if front else []
        lines.append("| " + " | ".join(cells + [",".join(map(str, r["trials"])) or "-"]) + " |")
    base = ", ".join(f"{t} {ref.base[t]:.4f}" for t in tasks)
    own = ", ".join(f"{t} {ref.specialist[t]:.4f}" for t in tasks)
    what = "mean kept" if scalar == "mean" else "worst task kept"
    ranked_by = {"lower_bound": f"the {judge.quantile:.0%} lower bound of the {what} (a bootstrap quantile over "
                                f"{judge.resamples} resamples of the search rows)",
                 "worst_fold": f"the {what} on the candidate's worst fold of the search rows (a fold's gain: "
                               "candidate - base on its rows, over the specialist's gain on all search rows)",
                 "point": f"the {what}"}[judge.rank_by]
    notes = [f"Search rows. Base: {base}. Specialists on their own task: {own}.",
             "kept: (candidate - base) / (specialist - base) on that task; worst and mean over the counted tasks.",
             f"Ranked by {ranked_by}, then the mean, then the simpler merge."]
    if any(r["pruned"] for r in table):
        notes.append("pruned: scored on some parts of the search rows only, and dropped once the most it could "
                     "reach (its bound) was below the value needed to enter the top rows.held; listed "
                     "after every candidate scored whole, by that bound (lf_wrap.search.pruning).")
    notes += [f"Not counted: {why}" for why in ref.left_out.values()]
    blocks = "\n" + block_markdown(table[0], tasks, layout) if layout else ""
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n" + blocks


def leaderboard_csv(table: list[dict], tasks: list[str], layout: Layout | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "candidate", "role", "method", *weight_columns(tasks, layout), "density", "seed",
                     *[f"score_{t}" for t in tasks], *[f"retained_{t}" for t in tasks], "worst", "mean",
                     "lower_bound", "worst_fold", "folds", "front", "trials"])
    for r in table:
        role = "pruned" if r["pruned"] else r["role"]
        writer.writerow([r["rank"], r["label"], role, r["method"], *weight_values(r, tasks, layout),
                         r["density"], r["seed"], *[r["scores"][t] for t in tasks],
                         *[r["retained"].get(t) for t in tasks], r["worst"], r["mean"], r["lower_bound"],
                         min(r["folds"]) if r["folds"] else "", " ".join(f"{v:.6g}" for v in r["folds"]),
                         {True: "yes", False: "no"}.get(r.get("front"), ""), " ".join(map(str, r["trials"]))])
    return buffer.getvalue()


def final_markdown(final: dict, tasks: list[str], judge: Judge) -> str:

    label = final["labels"]["best"]
    s = final["scores"]

    def cell(name: str, t: str) -> str:
        value, (low, high) = s[name][t]["value"], s[name][t]["ci95"]
        return f"{value:.4f} [{low:.4f}, {high:.4f}]"

    def kept(name: str, t: str) -> str:
        g = final["retained"][name][t]
        return f"{pct(g['value'])} [{pct(g['ci95'][0])}, {pct(g['ci95'][1])}]" if g["ci95"] else pct(g["value"])

    compared = final.get("compared", MERGES)
    head = ["task", "metric", "base", "specialist", *compared, *(f"{name} kept" for name in compared)]
    notes = [f"- {note}" for note in final.get("notes", [])]
    lines = [final["verdict_sentence"], *(["", *notes] if notes else []),
             *(["", signal_markdown(final["signal"]["report"], "report")] if final.get("signal") else []), "",
             f"Report rows ({', '.join(f'{t} {n}' for t, n in final['rows'].items())}; none of them was searched on). "
             f"best: `{label}`; sum: every adapter at weight 1 (the study's 3-in-1); linear 0.5: each at 0.5"
             + ("; joint: one adapter trained on every task at once (the reference a merge is held to)."
                if JOINT in compared else "."), "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for t in tasks:
        lines.append(f"| {t} | {s['base'][t]['metric']} | {cell('base', t)} | {cell(f'specialist {t}', t)} | "
                     + " | ".join(cell(name, t) for name in compared) + " | "
                     + " | ".join(kept(name, t) for name in compared) + " |")
    summary = final["summary"]
    lines += ["", "Worst task kept: " + ", ".join(f"{name} {pct(summary[name]['worst'])}" for name in compared)
              + "; mean: " + ", ".join(f"{name} {pct(summary[name]['mean'])}" for name in compared) + ".",
              f"[low, high]: {final['bootstrap']['confidence']:.0%} bootstrap interval over the report rows "
              f"({final['bootstrap']['n_resamples']} resamples, seed {final['bootstrap']['seed']}); a retained "
              "gain's interval resamples base, specialist and merge together."]
    if final.get("versus_sum"):
        lines += ["", f"Best vs sum on the objective ({final['versus_sum']['metric']}, report rows of "
                      f"{', '.join(final['verdict_tasks'])}): {described(final['versus_sum'], percent=True)}.",
                  *smallest_sentence(final["versus_sum"])]
    for key in ("best_vs_sum", "best_vs_joint"):
        if final.get(key):
            lines += ["", best_vs_sentence(final[key])]
    lines += [f"\n{note}" for note in floor_note(final)]
    if final.get("families"):
        head = ["method", "its best", *(f"{t} kept" for t in tasks), "worst", "mean"]
        lines += ["", "The best of each merge method the search tried, on the same report rows:", "",
                  "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for method, f in final["families"].items():
            cells = []
            for t in tasks:
                g = f["retained"][t]
                cells.append(f"{pct(g['value'])} [{pct(g['ci95'][0])}, {pct(g['ci95'][1])}]" if g["ci95"]
                             else pct(g["value"]))
            lines.append(f"| {method} | `{f['label']}` | " + " | ".join(cells)
                         + f" | {pct(f['worst'])} | {pct(f['mean'])} |")
    if "held" in final:
        lines += ["", final["held_sentence"], "", "The top of the leaderboard on both sets of rows:", "",
                  held.markdown(final["held"], judge)]
    return "\n".join(lines) + "\n"


def best_vs_sentence(test: dict) -> str:
    """The metric's paired test of best against the sum merge (or the joint adapter) on the task best
    keeps least; its words are lf_wrap.search.report.verdict's (the p-value against the level)."""
    return (f"Best vs {test.get('other', 'sum')} on the task best keeps least ({test['task']}, {test['metric']}): "
            f"{described(test)}.")


def signal_markdown(tests: dict, where: str) -> str:
    """Each task's specialist against the base on these rows: the gain a merge can keep, if any."""
    lines = [f"Does each specialist beat the base on the {where} rows (the gain a merge keeps a share of)?", "",
             "| task | metric | base | specialist | difference | interval | p | beyond noise |",
             "|" + " --- |" * 8]
    for t, x in tests.items():
        low, high = x["interval"]
        lines.append(f"| {t} | {x['metric']} | {x['a']:.4f} | {x['b']:.4f} | {x['difference']:+.4f} | "
                     f"[{low:+.4f}, {high:+.4f}] | {x['p_value']:.3g} | {'yes' if x['gain'] else 'no'} |")
    first = next(iter(tests.values()))
    return "\n".join(lines) + (f"\n\nbeyond noise: the specialist is the better one and the paired bootstrap's p is "
                               f"below {first['level']:g}; interval: {first['confidence']:.0%}.")


def no_signal_markdown(final: dict) -> str:
    """final.md of a search stopped on the search rows: the verdict and the tests it rests on."""
    notes = "".join(f"\n{note}\n" for note in floor_note(final, "search"))
    return final["verdict_sentence"] + "\n\n" + signal_markdown(final["signal"]["search"], "search") + "\n" + notes


def write_all(out: Path, table: list[dict], judge: Judge, final: dict, tasks: list[str], folds: dict | None = None,
              multi: bool = False, layout: Layout | None = None) -> None:
    """`folds`: the manifest's record of the folds (rows.folds); `multi`: objective pareto; `layout`:
    the blocks of layer-wise weights (search.layerwise)."""
    ref = judge.ref
    front = [r for r in table if r.get("front")]
    more = "".join(["" if "held" not in final else "\n## On the report rows\n\n" + final["held_sentence"] + "\n\n"
                    + held.markdown(final["held"], judge),
                    "\n## Pareto front\n\n" + pareto.markdown(front, list(ref.tasks)) if multi else ""])
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(table, judge, tasks, layout) + more)
    atomic_write_text(out / "leaderboard.csv", leaderboard_csv(table, tasks, layout))
    atomic_write_json(out / "leaderboard.json", {"tasks": tasks, "counted": list(ref.tasks), "base": ref.base,
                                                 "specialist": ref.specialist, "left_out": ref.left_out,
                                                 "ranked_by": {"objective": judge.objective, "rank_by": judge.rank_by,
                                                               "quantile": judge.quantile,
                                                               "resamples": judge.resamples, "seed": judge.seed},
                                                 "folds": folds, "verdict": final.get("verdict"),
                                                 "verdict_sentence": final.get("verdict_sentence"),
                                                 "held": final.get("held"),
                                                 "held_sentence": final.get("held_sentence"),
                                                 "pareto_front": [r["label"] for r in front] if multi else None,
                                                 **({"blocks": layout.record()} if layout else {}),
                                                 "rows": table})
    atomic_write_text(out / "final.md", final_markdown(final, tasks, judge))
    atomic_write_bytes(out / "chart.png", chart(table, final, tasks, layout=layout))
    if multi:
        atomic_write_bytes(out / "pareto.png", pareto.chart(table, list(ref.tasks), final["labels"]["best"]))
