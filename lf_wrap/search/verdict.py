"""The search's answer in one word, and the one rule for "beyond resampling noise".

Noise. A paired test of b against a (the eval's: the task family's paired bootstrap, both systems
resampled on the same rows, sacrebleu's p-value) is *beyond resampling noise* when its p-value is
below `level` (the recipe's `verdict.level`; default 1 - the eval recipe's bootstrap.confidence,
0.05). The interval printed beside it is taken at confidence 1 - level. The words come from the
p-value alone, through `beyond` and `noise_words`, so no sentence can say "within noise" beside a
p-value below the level (the first real-text search printed "p = 0.00599 (within resampling
noise)": its words came from the interval, which touched 0).

Verdict (`final.verdict` in the manifest, the first sentence of the command's summary and of
final.md), chosen by `decide` alone:

    no_signal      a counted task's specialist does not beat the base beyond noise on the rows used
                   (the search rows, before any candidate is scored; the report rows, before the
                   verdict): retained gain is a ratio of noise to noise there, nothing can be confirmed
    not_confirmed  the winner did not hold on the report rows (lf_wrap.search.held), or its
                   objective does not beat the sum merge's there beyond noise
    confirmed      it held, and it beats the sum merge on the report rows beyond noise

Only `confirmed` writes `best/`. The sum merge is the bar because it is what one gets without a
search (LLaMA-Factory's export of every adapter at weight 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from lf_wrap.scoring.bootstrap import Bootstrap, p_value, percentile_interval
from lf_wrap.search.objective import retained_gain_resamples
from lf_wrap.tasks import Task

CONFIRMED, NOT_CONFIRMED, NO_SIGNAL = "confirmed", "not_confirmed", "no_signal"
VERDICTS = (CONFIRMED, NOT_CONFIRMED, NO_SIGNAL)
MIN_USABLE = 40       # resamples where every specialist beats the base: fewer, and the objective is not tested


@dataclass(frozen=True)
class Noise:
    """One level for every noise sentence of a search; the bootstrap of the eval recipe at the
    matching confidence."""

    level: float
    bootstrap: Bootstrap

    @classmethod
    def of(cls, level: float | None, bootstrap: Bootstrap) -> "Noise":
        level = round(1 - bootstrap.confidence, 12) if level is None else level
        return cls(level, replace(bootstrap, confidence=1 - level))

    def beyond(self, test: dict) -> bool:
        """The one rule: a difference is beyond resampling noise when its p-value is below the level."""
        return test.get("p_value") is not None and test["p_value"] < self.level

    def paired(self, definition: Task, rows_a: Sequence[dict], rows_b: Sequence[dict]) -> dict:
        """b against a on the task's headline metric, on the same rows: {"metric", "a", "b",
        "difference", "interval" (at 1 - level), "confidence", "p_value", "beyond", "rows"}."""
        test = definition.family.paired(definition.headline, rows_a, rows_b, self.bootstrap)
        return self._record({"metric": definition.headline, "a": test["a"], "b": test["b"],
                             "difference": test["difference"], "interval": list(test["ci95"]),
                             "p_value": test["p_value"], "rows": len(rows_a)})

    def _record(self, test: dict) -> dict:
        return {**test, "confidence": self.bootstrap.confidence, "level": self.level, "beyond": self.beyond(test)}

    def objective(self, definitions: dict[str, Task], tasks: Sequence[str], base: dict, specialist: dict,
                  a: dict, b: dict, mean: bool) -> dict:
        """Merge b against merge a on the objective (each task's retained gain, the worst or the
        mean over `tasks`), resampled as the eval resamples each task's rows (base, specialist and
        both merges on one draw per task). The p-value is the same paired bootstrap's, on the
        objective. Resamples where a specialist does not beat the base are left out (counted)."""
        per_task = {t: [retained_gain_resamples(definitions[t], base[t], specialist[t], m[t], self.bootstrap)
                        for m in (a, b)] for t in tasks}
        draws_a = np.vstack([per_task[t][0] for t in tasks])
        draws_b = np.vstack([per_task[t][1] for t in tasks])
        usable = ~(np.isnan(draws_a).any(axis=0) | np.isnan(draws_b).any(axis=0))
        pick = (lambda x: x.mean(axis=0)) if mean else (lambda x: x.min(axis=0))
        points = []
        for m in (a, b):
            kept = []
            for t in tasks:
                family, metric = definitions[t].family, definitions[t].headline
                s_base, s_spec = family.value(metric, base[t]), family.value(metric, specialist[t])
                kept.append((family.value(metric, m[t]) - s_base) / (s_spec - s_base))
            points.append(sum(kept) / len(kept) if mean else min(kept))
        test = {"metric": "mean kept" if mean else "worst task kept", "a": points[0], "b": points[1],
                "difference": points[1] - points[0], "interval": None, "p_value": None,
                "rows": {t: len(base[t]) for t in tasks}, "resamples_used": int(usable.sum())}
        if usable.sum() >= MIN_USABLE:
            res_a, res_b = pick(draws_a[:, usable]), pick(draws_b[:, usable])
            test["interval"] = list(percentile_interval(res_b - res_a, self.bootstrap.confidence))
            test["p_value"] = p_value(points[0], points[1], res_a, res_b)
            test["smallest"] = self.smallest(res_a, res_b)
        return self._record(test)

    def smallest(self, resampled_a: np.ndarray, resampled_b: np.ndarray) -> float | None:
        """The smallest difference these rows could have confirmed, at the spread they show: the
        paired p-value, (1 + #{e_i > |d|}) / (N + 1) with e_i = |d_i| - mean |d_j|, falls below the
        level once |d| reaches the (K+1)-th largest e_i, K = ceil(level (N + 1) - 1) - 1. A true
        difference of that size is confirmed about half the time (docs/search.md: the power)."""
        spread = np.abs(resampled_b - resampled_a)
        excess = np.sort(spread - spread.mean())[::-1]
        k = int(np.ceil(self.level * (len(excess) + 1) - 1 - 1e-9)) - 1
        return float(max(excess[k], 0.0)) if 0 <= k < len(excess) else None


def noise_words(test: dict) -> str:
    """The p-value against the level and what it means, in one clause: the only place a search
    says "beyond" or "within" resampling noise."""
    if test.get("p_value") is None:
        return (f"not tested: fewer than {MIN_USABLE} resamples where every specialist beats the base, "
                "so not beyond resampling noise")
    p, level = test["p_value"], test["level"]
    shown = f"{p:.3g}"
    if (float(shown) < level) != test["beyond"]:      # 0.04996 is not printed as 0.05 < 0.05
        shown = f"{p:.6g}"
    if test["beyond"]:
        return f"paired bootstrap p = {shown} < {level:g}: beyond resampling noise"
    return f"paired bootstrap p = {shown}, not below {level:g}: within resampling noise"


def described(test: dict, percent: bool = False) -> str:
    """'b against a, difference d [low, high] (95% interval), paired bootstrap p = ... : beyond/within noise'."""
    f = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.4f}")
    signed = (lambda v: f"{v:+.1%}") if percent else (lambda v: f"{v:+.4f}")
    text = f"{f(test['b'])} against {f(test['a'])}, difference {signed(test['difference'])}"
    if test.get("interval"):
        low, high = test["interval"]
        text += f" [{signed(low)}, {signed(high)}] ({test['confidence']:.0%} interval)"
    return f"{text}, {noise_words(test)}"


def signal(noise: Noise, definitions: dict[str, Task], tasks: Sequence[str], base: dict, specialist: dict) -> dict:
    """task -> the paired test of its specialist against the base on these rows; `gain` only when
    the specialist is the better one, beyond noise (a gain a merge can keep)."""
    out = {}
    for t in tasks:
        test = noise.paired(definitions[t], base[t], specialist[t])
        out[t] = {**test, "gain": test["beyond"] and test["difference"] > 0}
    return out


def weak(tests: dict) -> list[str]:
    """The tasks whose specialist does not beat the base beyond noise."""
    return [t for t, test in tests.items() if not test["gain"]]


def signal_sentence(task: str, test: dict, where: str) -> str:
    """Why a task has no gain to keep on these rows, with its test."""
    what = ("scores below the base" if test["beyond"] and test["difference"] <= 0
            else "does not beat the base beyond resampling noise")
    return f"on the {where} rows the specialist of {task} {what} ({test['metric']} {described(test)})"


def decide(signal_tests: dict, held: bool | None, versus_sum: dict | None) -> str:
    """The verdict, from the report rows: `signal_tests` each counted task's specialist against the
    base; `held` whether the winner held (lf_wrap.search.held); `versus_sum` the winner's objective
    against the sum merge's (Noise.objective, b the winner)."""
    if not signal_tests or weak(signal_tests):
        return NO_SIGNAL
    if held is not True or versus_sum is None or not (versus_sum["beyond"] and versus_sum["difference"] > 0):
        return NOT_CONFIRMED
    return CONFIRMED


USE_INSTEAD = ("use the sum merge (every adapter at weight 1, what LLaMA-Factory's export does: "
               "`lf-wrap merge adapters ADAPTER... --method sum`), or each specialist on its own task")


def report_verdict(noise: Noise, definitions: dict[str, Task], counted: list[str], per_row: dict, final: dict,
                   mean: bool, without_signal: str = "stop") -> dict:
    """The verdict on the report rows, with what it rests on. `per_row`: name (base, specialist
    <task>, best, sum, ...) -> task -> per-row scores; `final`: the figures so far (labels,
    summary, held); `counted`: the tasks the search ranked on."""
    base = per_row["base"]
    own = {t: per_row[f"specialist {t}"][t] for t in counted}
    tests = signal(noise, definitions, counted, base, own)
    without = {t: signal_sentence(t, tests[t], "report") for t in weak(tests)}
    usable = [t for t in counted if t not in without]
    others = bool(without) and bool(usable) and without_signal == "rank_the_others"
    versus = (noise.objective(definitions, usable, base, own, per_row["sum"], per_row["best"], mean)
              if usable and (not without or others) else None)
    winner = next((r for r in final.get("held") or () if r["label"] == final["labels"]["best"]), None)
    word = decide({t: tests[t] for t in usable} if others else tests, winner and winner["held"], versus)
    record = {"verdict": word, "signal": {"report": tests}, "versus_sum": versus, "verdict_tasks": usable,
              "supported": supported(final, mean),
              "notes": [f"{t}: left out of the verdict, {why} (verdict.without_signal: rank_the_others)"
                        for t, why in without.items()] if others else []}
    record["verdict_sentence"] = verdict_sentence(word, final["labels"]["best"], winner, versus, record["supported"],
                                                  without)
    return record


def supported(final: dict, mean: bool) -> dict | None:
    """The merge that keeps the most on the report rows among those scored there (the sum merge,
    linear 0.5, the top of the leaderboard, each method's best); a tie goes to the sum merge."""
    key = "mean" if mean else "worst"
    roles = {"best": "the search's winner", "sum": "sum", "linear 0.5": "every adapter at 0.5"}
    found = [(s[key], name == "sum", final["labels"][name], roles.get(name, name))
             for name, s in final["summary"].items() if s[key] is not None]
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
                     without: dict[str, str]) -> str:
    """The first sentence of the summary and of final.md, and what to use instead."""
    if word == NO_SIGNAL:
        return no_signal_sentence(without, "report", stop=False)
    if word == CONFIRMED:
        return (f"Verdict: confirmed. `{best}` held on the report rows and beats the sum merge there ("
                f"{versus['metric']} {described(versus, percent=True)}); it is the merge written to best/.")
    if winner is None:
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


