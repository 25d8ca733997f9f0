"""`lf-wrap report`: the study's results table from an eval folder (SPEC §4).

Rows are each task's headline metric (translate BLEU, summarize ROUGE-1, qa EM, then each task
of your own, e.g. my_ner EM) and their mean (only where every task was scored, so that means
compare);
columns are the models in recipe order; each adapter's own task is marked (bold in Markdown,
`own_task` in JSON/CSV). A second block gives each model's gain over the base model. Written
as table.md, table.csv and table.json, plus chart.png (the same matrix as grouped bars) and
loss_curves.png (each adapter's training loss from its trainer_log.jsonl, side by side).
Reads only metrics.json and manifest.json, so it can be rerun at any time."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from lf_wrap.evaluation.metrics import METRICS
from lf_wrap.tasks import TASKS, Task, resolve_task


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"{path} not found: run `lf-wrap eval` into this folder first") from None
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def table_tasks(metrics_doc: dict, source: str = "metrics.json") -> list[Task]:
    """The tasks of the evaluation, one row each: the study's in the study's order, then the
    user's own in the order the recipe declared them (metrics.json "tasks"). A task is a row when
    the recipe had it (declared, or counted) or a model has scores for it, so a task nobody
    could score still shows as missing. Any name neither the study's nor declared is an error."""
    declared: dict[str, Task] = {}
    for name, declaration in (metrics_doc.get("tasks") or {}).items():
        try:
            declared[name] = resolve_task(name, (declaration or {}).get("metric"), f"tasks.{name}.metric")
        except ValueError as err:
            raise UserError(f"{source}: {err}") from None
    seen = list(declared)
    for by_task in (*metrics_doc.get("counts", {}).values(), *metrics_doc["metrics"].values()):
        seen += [t for t in by_task if t not in seen]
    unknown = [t for t in seen if t not in TASKS and t not in declared]
    if unknown:
        raise UserError(f"{source}: unknown task '{unknown[0]}'")
    return [TASKS[t] for t in TASKS if t in seen] + [declared[t] for t in declared if t not in TASKS]


def _row(task: Task) -> str:
    return f"{task.name} {METRICS[task.headline].label}"


def build_table(metrics_doc: dict, manifest: dict, source: str = "metrics.json") -> dict:
    """The table as data: rows, columns, values (None = not scored), gains over base, own tasks.

    A (model, task) with zero scored rows (every prompt too long) is not scored; a model's mean
    is there only when every task of the table was scored for it, so that means compare."""
    results, counts = metrics_doc["metrics"], metrics_doc.get("counts", {})
    models = [m["name"] for m in manifest["models"]]
    tasks = table_tasks(metrics_doc, source)
    rows = [_row(t) for t in tasks] + ["mean"]

    def scored(model: str, task: Task, key: str) -> float | None:
        if counts.get(model, {}).get(task.name, {}).get("rows", 1) == 0:
            return None
        return results.get(model, {}).get(task.name, {}).get(key)

    values: dict[str, dict[str, float | None]] = {}
    for model in models:
        column = {_row(t): scored(model, t, t.headline) for t in tasks}
        present = [v for v in column.values() if v is not None]
        column["mean"] = sum(present) / len(present) if present and len(present) == len(tasks) else None
        values[model] = column
    base = next((m["name"] for m in manifest["models"] if m["kind"] == "base"), None)
    gains = {}
    if base is not None:
        for model in models:
            if model != base:
                gains[model] = {row: (None if values[model][row] is None or values[base][row] is None
                                      else values[model][row] - values[base][row]) for row in rows}
    by_name = {t.name: t for t in tasks}
    own = {m["name"]: (_row(by_name[m["task"]]) if m.get("task") in by_name else None) for m in manifest["models"]}
    all_metrics = {model: {f"{t.name} {METRICS[k].label}": scored(model, t, k) for t in tasks for k in t.metrics}
                   for model in models}
    higher = {_row(t): METRICS[t.headline].higher_is_better for t in tasks}
    return {"rows": rows, "columns": models, "values": values, "base": base, "gain_over_base": gains,
            "own_task": own, "all_metrics": all_metrics, "counts": counts,
            "higher_is_better": {**higher, "mean": all(higher.values())}}


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "(missing)"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _cell(value, bold: bool, signed: bool = False) -> str:
    text = _fmt(value, signed)
    return f"**{text}**" if bold and value is not None else text


