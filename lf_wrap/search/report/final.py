"""The end of a search: the figures it reports, its verdict, best/ and the manifest.

The figures: the best candidate, the study-style sum merge and linear 0.5 scored on the report
rows (never the rows the best was chosen on), beside the base and the specialists on the same
rows, each retained gain with its bootstrap interval (objective.retained_gain: base, specialist
and candidate resampled together), at the confidence of the noise level (lf_wrap.search.report.noise).
Then the verdict (lf_wrap.search.report.verdict): best/ written when it is confirmed, an earlier best/
removed when not; or, stopped on the search rows without signal, the tests that stopped it."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from lf_wrap.core.files import atomic_write_json, atomic_write_text

from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS
from lf_wrap.scoring.family import StatsFamily
from lf_wrap.search.report import held, leaderboard, verdict
from lf_wrap.search.candidates import JOINT, Candidate
from lf_wrap.search.folder import MANIFEST
from lf_wrap.search.layerwise import layout
from lf_wrap.search.objective import Judge, retained_gain
from lf_wrap.search.report.noise import Noise, floor_note, signal_floor, smallest_sentence
from lf_wrap.search.scorer import Scorer, from_dict


log = logging.getLogger(__name__)

MERGES = leaderboard.MERGES
JOINT_CANDIDATE = Candidate(JOINT, ())


@dataclass
class SearchResult:
    out: Path
    best: dict | None          # None: the search stopped before ranking (verdict no_signal on the search rows)
    final: dict
    scored: int
    reused: int
    merge_out: Path | None     # best/, written only when the verdict is confirmed


def _say(message: str) -> None:
    log.info(f"search: {message}")


def references(n_adapters: int) -> dict[str, Candidate]:
    """The merges every search is compared with: the study's 3-in-1 (every adapter at weight 1,
    what LLaMA-Factory's export does) and linear at 0.5 each."""
    return {"sum": Candidate("linear", (1.0,) * n_adapters), "linear 0.5": Candidate("linear", (0.5,) * n_adapters)}


def specialist(index: int, n_adapters: int) -> Candidate:
    """Adapter `index` alone at weight 1: the specialist merged into the base."""
    return Candidate("linear", tuple(1.0 if j == index else 0.0 for j in range(n_adapters)))


def final_figures(scorer: Scorer, tasks: list[str], best: dict, noise: Noise, top: list[dict] = (),
                  judge: Judge | None = None, families: list[dict] = (), without_signal: str = "stop") -> dict:
    """`top`: the leaderboard's first rows, each also scored on the report rows (lf_wrap.search.report.held);
    `families`: the best row of each merge method the search tried (scored there too). Intervals
    are at confidence 1 - the noise level; the verdict is lf_wrap.search.report.verdict's. With a joint
    adapter (scorer.joint), it is scored beside the merges and best is tested against it too."""
    rows = scorer.rows
    n = len(tasks)
    compared = [*MERGES, JOINT] if scorer.joint is not None else list(MERGES)
    names = ["base", *(f"specialist {t}" for t in tasks), "best", *references(n), *compared[len(MERGES):]]
    candidates = [None, *(specialist(i, n) for i in range(n)), from_dict(best["candidate"]), *references(n).values(),
                  *([JOINT_CANDIDATE] if scorer.joint is not None else [])]
    entries = dict(zip(names, scorer.score_many("report", candidates)))
    draw = noise.bootstrap
    scores: dict[str, dict] = {name: {} for name in entries}
    retained: dict[str, dict] = {name: {} for name in compared}
    per_row = {name: {t: e["per_row"][t]["row_scores"] for t in tasks} for name, e in entries.items()}
    for task in tasks:
        definition = rows[task].data.definition
        family, metric = definition.family, definition.headline
        for name, values in per_row.items():
            scores[name][task] = {"metric": metric, "value": family.value(metric, values[task]),
                                  "ci95": list(family.interval(metric, values[task], draw))}
        for name in retained:
            retained[name][task] = retained_gain(definition, per_row["base"][task],
                                                 per_row[f"specialist {task}"][task], per_row[name][task], draw)
    summary = {name: _worst_and_mean(per_task) for name, per_task in retained.items()}
    labels = {"best": best["label"], **{name: c.label() for name, c in references(n).items()}}
    out = {"rows": {t: len(rows[t].report) for t in tasks}, "labels": labels, "compared": compared,
           "scores": scores, "retained": retained, "summary": summary,
           "bootstrap": {"n_resamples": draw.resamples, "seed": draw.seed, "confidence": draw.confidence},
           "level": noise.level, "best_vs_sum": _best_vs(rows, entries, retained["best"], noise, "sum"),
           "floor": _at_floor(rows, scores, tasks)}
    if scorer.joint is not None:
        out["best_vs_joint"] = _best_vs(rows, entries, retained["best"], noise, JOINT)
    if len(families) > 1:
        found = scorer.score_many("report", [from_dict(r["candidate"]) for r in families])
        out["families"] = {r["method"]: _family(r["label"], entry, entries, rows, tasks, draw)
                           for r, entry in zip(families, found)}
    if judge is not None and top:
        top = list(top) + ([] if any(r["label"] == best["label"] for r in top) else [best])
        found = scorer.score_many("report", [from_dict(r["candidate"]) for r in top])    # best's is reused
        specialists = {t: entries[f"specialist {t}"] for t in tasks}
        gains = [held.report_gains(judge, rows, entries["base"], specialists, entry) for entry in found]
        out["held"] = held.held_rows(top, gains, judge)
        out["held_sentence"] = held.sentence(out["held"], best["label"], judge)
    counted = list(judge.ref.tasks) if judge is not None else list(tasks)
    mean = judge is not None and judge.objective == "mean"
    out.update(verdict.report_verdict(noise, {t: rows[t].data.definition for t in tasks}, counted, per_row, out,
                                      mean, without_signal, from_dict(best["candidate"]).is_base()))
    return out


