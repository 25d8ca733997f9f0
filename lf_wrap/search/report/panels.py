"""How the leaderboard and the chart show a candidate's layer-wise weights (`blocks`,
`per_kind`): its columns, its markdown cell and the chart's panel (lf_wrap.search.layerwise
says what a layout is)."""

from __future__ import annotations

from lf_wrap.search.layerwise import Layout, expand


def weight_columns(tasks: list[str], shape: Layout | None) -> list[str]:
    """The csv's weight columns: `weight_<task>`, or one per block (and kind): `weight_<task>[_<kind>]_block<b>`."""
    if shape is None:
        return [f"weight_{t}" for t in tasks]
    return [f"weight_{t}" + (f"_{kind}" if kind else "") + f"_block{block}" for t in tasks
            for kind, block in shape.cells()]


def weight_values(row: dict, tasks: list[str], shape: Layout | None) -> list:
    if shape is None:
        return [row["weights"][t] for t in tasks]
    return [v for t in tasks for v in expand(row["weights"][t], shape).values()]


def markdown(row: dict, tasks: list[str], shape: Layout) -> str:
    """The best merge's weights, one row per adapter (and kind), one column per block."""
    head = ["adapter", *(shape.block_name(b) for b in range(shape.blocks))]
    lines = [f"Weights of `{row['label']}` (rank {row['rank']}) per block of layers:", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for t in tasks:
        cells = expand(row["weights"][t], shape)
        for kind in shape.kinds:
            name = f"{t} {kind}" if kind else t
            lines.append(f"| {name} | " + " | ".join(f"{cells[(kind, b)]:g}" for b in range(shape.blocks)) + " |")
    return "\n".join(lines) + "\n"


def panel(ax, row: dict, tasks: list[str], shape: Layout) -> None:
    """Bars of the best merge's weight in each block, one bar per adapter (and kind)."""
    series = [(t, kind) for t in tasks for kind in shape.kinds]
    width = 0.8 / len(series)
    for i, (t, kind) in enumerate(series):
        cells = expand(row["weights"][t], shape)
        xs = [b + (i - (len(series) - 1) / 2) * width for b in range(shape.blocks)]
        ax.bar(xs, [cells[(kind, b)] for b in range(shape.blocks)], width, label=f"{t} {kind}" if kind else t,
               hatch="//" if kind == "mlp" else None)
    ax.set_xticks(range(shape.blocks), [shape.block_name(b) for b in range(shape.blocks)], fontsize=7)
    ax.set_title(f"best merge (#{row['rank']}): weight per block")
    ax.set_ylabel("weight")
    ax.legend(fontsize=7)
