"""Merge methods: plain functions from the adapters' deltas dW_i = scaling_i * B_i @ A_i (float32,
one module at a time) and one weight per adapter to one merged delta.

`METHODS` is the registry the stage, the command line and the search read. Each method's file
owns everything about it: its functions, its `MergeMethod` entry (parameters, the spaces it runs
in, its rank check), so adding a method is its file, one line here and docs/merge-methods.md.
The registry's order is the search's order of simplicity (lf_wrap.search.candidates): the
plain weighted sum first, then TIES' trimming, DARE's random drop, the SVD-based methods.
Where a method runs (full, KnOTS or Core Space) is a separate choice (lf_wrap.merge.spaces);
core.py and knots.py hold those spaces' maths, spectrum.py what the SVD methods share, lowrank.py
turns a merged delta back into LoRA factors. torch is imported when a method runs, not when the
registry is read: `lf-wrap --help` stays fast."""

from __future__ import annotations

from lf_wrap.merge.methods import cart, dare, iso, knots, linear, ties, tsv
from lf_wrap.merge.methods.method import ALPHA, SPACES, MergeMethod, Param, Value  # noqa: F401 (re-exported)

METHODS: dict[str, MergeMethod] = {**linear.METHODS, **ties.METHODS, **dare.METHODS, **tsv.METHODS, **iso.METHODS,
                                   **knots.METHODS, **cart.METHODS}