def _at_floor(rows, scores: dict, tasks: list[str]) -> dict[str, dict]:
    """task -> {"metric", "models"}: the models whose corpus metric (BLEU, chrF) is exactly 0 on the
    report rows, a floor a merge cannot fall below, where differences vanish."""
    out = {}
    for t in tasks:
        if isinstance(rows[t].data.definition.family, StatsFamily):
            zero = [name for name, per_task in scores.items() if per_task[t]["value"] == 0]
            if zero:
                out[t] = {"metric": rows[t].data.definition.headline, "models": zero}
    return out


def _best_vs(rows, entries: dict, best_retained: dict, noise: Noise, other: str) -> dict | None:
    """The paired test of best against `other` (sum, joint) on the task where best keeps least (the
    report rows), on that task's headline metric: b is best, a the other."""
    kept = {t: g["value"] for t, g in best_retained.items() if g["value"] is not None}
    if not kept:
        return None
    task = min(kept, key=kept.get)
    test = noise.paired(rows[task].data.definition, entries[other]["per_row"][task]["row_scores"],
                        entries["best"]["per_row"][task]["row_scores"])
    return {"task": task, "other": other, **test}


def _family(label: str, entry: dict, entries: dict, rows, tasks: list[str], draw) -> dict:
    """One method's best row on the report rows: each task's retained gain with its interval."""
    retained = {t: retained_gain(rows[t].data.definition, entries["base"]["per_row"][t]["row_scores"],
                                 entries[f"specialist {t}"]["per_row"][t]["row_scores"],
                                 entry["per_row"][t]["row_scores"], draw) for t in tasks}
    return {"label": label, "retained": retained, **_worst_and_mean(retained)}


def _worst_and_mean(retained: dict) -> dict:
    """The worst and the mean of a merge's retained gains over the tasks that have one."""
    values = [g["value"] for g in retained.values() if g["value"] is not None]
    return {"worst": min(values) if values else None, "mean": sum(values) / len(values) if values else None}


def family_bests(table: list[dict]) -> list[dict]:
    """The first (best) leaderboard row of each merge method, in the leaderboard's order."""
    firsts: dict[str, dict] = {}
    for row in table:
        if not row.get("pruned"):      # a pruned row has a bound, not a value
            firsts.setdefault(row["method"], row)
    return list(firsts.values())


