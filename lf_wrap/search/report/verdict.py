"""The search's answer in one word (`final.verdict` in the manifest, the first sentence of the
command's summary and of final.md), chosen by `decide` alone:

    no_signal      a counted task's specialist does not beat the base beyond noise on the rows used
                   (the search rows, before any candidate is scored; the report rows, before the
                   verdict): retained gain is a ratio of noise to noise there, nothing can be confirmed
    not_confirmed  the winner did not hold on the report rows (lf_wrap.search.report.held), or its
                   objective does not beat the sum merge's there beyond noise, or it has every weight
                   at 0 (it is the base model, no merge: there is nothing to write)
    confirmed      it held, and it beats the sum merge on the report rows beyond noise

"Beyond noise" is lf_wrap.search.report.noise's one rule. Only `confirmed` writes `best/`. The sum
merge is the bar because it is what one gets without a search (LLaMA-Factory's export of every
adapter at weight 1)."""

from __future__ import annotations

from lf_wrap.core.errors import UserError
from lf_wrap.search.report.noise import Noise, described, signal, signal_sentence, weak
from lf_wrap.tasks import Task

CONFIRMED, NOT_CONFIRMED, NO_SIGNAL = "confirmed", "not_confirmed", "no_signal"
VERDICTS = (CONFIRMED, NOT_CONFIRMED, NO_SIGNAL)


def search_rows_gate(noise: Noise, definitions: dict[str, Task], tasks: list[str], base: dict, specialist: dict,
                     objective: str) -> tuple[dict, dict[str, str]]:
    """Signal before ratio: each task's specialist against the base on the search rows, before any
    candidate is scored. Returns the tests and, for each task without a gain beyond noise, why.
    `objective: pareto` with fewer than two tasks left is a UserError (one objective per task)."""
    tests = signal(noise, definitions, tasks, base, specialist)
    without = {t: signal_sentence(t, tests[t], "search") for t in weak(tests)}
    if objective == "pareto" and len(tasks) - len(without) < 2:
        counted = ", ".join(t for t in tasks if t not in without) or "none"
        raise UserError(f"objective: pareto needs two counted tasks or more, and on the search rows the tasks "
                        f"whose specialist beats the base beyond resampling noise are: {counted} "
                        f"({'; '.join(without.values())}): use objective: worst, or give each adapter its own task")
    return tests, without


def decide(signal_tests: dict, held: bool | None, versus_sum: dict | None, is_base: bool = False) -> str:
    """The verdict, from the report rows: `signal_tests` each counted task's specialist against the
    base; `held` whether the winner held (lf_wrap.search.report.held); `versus_sum` the winner's objective
    against the sum merge's (Noise.objective, b the winner); `is_base` the winner has every weight at 0."""
    if not signal_tests or weak(signal_tests):
        return NO_SIGNAL
    if is_base or held is not True or versus_sum is None or not (versus_sum["beyond"] and versus_sum["difference"] > 0):
        return NOT_CONFIRMED
    return CONFIRMED


USE_INSTEAD = ("use the sum merge (every adapter at weight 1, what LLaMA-Factory's export does: "
               "`lf-wrap merge adapters ADAPTER... --method sum`), or each specialist on its own task")


def report_verdict(noise: Noise, definitions: dict[str, Task], counted: list[str], per_row: dict, final: dict,
                   mean: bool, without_signal: str = "stop", best_is_base: bool = False) -> dict:
    """The verdict on the report rows, with what it rests on. `per_row`: name (base, specialist
    <task>, best, sum, ...) -> task -> per-row scores; `final`: the figures so far (labels,
    summary, held); `counted`: the tasks the search ranked on; `best_is_base`: the winner has
    every weight at 0 (the base model: the best of a space where every merge loses some task)."""
    base = per_row["base"]
    own = {t: per_row[f"specialist {t}"][t] for t in counted}
    tests = signal(noise, definitions, counted, base, own)
    without = {t: signal_sentence(t, tests[t], "report") for t in weak(tests)}
    usable = [t for t in counted if t not in without]
    others = bool(without) and bool(usable) and without_signal == "rank_the_others"
    versus = (noise.objective(definitions, usable, base, own, per_row["sum"], per_row["best"], mean)
              if usable and (not without or others) else None)
    winner = next((r for r in final.get("held") or () if r["label"] == final["labels"]["best"]), None)
    word = decide({t: tests[t] for t in usable} if others else tests, winner and winner["held"], versus,
                  best_is_base)
    record = {"verdict": word, "signal": {"report": tests}, "versus_sum": versus, "verdict_tasks": usable,
              "supported": supported(final, mean),
              "notes": [f"{t}: left out of the verdict, {why} (verdict.without_signal: rank_the_others)"
                        for t, why in without.items()] if others else []}
    record["verdict_sentence"] = verdict_sentence(word, final["labels"]["best"], winner, versus, record["supported"],
                                                  without, best_is_base)
    return record


