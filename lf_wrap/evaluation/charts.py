"""The report's pictures: chart.png (the table as grouped bars, with the values' bootstrap
intervals as error bars where metrics.json has them) and loss_curves.png (each adapter's
training loss from the trainer_log.jsonl LLaMA-Factory writes into its output_dir).
matplotlib is imported only when a picture is drawn."""

from __future__ import annotations

from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.plots import png
from lf_wrap.scoring.bootstrap import Bootstrap


def chart(table: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.patches import Patch

    rows, cols = table["rows"], table["columns"]
    width = 0.8 / max(len(cols), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows) * max(1, len(cols) / 3)), 4))
    handles = []
    for i, col in enumerate(cols):
        color = f"C{i % 10}"
        handles.append(Patch(color=color, label=col))
        xs = [r + (i - (len(cols) - 1) / 2) * width for r in range(len(rows))]
        ys = [table["values"][col][row] or 0.0 for row in rows]     # not scored: no bar
        bounds = [(table.get("ci95") or {}).get(col, {}).get(row) for row in rows]
        nan = float("nan")                                              # no interval: no error bar
        # A percentile interval may exclude its value (a skewed metric, few rows): the bar then
        # reaches the interval's near end only; matplotlib refuses a negative error length.
        errors = [[max(y - b["ci95_low"], 0.0) if b else nan for y, b in zip(ys, bounds)],
                  [max(b["ci95_high"] - y, 0.0) if b else nan for y, b in zip(ys, bounds)]]
        bars = ax.bar(xs, ys, width, color=color, yerr=errors if any(bounds) else None, capsize=3,
                      error_kw={"elinewidth": 1, "ecolor": "black"})
        for bar, row in zip(bars, rows):
            if table["own_task"].get(col) == row:
                bar.set_edgecolor("black")
                bar.set_linewidth(2)
                bar.set_hatch("//")
    ax.set_xticks(range(len(rows)), rows)
    ax.set_ylabel("score (0-1, higher is better)")
    confidence = 100 * table["bootstrap"].get("confidence", Bootstrap.confidence) if "ci95" in table else None
    ax.set_title("Every model on every task (hatched: the model's own task"
                 + (f"; bars: {confidence:g}% bootstrap intervals)" if confidence is not None else ")"))
    ax.legend(handles=handles, fontsize="small")
    data = png(fig)
    plt.close(fig)
    return data


def read_loss(log: Path) -> tuple[list[float], list[float]]:
    steps, losses = [], []
    for record in jsonlines.tolerant(log.read_bytes())[0]:
        if record.get("loss") is not None:
            steps.append(record.get("current_steps", len(steps) + 1))
            losses.append(record["loss"])
    return steps, losses


def loss_curves(manifest: dict) -> bytes | None:
    """Each adapter's training loss (LLaMA-Factory writes trainer_log.jsonl into its output_dir)."""
    curves = []
    for model in manifest["models"]:
        log = Path(model["path"]) / "trainer_log.jsonl"
        if model["kind"] == "adapter" and log.is_file():
            steps, losses = read_loss(log)
            if losses:
                curves.append((model["name"], steps, losses))
    if not curves:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.5), squeeze=False)
    for ax, (name, steps, losses) in zip(axes[0], curves):
        ax.plot(steps, losses, linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
    data = png(fig)
    plt.close(fig)
    return data
