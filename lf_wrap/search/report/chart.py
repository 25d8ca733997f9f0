"""chart.png: retained gain per task, the top candidates and the sum merge on the search rows
(left), best, sum and linear 0.5 with their intervals on the report rows (right), and with
layer-wise weights the best merge's weight per block (lf_wrap.search.layerwise). A merge method
has one colour in every panel (method_colour), so a method reads the same on both sides."""

from __future__ import annotations

from lf_wrap.search.layerwise import Layout
from lf_wrap.search.report.panels import panel


# One colour per merge method (in lf_wrap.merge.methods' order), the same in every panel; bars of one
# method in one panel are told apart by their hatch and the legend.
PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--")


def method_colour(method: str) -> str:
    """The colour of a merge method in every panel of chart.png (grey for what is no merge method:
    the joint adapter)."""
    from lf_wrap.merge.methods import METHODS

    names = list(METHODS)
    return PALETTE[names.index(method) % len(PALETTE)] if method in names else "tab:gray"


def method_of(label: str) -> str:
    """A candidate's method from its label (`ties[1,0.5] density 0.8` -> ties)."""
    return label.split("[", 1)[0]


def chart(table: list[dict], final: dict, tasks: list[str], top: int = 3, layout: Layout | None = None) -> bytes:
    from lf_wrap.core.plots import png

    return png(figure(table, final, tasks, top, layout))


def figure(table: list[dict], final: dict, tasks: list[str], top: int = 3, layout: Layout | None = None):
    """chart.png's figure: each bar coloured by its merge's method (method_colour), in both panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table[:top] + [r for r in table[top:] if r["role"] == "reference: sum"]
    fig, axes = plt.subplots(1, 3 if layout else 2, figsize=(18 if layout else 12, 4), sharey=not layout)
    left, right = axes[0], axes[1]
    if layout:                                 # the best merge's weights per block of layers
        right.sharey(left)
        panel(axes[2], table[0], tasks, layout)
    width = 0.8 / max(len(shown), 1)
    for i, r in enumerate(shown):
        xs = [k + (i - (len(shown) - 1) / 2) * width for k in range(len(tasks))]
        label = f"#{r['rank']} {r['label']}" + (" (sum)" if r["role"] == "reference: sum" else "")
        left.bar(xs, [r["retained"].get(t) or 0.0 for t in tasks], width, label=label,
                 color=method_colour(r["method"]), hatch=HATCHES[i % len(HATCHES)], edgecolor="white")
    left.set_title("search rows: retained gain per task")
    names = list(final["retained"])
    step = 0.8 / len(names)
    for i, name in enumerate(names):
        gains = [final["retained"][name][t] for t in tasks]
        ys = [g["value"] or 0.0 for g in gains]
        nan = float("nan")
        errors = [[y - g["ci95"][0] if g["ci95"] else nan for y, g in zip(ys, gains)],
                  [g["ci95"][1] - y if g["ci95"] else nan for y, g in zip(ys, gains)]]
        right.bar([k + (i - (len(names) - 1) / 2) * step for k in range(len(tasks))], ys, step, yerr=errors,
                  capsize=3, label=f"best: {final['labels']['best']}" if name == "best" else name,
                  color=method_colour(method_of(final["labels"].get(name, name))), hatch=HATCHES[i % len(HATCHES)],
                  edgecolor="white")
    right.set_title("report rows: retained gain, 95% interval")
    for ax in (left, right):
        ax.set_xticks(range(len(tasks)), tasks)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.legend(fontsize=7)
    left.set_ylabel("(merge - base) / (specialist - base)")
    return fig