def supported(final: dict, mean: bool) -> dict | None:
    """The merge that keeps the most on the report rows among those scored there (the sum merge,
    linear 0.5, the top of the leaderboard, each method's best; not the joint adapter, which is
    no merge); a tie goes to the sum merge."""
    key = "mean" if mean else "worst"
    roles = {"best": "the search's winner", "sum": "sum", "linear 0.5": "every adapter at 0.5"}
    # final["labels"] names the merges; the joint adapter (search.joint), no merge, is not among them
    found = [(s[key], name == "sum", final["labels"][name], roles.get(name, name))
             for name, s in final["summary"].items() if s[key] is not None and name in final["labels"]]
    found += [(r["report"], False, r["label"], f"#{r['rank']} on the search rows") for r in final.get("held") or ()
              if r["report"] is not None]
    found += [(f[key], False, f["label"], f"{method}'s best") for method, f in (final.get("families") or {}).items()
              if f[key] is not None]
    if not found:
        return None
    value, _, label, role = max(found, key=lambda x: (round(x[0], 12), x[1]))
    sum_value = final["summary"]["sum"][key]
    return {"label": label, "role": role, "value": value, "what": "mean kept" if mean else "worst task kept",
            "sum": sum_value}


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def verdict_sentence(word: str, best: str, winner: dict | None, versus: dict | None, support: dict | None,
                     without: dict[str, str], best_is_base: bool = False) -> str:
    """The first sentence of the summary and of final.md, and what to use instead."""
    if word == NO_SIGNAL:
        return no_signal_sentence(without, "report", stop=False)
    if word == CONFIRMED:
        return (f"Verdict: confirmed. `{best}` held on the report rows and beats the sum merge there ("
                f"{versus['metric']} {described(versus, percent=True)}); it is the merge written to best/.")
    if best_is_base:
        why = (f"`{best}`, the best on the search rows, has every weight at 0: it is the base model, not a merge "
               "(every merge scored there lost more of some task's gain than the base, which keeps none of it)")
    elif winner is None:
        why = f"`{best}`, the best on the search rows, was not checked on the report rows"
    elif not winner["held"]:
        why = (f"`{best}`, the best on the search rows, did not hold on the report rows (it keeps "
               f"{_pct(winner['report'])} there, below the {_pct(winner['ranked_value'])} it was ranked by)")
    else:
        why = (f"`{best}` held on the report rows but does not beat the sum merge there ("
               + (f"{versus['metric']} {described(versus, percent=True)}" if versus else "not tested") + ")")
    text = f"Verdict: not confirmed. {why}; nothing was confirmed, and no model is written to best/."
    if support is not None:
        if support["role"] == "sum":
            text += f" On the report rows the sum merge keeps the most ({support['what']} {_pct(support['value'])})."
        else:
            text += (f" On the report rows `{support['label']}` ({support['role']}) keeps the most "
                     f"({support['what']} {_pct(support['value'])}, the sum merge {_pct(support['sum'])}), "
                     "a difference nothing here confirms.")
    return text + f" Instead, {USE_INSTEAD}."


def no_signal_sentence(without: dict[str, str], where: str, stop: bool) -> str:
    """Verdict no_signal: which task has no gain beyond noise, on which rows, and what to do."""
    why = "; ".join(without.values())
    stopped = (" the search stopped before scoring any candidate (verdict.without_signal: stop; rank_the_others "
               "ranks on the other tasks)," if stop else "")
    rows = "rows.search" if where == "search" else "rows.report"
    return (f"Verdict: no signal. {why[0].upper() + why[1:]}, so the share of its gain a merge keeps is not "
            f"defined there and no merge can be confirmed;{stopped} no model is written to best/. Instead, "
            f"use each specialist on its own task, or give the task more rows ({rows}) or a metric that is not at "
            "its floor.")
