"""The search's layer-wise weights (`blocks`, `per_kind`): the layout, and its check against the
base before any engine starts (lf_wrap.search.report.panels shows a candidate's weights per block).

A search with `blocks: 1` and no `per_kind` has no Layout: its outputs are those of a search
with one weight per adapter, column for column."""

from __future__ import annotations

from dataclasses import dataclass

from lf_wrap.core.errors import UserError
from lf_wrap.merge.blocks import KINDS, assign, block_ranges
from lf_wrap.merge.checks import MergePlan
from lf_wrap.search.candidates import thaw


@dataclass(frozen=True)
class Layout:
    blocks: int
    per_kind: bool
    layers: int

    @property
    def kinds(self) -> tuple:
        return KINDS if self.per_kind else (None,)

    def cells(self) -> list[tuple[str | None, int]]:
        """(kind, block) of each weight of one adapter, in the optimiser's order."""
        return [(kind, block) for kind in self.kinds for block in range(self.blocks)]

    def block_name(self, block: int) -> str:
        first, last = block_ranges(self.layers, self.blocks)[block]
        return f"layer {first}" if first == last else f"layers {first}-{last}"

    def record(self) -> dict:
        return {"count": self.blocks, "kinds": list(KINDS) if self.per_kind else None,
                "layers": [list(r) for r in block_ranges(self.layers, self.blocks)]}


def layout(recipe, plan: MergePlan) -> Layout | None:
    if recipe.blocks == 1 and not recipe.per_kind:
        return None
    return Layout(recipe.blocks, recipe.per_kind, plan.layers)


def check_layout(blocks: int, per_kind: bool, plan: MergePlan) -> None:
    """`blocks` and `per_kind` against the base, before any engine starts: one UserError naming
    the key (more blocks than the base has layers, a module no block or kind can place)."""
    if blocks == 1 and not per_kind:
        return
    keys = [("blocks", False)] + ([("per_kind", True)] if per_kind else [])
    for key, kinds in keys:
        try:
            assign(plan.modules, plan.layers, blocks, kinds)
        except ValueError as err:
            raise UserError(f"{key}: {err} (base {plan.base_dir / 'config.json'})") from None


def expand(weight, shape: Layout) -> dict[tuple[str | None, int], float]:
    """(kind, block) -> the weight there, from any candidate form (a number holds everywhere)."""
    thawed = thaw(weight)
    out = {}
    for kind, block in shape.cells():
        value = thawed[kind] if isinstance(thawed, dict) else thawed
        out[(kind, block)] = value[block] if isinstance(value, list) else value
    return out
