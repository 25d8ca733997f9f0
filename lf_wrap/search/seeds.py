"""`seeds: [..]`: the same search once per seed, in one folder. How much of a winner is the
sampler's luck? Each seed's search is a whole search of its own in `out`/seed-<s>/ (its journal,
leaderboard, report rows, verdict, best/), and they share one score ledger, `out`/scores.jsonl: a
candidate one seed scored (the base, the specialists, the reference merges, a point two samplers
both ask) is reused by the others, never generated again (its identity holds no seed).
`out`/final.md lists each seed's winner, its worst task and mean kept on the report rows, and the
spread over the seeds (highest minus lowest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_json, atomic_write_text
from lf_wrap.search.report.final import SearchResult
from lf_wrap.search.ledger import LEDGER
from lf_wrap.search.recipe import SearchRecipe

FINAL = "final.md"


@dataclass
class SeedsResult:
    out: Path
    runs: dict[int, SearchResult]
    table: list[dict]
    spread: dict


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def search_seeds(recipe: SearchRecipe, recipe_text: str, force: bool = False,
                 recipe_path: Path | None = None) -> SeedsResult:
    """Each seed's search in turn (lf_wrap.search.run.search), then out/final.md and out/seeds.json."""
    from lf_wrap.search.run import search

    out = Path(recipe.out)
    if (out / "manifest.json").exists():
        raise UserError(f"out {out} holds a single search; seeds write one folder per seed (seed-<s>/) beside a "
                        "shared scores.jsonl: choose another out")
    if force and (out / LEDGER).is_file():
        (out / LEDGER).unlink()                # --force: every seed starts over, the shared scores too
    runs = {}
    for seed in recipe.seeds:
        one = recipe.model_copy(update={"seed": seed, "seeds": None, "out": out / f"seed-{seed}"})
        runs[seed] = search(one, recipe_text, force=force, recipe_path=recipe_path, scores=out)
    table = [_row(seed, result) for seed, result in runs.items()]
    spread = {key: _spread([r[key] for r in table]) for key in ("worst", "mean")}
    atomic_write_text(out / FINAL, markdown(table, spread))
    atomic_write_json(out / "seeds.json", {"seeds": list(recipe.seeds), "runs": table, "spread": spread})
    return SeedsResult(out, runs, table, spread)


def _row(seed: int, result: SearchResult) -> dict:
    final = result.final
    best = (final.get("summary") or {}).get("best") or {}
    versus = final.get("best_vs_sum") or {}
    return {"seed": seed, "folder": str(result.out), "winner": result.best["label"] if result.best else None,
            "verdict": final.get("verdict"), "worst": best.get("worst"), "mean": best.get("mean"),
            "weakest": versus.get("task"), "p_vs_sum": versus.get("p_value"),
            "difference_vs_sum": versus.get("difference"), "scored": result.scored, "reused": result.reused}


def _spread(values: list) -> dict | None:
    known = [v for v in values if v is not None]
    return {"low": min(known), "high": max(known), "spread": max(known) - min(known)} if known else None


def markdown(table: list[dict], spread: dict) -> str:
    lines = ["Each seed's search (its own folder, one shared score ledger): the winner on the search rows, and "
             "what it keeps on the report rows.", "",
             "| seed | winner | verdict | worst task kept (report rows) | mean kept (report rows) | "
             "against the sum merge on the task it keeps least | scored | reused |",
             "|" + " --- |" * 8]
    for r in table:
        versus = (f"{r['weakest']}: {r['difference_vs_sum']:+.4f}, p = {r['p_vs_sum']:.3g}" if r.get("weakest")
                  else "n/a")
        lines.append(f"| {r['seed']} | `{r['winner']}` | {r['verdict']} | {_pct(r['worst'])} | {_pct(r['mean'])} | "
                     f"{versus} | {r['scored']} | {r['reused']} |")
    lines += ["", spread_sentence(table, spread)]
    return "\n".join(lines) + "\n"


def spread_sentence(table: list[dict], spread: dict) -> str:
    winners = {r["winner"] for r in table}
    same = "every seed found the same winner" if len(winners) == 1 else f"{len(winners)} different winners"
    parts = [f"{name} {_pct(s['low'])} to {_pct(s['high'])} (spread {_pct(s['spread'])})"
             for name, s in (("worst task kept", spread["worst"]), ("mean kept", spread["mean"])) if s]
    return f"Over {len(table)} seeds, {same}; on the report rows: " + ("; ".join(parts) or "n/a") + "."


def summary(result: SeedsResult) -> str:
    """What the command prints for a search with seeds."""
    lines = [f"seed {r['seed']}: {r['winner']} ({r['verdict']}); report rows: worst task kept {_pct(r['worst'])}, "
             f"mean {_pct(r['mean'])}; {r['scored']} scores computed, {r['reused']} reused" for r in result.table]
    return "\n".join(lines + [spread_sentence(result.table, result.spread), f"report: {result.out}/{FINAL}"])
