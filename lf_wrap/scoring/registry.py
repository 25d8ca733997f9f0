"""The metric families by name: what a task's `metric` (and `lf-wrap score --metric`) names.

A plain dict, no plugin machinery: a family is one module of this package (bleu, chrf, rouge,
squad_v2, exact_match). A metric of your own is not registered: `family("my_metrics.py:score_row")`
loads it from its file (lf_wrap.scoring.custom)."""

from __future__ import annotations

from lf_wrap.scoring import custom
from lf_wrap.scoring.bleu import Bleu
from lf_wrap.scoring.chrf import Chrf
from lf_wrap.scoring.exact_match import ExactMatch
from lf_wrap.scoring.family import Family, Metric
from lf_wrap.scoring.rouge import Rouge
from lf_wrap.scoring.squad import SquadV2

FAMILIES: dict[str, Family] = {f.name: f for f in (Bleu(), Rouge(), ExactMatch(), SquadV2(), Chrf())}

# The study's metrics by name, in the order metrics.json has always listed them (its
# `higher_is_better` and `definitions`; a task scored otherwise adds its family's own).
METRICS: dict[str, Metric] = {m.name: m for name in ("bleu", "rouge", "squad_v2") for m in FAMILIES[name].metrics}

CHOICES = ", ".join(FAMILIES) + ", or a function of your own as path/to/file.py:function"


def family(spec: str) -> Family:
    """The family a task's `metric` names: a shipped one, or `file.py:function` (loaded now;
    UserError when it cannot be). ValueError for anything else."""
    if spec in FAMILIES:
        return FAMILIES[spec]
    if custom.is_reference(spec):
        return custom.load(spec)
    raise ValueError(f"unknown metric '{spec}'; choose one of: {CHOICES}")