def write_best(out: Path, plan, best: dict, output_form: str, card: str | None = None) -> Path:
    """The best candidate written by the merge stage itself (its manifest, its checks, its model
    card, which ends with `card`: the search's part, best_card)."""
    from lf_wrap.merge.run import merge

    c = best["candidate"]
    config = MergeConfig(adapters=[a.given for a in plan.adapters], base=plan.config.base, method=c["method"],
                         space=c.get("space", "full"), weights=c["weights"], density=c["density"], seed=c["seed"],
                         out=str(out / "best"),
                         **{"as": output_form})
    return merge(config, force=(out / "best").exists(), card_extra=card).out


def best_card(recipe, out: Path, final: dict, tasks: list[str], judge: Judge) -> str:
    """The search's part of best/'s model card: the space it searched, and final.md's report-row table."""
    w, d = recipe.weights, recipe.density
    space = [f"methods {', '.join(recipe.methods)}", f"weights {w.low:g}..{w.high:g}"
             + (f" in steps of {w.step:g}" if w.step else ""),
             *([f"density {d.low:g}..{d.high:g}"] if any(METHODS[m].density for m in recipe.methods) else []),
             *([f"{recipe.blocks} blocks of layers"] if recipe.blocks > 1 else []),
             *(["attention and MLP weighted apart"] if recipe.per_kind else [])]
    return "\n".join([
        "## Search", "",
        f"Chosen by `lf-wrap merge search` (folder `{out}`) among {recipe.budget} candidates, {recipe.sampler} "
        f"sampler, objective {recipe.objective}, ranked by {held.ranked_by(judge)} on the search rows. "
        f"Space: {'; '.join(space)}.", "",
        "## Report rows", "", leaderboard.final_markdown(final, tasks, judge).strip()])


def remove_stale_best(out: Path) -> str | None:
    """Nothing confirmed: an earlier run's best/ (checked before anything was scored to hold only
    the merge lf-wrap wrote, lf_wrap.search.folder.check_best) must not stay, looking like this
    run's recommendation; it is removed, and what it held is returned (its merge_config.yaml
    writes it again with `lf-wrap merge recipe`)."""
    best = out / "best"
    if not best.exists():
        return None
    from lf_wrap.core.manifest import read_manifest_file
    from lf_wrap.merge.checks import MANIFEST as MERGE_MANIFEST

    earlier = read_manifest_file(best / MERGE_MANIFEST)
    what = f"{earlier.get('method')} {earlier.get('weights')}"
    shutil.rmtree(best)
    return what


def summary(result) -> str:
    """What the command prints: the verdict first, then best vs the reference merges on the report
    rows, task by task."""
    final = result.final
    lines = [final["verdict_sentence"]]
    if final.get("removed"):
        lines.append(f"removed {result.out}/best (an earlier run's merge, {final['removed']}): not this run's "
                     "recommendation")
    if result.best is None:            # stopped on the search rows: nothing was ranked
        lines += floor_note(final, "search")
        lines.append(f"{result.scored} scores computed, {result.reused} reused; report: {result.out}/final.md")
        return "\n".join(lines)
    if result.merge_out is not None:
        lines.append(f"best merge: {result.best['label']} -> {result.merge_out}")
    else:
        lines.append(f"best on the search rows (not confirmed, not written): {result.best['label']}")
    compared = final.get("compared", MERGES)
    lines += [f"retained gain on the report rows ({', '.join(f'{t} {n} rows' for t, n in final['rows'].items())}):",
              f"  {'task':<12}" + "".join(f"{name:>26}" for name in compared)]
    for task in final["rows"]:
        cells = []
        for name in compared:
            g = final["retained"][name][task]
            text = leaderboard.pct(g["value"])
            if g["ci95"]:
                text += f" [{g['ci95'][0]:.0%}, {g['ci95'][1]:.0%}]"
            cells.append(text)
        lines.append(f"  {task:<12}" + "".join(f"{c:>26}" for c in cells))
    for what in ("worst", "mean"):
        cells = "".join(f"{leaderboard.pct(final['summary'][n][what]):>26}" for n in compared)
        lines.append(f"  {what + ' task' if what == 'worst' else what:<12}" + cells)
    for key in ("best_vs_sum", "best_vs_joint"):
        if final.get(key):
            lines.append(leaderboard.best_vs_sentence(final[key]))
    lines += smallest_sentence(final.get("versus_sum")) + final.get("notes", []) + floor_note(final)
    lines.append(f"{result.scored} scores computed, {result.reused} reused; leaderboard: {result.out}/leaderboard.md, "
                 f"report rows: {result.out}/final.md, chart: {result.out}/chart.png")
    return "\n".join(lines)