def signal_floor(tests: dict, definitions: dict[str, Task]) -> dict[str, dict]:
    """As final["floor"], from the specialist-against-base tests: base or specialist at exactly 0."""
    from lf_wrap.scoring.family import StatsFamily

    out = {}
    for t, x in tests.items():
        zero = [name for name, value in (("base", x["a"]), (f"specialist {t}", x["b"])) if value == 0]
        if zero and isinstance(definitions[t].family, StatsFamily):
            out[t] = {"metric": x["metric"], "models": zero}
    return out


def floor_note(final: dict, where: str = "report") -> list[str]:
    """One line per task whose corpus metric is exactly 0 for some model (`final["floor"]`), with
    the suggestion of chrF where the metric is BLEU (docs/tasks.md)."""
    lines = []
    for t, x in (final.get("floor") or {}).items():
        text = f"{t}: {x['metric']} is exactly 0 for {', '.join(x['models'])} on the {where} rows, a floor where " \
               "differences vanish"
        if x["metric"] == "bleu":
            text += ("; corpus BLEU is 0 when no 4-gram matches (common on short sentences): chrF (metric: chrf) "
                     "has no such floor (docs/tasks.md)")
        lines.append(text + ".")
    return lines


def smallest_sentence(versus: dict | None) -> list[str]:
    """The smallest difference of the objective the report rows could have confirmed (one line, or none)."""
    if not versus or not versus.get("smallest"):       # None, or 0: the resamples do not vary at all
        return []
    rows = ", ".join(f"{t} {n}" for t, n in versus["rows"].items())
    return [f"Smallest difference these report rows ({rows}) could confirm: {versus['metric']} "
            f"{versus['smallest']:+.1%} (p < {versus['level']:g} at the spread they show; a true difference of that size is confirmed about "
            "half the time, docs/search.md says how many rows a smaller one needs)."]
