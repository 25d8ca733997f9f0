"""What a merge method is, torch-free (the registry is read by `lf-wrap --help`): its entry
`MergeMethod` and its named hyper-parameters `Param`. Each method's file (linear.py, ties.py,
dare.py, tsv.py, iso.py, knots.py, cart.py) defines its own entries with these."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:
    import torch

# (deltas, weights, density, generator, params) -> merged delta; params: the resolved hyper-parameters
Combine = Callable[..., "torch.Tensor"]
RankCheck = Callable[[dict, list, list], None]
Value = Union[float, str]
SPACES = ("full", "knots", "core")   # every space, in order (lf_wrap.merge.spaces says what each is)


@dataclass(frozen=True)
class Param:
    """One named hyper-parameter: a number in [low, high] (an open end where `*_open`; None: no
    bound), or one of `choices`. `per_task`: the default and the upper bound are divided by the
    number of adapters (TSV-M's share of the spectrum, 1/T in the paper)."""

    default: Value
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    per_task: bool = False
    choices: tuple[str, ...] = ()

    def bounds(self, tasks: int) -> tuple[float | None, float | None]:
        high = self.high / tasks if self.per_task and self.high is not None else self.high
        return self.low, high

    def range_text(self, tasks: int | None) -> str:
        """E.g. "(0, inf)"; with tasks None, a per-task bound reads "1/T"."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low, high = self.bounds(tasks or 1)
        left = "(" if self.low_open or low is None else "["
        right = ")" if self.high_open or high is None else "]"
        high_text = "inf" if high is None else ("1/T" if self.per_task and tasks is None else f"{high:g}")
        return f"{left}{'-inf' if low is None else f'{low:g}'}, {high_text}{right}"

    def check(self, value: Any, tasks: int) -> Value:
        """The value, or a ValueError saying why it is refused (the caller names the key)."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{value!r} is not {self.range_text(tasks)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        low, high = self.bounds(tasks)
        if (low is not None and (value < low or (self.low_open and value == low))) or \
                (high is not None and (value > high or (self.high_open and value == high))):
            raise ValueError(f"{value:g} is not in {self.range_text(tasks)}")
        return float(value)

    def default_for(self, tasks: int) -> Value:
        return self.default / tasks if self.per_task else self.default


@dataclass(frozen=True)
class MergeMethod:
    summary: str
    combine: Combine  # (deltas, weights, density, generator[, params]) -> merged delta
    weighted: bool    # takes --weights (otherwise every weight is 1)
    density: bool     # needs --density
    seeded: bool      # takes --seed
    exact_adapter: bool  # merged delta = sum_i w_i dW_i: `--as adapter` concatenates ranks
    params: dict[str, Param] = field(default_factory=dict)   # named hyper-parameters (--param KEY=VALUE)
    density_when: tuple[str, str] | None = None   # density only when params[key] == value (knots: merge ties)
    spaces: tuple[str, ...] = SPACES   # where it runs (lf_wrap.merge.spaces): full, knots, core
    spaces_note: str = ""              # what to use instead in the other spaces (said when refused)
    rank_check: RankCheck | None = None   # (params, ranks, sizes) -> None, or a ValueError naming params.KEY
    export_with_llamafactory: bool = False   # `--as model` is llamafactory-cli export (sum: the study's merge)

    def takes_density(self, params: dict[str, Value]) -> bool:
        if not self.density:
            return False
        return self.density_when is None or params.get(self.density_when[0]) == self.density_when[1]

    def check_rank(self, params: dict[str, Value], ranks: list[int], sizes: list[int]) -> None:
        """Hyper-parameters that ask for more singular directions than the adapters have: a
        ValueError naming `params.KEY`. `ranks`: each adapter's r; `sizes`: min of the shape of
        each matrix the method sees (a module's min(m, n) in full space, at most sum(r) in the
        others)."""
        if self.rank_check is not None:
            self.rank_check(params, ranks, sizes)

    def resolve(self, given: dict[str, Any], tasks: int) -> dict[str, Value]:
        """Every hyper-parameter, the given ones checked and the others at their default.
        A ValueError names the key as `params.KEY`."""
        for key in given:
            if key not in self.params:
                known = ", ".join(self.params) or "none"
                raise ValueError(f"params.{key}: not a hyper-parameter of this method (its hyper-parameters: {known})")
        resolved = {}
        for key, param in self.params.items():
            if key not in given:
                resolved[key] = param.default_for(tasks)
                continue
            try:
                resolved[key] = param.check(given[key], tasks)
            except ValueError as err:
                raise ValueError(f"params.{key}: {err}") from None
        return resolved


ALPHA = Param(1.0, "scales the merged delta (FusionBench's alpha / scaling_factor; the papers tune it)",
              low=0.0, low_open=True)