def from_manifest(out: Path, finished: dict, scorer: Scorer) -> SearchResult:
    """Another worker of a shared search finished it: its manifest is the answer."""
    _say(f"the search was finished by worker {finished.get('finished_by')}: nothing left to do here")
    merge_out = Path(finished["best_merge"]) if finished.get("best_merge") else None
    return SearchResult(out, finished.get("best"), finished["final"], scorer.scored, scorer.reused, merge_out)


def stop_without_signal(recipe, out: Path, tests: dict, without: dict, scorer: Scorer, record, body) -> SearchResult:
    """A task has no gain beyond noise on the search rows and the recipe says stop: no candidate
    is scored; final.md and the manifest say why, and an earlier best/ is removed."""
    final = {"verdict": verdict.NO_SIGNAL, "where": "search", "signal": {"search": tests},
             "level": next(iter(tests.values()))["level"], "removed": remove_stale_best(out),
             "floor": signal_floor(tests, {t: r.data.definition for t, r in scorer.rows.items()})}
    final["verdict_sentence"] = verdict.no_signal_sentence(without, "search", stop=True)
    atomic_write_text(out / "final.md", leaderboard.no_signal_markdown(final))
    body.update({"trials": 0, "scored": scorer.scored, "reused": scorer.reused, "best": None, "best_merge": None,
                 "final": final})
    record.finish()
    atomic_write_json(out / MANIFEST, record.manifest(body))
    return SearchResult(out, None, final, scorer.scored, scorer.reused, None)


def finish(recipe, out, tasks, rows, scorer, noise, record, body, crew, study, judge) -> SearchResult:
    """The budget is complete: the leaderboard, the report rows, the verdict, best/ when it is
    confirmed, the manifest (once, by one worker of a shared search)."""
    n = len(tasks)
    scorer.score_many("search", list(references(n).values()))
    table = leaderboard.rows(study, scorer.ledger, judge, rows, references(n))
    best = leaderboard.best_row(table)
    _say(f"best on the search rows: {best['label']} ({held.ranked_by(judge)} {best['value']:.1%}); scoring it, "
         f"the next of the top {recipe.rows.held} and the reference merges on the report rows")
    final = final_figures(scorer, tasks, best, noise, table[:recipe.rows.held], judge, family_bests(table),
                          recipe.verdict.without_signal)
    final["notes"] = [f"Not counted on the search rows: {why}" for why in judge.ref.left_out.values()] + final["notes"]
    if final["verdict"] == verdict.CONFIRMED:
        merge_out = write_best(out, scorer.plan, best, recipe.output, best_card(recipe, out, final, tasks, judge))
    else:                              # nothing confirmed: no model in best/, an earlier one removed
        merge_out, final["removed"] = None, remove_stale_best(out)
    leaderboard.write_all(out, table, judge, final, tasks, body.get("folds"), recipe.objective == "pareto",
                          layout=layout(recipe, scorer.plan))
    body.update({"trials": len(study.trials), "scored": scorer.scored, "reused": scorer.reused,
                 "from_eval": scorer.from_eval, "generated_rows": dict(scorer.generated),
                 "engine_replicas": scorer.replicas,
                 "engine_start_seconds": scorer.engine_start_seconds,
                 "generate_seconds": round(scorer.generate_seconds, 2), "best": best,
                 "best_merge": str(merge_out) if merge_out else None,
                 "final": final})
    if crew.shared:
        body.update(finished_by=crew.id, scores_by_worker=crew.scores_by_worker(scorer.ledger))
    record.finish()
    atomic_write_json(out / MANIFEST, record.manifest(body))
    return SearchResult(out, best, final, scorer.scored, scorer.reused, merge_out)
