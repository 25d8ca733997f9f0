"""The one rule for "beyond resampling noise", and every sentence a search writes with it.

A paired test of b against a (the eval's: the task family's paired bootstrap, both systems
resampled on the same rows, sacrebleu's p-value) is *beyond resampling noise* when its p-value is
below `level` (the recipe's `verdict.level`; default 1 - the eval recipe's bootstrap.confidence,
0.05). The interval printed beside it is taken at confidence 1 - level. The words come from the
p-value alone, through `Noise.beyond` and `noise_words`, so no sentence can say "within noise"
beside a p-value below the level (the first real-text search printed "p = 0.00599 (within
resampling noise)": its words came from the interval, which touched 0). Also here: each task's
specialist against the base (the gain a merge keeps a share of), a corpus metric at its floor,
and the smallest difference the rows could have confirmed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from lf_wrap.scoring.bootstrap import Bootstrap, beyond_noise
from lf_wrap.search.objective import retained_gain_resamples
from lf_wrap.tasks import Task

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
        return beyond_noise(test.get("p_value"), self.bootstrap.confidence)

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
            test["interval"], test["p_value"] = self.percentile_test(res_b - res_a)
            test["smallest"] = self.smallest(res_a, res_b)
        return self._record(test)

    def _k(self, n: int) -> int:
        return max(int(np.ceil(n * self.level / 2 - 1e-9)) - 1, 0)

    def percentile_test(self, deltas: np.ndarray) -> tuple[list[float], float]:
        """The objective's test, read off the resampled differences themselves: the interval
        between the (K+1)-th smallest and largest, K = ceil(N level / 2) - 1, and the two-sided
        percentile p-value 2 min(#{d_i <= 0}, #{d_i >= 0}) / N (at least 1 / N). The interval
        excludes 0 exactly when p < level, so no sentence can pair the two the wrong way. (A
        retained gain is a ratio and the worst task a minimum: their resamples are skewed, and
        sacrebleu's centred p-value, right for a metric's own differences, disagreed with the
        interval there: -21.2% [-47.4%, +24.6%] beside p = 0.0445 on the real-text example.)"""
        ordered = np.sort(deltas)
        n, k = len(ordered), self._k(len(ordered))
        below, above = int((ordered <= 0).sum()), int((ordered >= 0).sum())
        low, high = float(ordered[k]), float(ordered[n - 1 - k])
        if n * self.level <= 1:        # too few resamples to confirm anything at this level (p >= 1 / N)
            low, high = min(low, 0.0), max(high, 0.0)
        return [low, high], min(1.0, max(2 * min(below, above), 1) / n)

    def smallest(self, resampled_a: np.ndarray, resampled_b: np.ndarray) -> float | None:
        """The smallest difference these rows could have confirmed, at the spread they show: the
        resampled differences, centred and shifted by D, have at most K on the far side of 0 once D
        passes the (K+1)-th value from either end (percentile_test's rule). A true difference of
        that size is confirmed about half the time (docs/search.md: the power)."""
        centred = np.sort((resampled_b - resampled_a) - (resampled_b - resampled_a).mean())
        if len(centred) == 0:
            return None
        k = self._k(len(centred))
        return float(max(-centred[k], centred[len(centred) - 1 - k], 0.0))


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
            f"{versus['smallest']:+.1%} (p < {versus['level']:g} at the spread they show; a true difference of that "
            "size is confirmed about half the time, docs/search.md says how many rows a smaller one needs)."]