def to_markdown(table: dict) -> str:
    cols, own = table["columns"], table["own_task"]
    lines = ["| metric | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for row in table["rows"]:
        cells = [_cell(table["values"][c][row], own.get(c) == row) for c in cols]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Bold: each model on its own task. mean: mean of the task rows (missing if one is).")
    gains = table["gain_over_base"]
    if gains:
        gcols = list(gains)
        lines += ["", f"Gain over {table['base']}:", "",
                  "| metric | " + " | ".join(gcols) + " |", "| --- |" + " --- |" * len(gcols)]
        for row in table["rows"]:
            cells = [_cell(gains[c][row], own.get(c) == row, signed=True) for c in gcols]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "All metrics:", "", "| metric | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for row in next(iter(table["all_metrics"].values()), {}):
        lines.append(f"| {row} | " + " | ".join(_fmt(table["all_metrics"][c][row]) for c in cols) + " |")
    skipped = [f"{m}/{t}: {c['skipped_too_long']}" for m, by_task in table["counts"].items()
               for t, c in by_task.items() if c.get("skipped_too_long")]
    if skipped:
        lines += ["", "Rows skipped (prompt longer than max_model_len - max_new_tokens): " + ", ".join(skipped)]
    return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cols = table["columns"]
    writer.writerow(["metric", *cols])
    for row in table["rows"]:
        writer.writerow([row, *("" if table["values"][c][row] is None else f"{table['values'][c][row]:.6f}"
                                for c in cols)])
    for row in table["rows"]:
        writer.writerow([f"{row} gain over {table['base']}",
                         *("" if c not in table["gain_over_base"] or table["gain_over_base"][c][row] is None
                           else f"{table['gain_over_base'][c][row]:+.6f}" for c in cols)])
    writer.writerow(["own_task", *(table["own_task"].get(c) or "" for c in cols)])
    return buffer.getvalue()


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


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
        bars = ax.bar(xs, ys, width, color=color)
        for bar, row in zip(bars, rows):
            if table["own_task"].get(col) == row:
                bar.set_edgecolor("black")
                bar.set_linewidth(2)
                bar.set_hatch("//")
    ax.set_xticks(range(len(rows)), rows)
    ax.set_ylabel("score (0-1, higher is better)")
    ax.set_title("Every model on every task (hatched: the model's own task)")
    ax.legend(handles=handles, fontsize="small")
    data = _png(fig)
    plt.close(fig)
    return data


def read_loss(log: Path) -> tuple[list[float], list[float]]:
    steps, losses = [], []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("loss") is not None:
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
    data = _png(fig)
    plt.close(fig)
    return data


def write_report(folder: Path) -> dict[str, Path]:
    """Write the tables and PNGs into `folder` (an eval results folder); return what was written."""
    folder = Path(folder)
    metrics_doc, manifest = _read(folder / "metrics.json"), _read(folder / "manifest.json")
    table = build_table(metrics_doc, manifest, str(folder / "metrics.json"))
    written = {"table.md": folder / "table.md", "table.csv": folder / "table.csv",
               "table.json": folder / "table.json", "chart.png": folder / "chart.png"}
    atomic_write_text(written["table.md"], to_markdown(table))
    atomic_write_text(written["table.csv"], to_csv(table))
    atomic_write_json(written["table.json"], table)
    atomic_write_bytes(written["chart.png"], chart(table))
    curves = loss_curves(manifest)
    if curves is not None:
        written["loss_curves.png"] = folder / "loss_curves.png"
        atomic_write_bytes(written["loss_curves.png"], curves)
    return written
