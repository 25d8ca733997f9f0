"""`lf-wrap report`: the study's results table from an eval folder (SPEC §4).

Rows are each task's headline metric (translate BLEU, summarize ROUGE-1, qa EM, then each task
of your own, e.g. my_ner EM) and their mean (only where every task was scored, so that means
compare);
columns are the models in recipe order; each adapter's own task is marked (bold in Markdown,
`own_task` in JSON/CSV). A second block gives each model's gain over the base model. Written
as table.md, table.csv and table.json, plus chart.png (the same matrix as grouped bars) and
loss_curves.png (each adapter's training loss from its trainer_log.jsonl, side by side).
Reads only metrics.json and manifest.json, so it can be rerun at any time.

Where metrics.json has them (an eval by this version), every value carries its bootstrap
interval and every gain its paired test (interval of the difference, p-value); a gain whose
p-value is not below 1 - confidence (0.05) is marked † (it may be resampling noise: the rule of
lf_wrap.scoring.bootstrap.beyond_noise, as in the search and `lf-wrap compare`), and each `bootstrap.compare_to`
model gets a block of differences of its own. An older metrics.json gives the table without."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_bytes, dump_json
from lf_wrap.evaluation.charts import chart, loss_curves
from lf_wrap.evaluation.report_input import check_manifest, check_metrics, check_same_models
from lf_wrap.scoring import custom
from lf_wrap.scoring.bootstrap import Bootstrap, beyond_noise
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
    could score still shows as missing. Any name neither the study's nor declared is an error. A
    task scored by a function of your own is tabled as metrics.json describes it: its file is not loaded."""
    declared: dict[str, Task] = {}
    for name, declaration in (metrics_doc.get("tasks") or {}).items():
        metric = (declaration or {}).get("metric")
        described = (custom.declared(metric, declaration, metrics_doc.get("higher_is_better") or {})
                     if isinstance(metric, str) and custom.is_reference(metric) else None)
        try:
            declared[name] = resolve_task(name, metric, f"tasks.{name}.metric", described)
        except ValueError as err:
            raise UserError(f"{source}: {err}") from None
    seen = list(declared)
    for by_task in (*metrics_doc.get("counts", {}).values(), *metrics_doc["metrics"].values()):
        seen += [t for t in by_task if t not in seen]
    unknown = [t for t in seen if t not in TASKS and t not in declared]
    if unknown:
        raise UserError(f"{source}: unknown task '{unknown[0]}'")
    return ([declared.get(t, TASKS[t]) for t in TASKS if t in seen]        # a recipe may rescore a study task
            + [declared[t] for t in declared if t not in TASKS])


def _label(task: Task, key: str) -> str:
    return f"{task.name} {task.family.metric(key).label}"


def _row(task: Task) -> str:
    return _label(task, task.headline)


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
    all_metrics = {model: {_label(t, k): scored(model, t, k) for t in tasks for k in t.metrics} for model in models}
    higher = {_row(t): t.family.metric(t.headline).higher_is_better for t in tasks}
    # Corpus BLEU is exactly 0 when no 4-gram matches (short answers): a floor where differences vanish.
    floor = {_row(t): [m for m in models if values[m][_row(t)] == 0.0] for t in tasks if t.family.name == "bleu"}
    table = {"rows": rows, "columns": models, "values": values, "base": base, "gain_over_base": gains,
             "own_task": own, "all_metrics": all_metrics, "counts": counts,
             "higher_is_better": {**higher, "mean": all(higher.values())},
             "floor": {row: found for row, found in floor.items() if found}}
    if "intervals" in metrics_doc:
        table.update(_uncertainty(metrics_doc, tasks, models, values, base))
    return table


def _uncertainty(metrics_doc: dict, tasks: list[Task], models: list[str], values: dict, base: str | None) -> dict:
    """The table's intervals (ci95), gains' paired tests (gain_ci95) and the differences from each
    compare_to model, from metrics.json's `intervals` and `paired`; None where a value is missing."""
    intervals, paired = metrics_doc.get("intervals") or {}, metrics_doc.get("paired") or {}
    counts = metrics_doc.get("counts") or {}
    confidence = (metrics_doc.get("bootstrap") or {}).get("confidence", Bootstrap.confidence)

    def bounds(model: str, task: Task, key: str) -> dict | None:
        pair = intervals.get(model, {}).get(task.name, {}).get(key)
        return None if pair is None else {"ci95_low": pair[0], "ci95_high": pair[1]}

    def test(model: str, other: str, task: Task) -> dict | None:
        if values[model][_row(task)] is None or values[other][_row(task)] is None:
            return None
        found = paired.get(model, {}).get(other, {}).get(task.name, {}).get(task.headline)
        if found is None:
            return None
        low, high = found["ci95"]
        scored = [counts.get(x, {}).get(task.name, {}).get("rows") for x in (model, other)]
        return {"difference": found["difference"], "ci95_low": low, "ci95_high": high, "p_value": found["p_value"],
                "significant": beyond_noise(found["p_value"], confidence), "rows": found.get("rows"),
                "fewer_rows": found.get("rows") is not None and any(n and found["rows"] < n for n in scored)}

    def tests_against(other: str) -> dict:
        return {m: {**{_row(t): test(m, other, t) for t in tasks}, "mean": None} for m in models if m != other}

    settings = metrics_doc.get("bootstrap") or {}
    compare_to = [m for m in settings.get("compare_to") or [] if m in models and m != base]
    return {
        "bootstrap": settings,
        "ci95": {m: {**{_row(t): bounds(m, t, t.headline) if values[m][_row(t)] is not None else None
                        for t in tasks}, "mean": None} for m in models},
        "all_metrics_ci95": {m: {_label(t, k): bounds(m, t, k) if values[m][_row(t)] is not None
                                 else None for t in tasks for k in t.metrics} for m in models},
        "gain_ci95": tests_against(base) if base is not None else {},
        "differences": {other: {"values": {m: {row: None if values[m][row] is None or values[other][row] is None
                                                   else values[m][row] - values[other][row] for row in values[m]}
                                               for m in models if m != other},
                                    "ci95": tests_against(other)} for other in compare_to},
    }


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "(missing)"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


NOISE = "†"


def _cell(value, bold: bool, signed: bool = False, interval: dict | None = None) -> str:
    """`0.2095`, bold on a model's own task; with an interval `0.2095 [0.1923, 0.2270]`, and for a
    paired test `+0.0033 [-0.0050, +0.0110] p=0.221 †` († where p is not below 1 - confidence). The value
    always comes first, alone, so that the cell still parses as its number's first word."""
    text = _fmt(value, signed)
    text = f"**{text}**" if bold and value is not None else text
    if value is None or interval is None:
        return text
    low, high = interval["ci95_low"], interval["ci95_high"]
    text += f" [{_fmt(low, signed)}, {_fmt(high, signed)}]"
    if "p_value" in interval:
        p_value = interval["p_value"]
        text += f" p={p_value:.3f}" if p_value >= 0.001 else " p<0.001"
        text += "" if interval["significant"] else f" {NOISE}"
    return text


def _block(table: dict, cols: list[str], values: dict, intervals: dict | None, signed: bool) -> list[str]:
    own = table["own_task"]
    lines = ["| metric | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for row in table["rows"]:
        cells = [_cell(values[c][row], own.get(c) == row, signed, (intervals or {}).get(c, {}).get(row))
                 for c in cols]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _how_to_read(table: dict) -> list[str]:
    settings = table["bootstrap"]
    level = f"{100 * settings.get('confidence', Bootstrap.confidence):g}%"
    draw = f"{settings.get('resamples', '?')} resamples of the rows, seed {settings.get('seed', '?')}"
    return ["", f"[low, high]: the {level} bootstrap interval ({draw}); the mean has none. Differences: paired "
                f"bootstrap, both models on the same resampled rows; p: its p-value (for BLEU, sacrebleu's paired "
                f"bootstrap test). {NOISE} n.s.: p is not below "
                f"{1 - settings.get('confidence', Bootstrap.confidence):.2g}: this gain may be resampling noise."]


def to_markdown(table: dict) -> str:
    cols, uncertain = table["columns"], "ci95" in table
    lines = _block(table, cols, table["values"], table.get("ci95"), signed=False)
    lines.append("")
    lines.append("Bold: each model on its own task. mean: mean of the task rows (missing if one is).")
    for row, found in (table.get("floor") or {}).items():
        lines += ["", f"{row} is exactly 0 for {', '.join(found)}: corpus BLEU is 0 when no 4-gram matches "
                      "(common on short sentences), a floor where differences vanish; chrF (metric: chrf) has no "
                      "such floor (docs/tasks.md)."]
    gains = table["gain_over_base"]
    if gains:
        lines += ["", f"Gain over {table['base']}:", ""]
        lines += _block(table, list(gains), gains, table.get("gain_ci95"), signed=True)
    for other, block in (table.get("differences") or {}).items():
        lines += ["", f"Difference from {other}:", ""]
        lines += _block(table, list(block["values"]), block["values"], block["ci95"], signed=True)
    if uncertain:
        lines += _how_to_read(table)
        fewer = [f"{m} against {o}, {row}: {t['rows']} rows" for o, by_model in
                 [(table["base"], table["gain_ci95"])] + [(o, b["ci95"]) for o, b in table["differences"].items()]
                 for m, by_row in by_model.items() for row, t in by_row.items() if t and t["fewer_rows"]]
        if fewer:
            lines += ["", "Compared on the rows both models scored only: " + "; ".join(fewer)]
    lines += ["", "All metrics:", "", "| metric | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for row in next(iter(table["all_metrics"].values()), {}):
        intervals = table.get("all_metrics_ci95") or {}
        cells = [_cell(table["all_metrics"][c][row], False, False, intervals.get(c, {}).get(row))
                 for c in cols]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    skipped = [f"{m}/{t}: {c['skipped_too_long']}" for m, by_task in table["counts"].items()
               for t, c in by_task.items() if c.get("skipped_too_long")]
    if skipped:
        lines += ["", "Rows skipped (prompt longer than max_model_len - max_new_tokens): " + ", ".join(skipped)]
    return "\n".join(lines) + "\n"


def _number(value, signed: bool = False) -> str:
    return "" if value is None else f"{value:+.6f}" if signed else f"{value:.6f}"


def to_csv(table: dict) -> str:
    """One line per row (values, then gains over base, then differences from each compare_to
    model), one column per model; with intervals, each model's column is followed by its
    `ci95_low`, `ci95_high` and `p_value` (the paired test's, on gain and difference lines)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cols, uncertain = table["columns"], "ci95" in table
    extra = ("ci95_low", "ci95_high", "p_value") if uncertain else ()
    writer.writerow(["metric", *(x for c in cols for x in (c, *(f"{c} {e}" for e in extra)))])

    def line(label: str, values: dict, intervals: dict | None, row: str, signed: bool) -> None:
        cells = [label]
        for c in cols:
            value = values.get(c, {}).get(row)
            cells.append(_number(value, signed))
            if uncertain:
                found = (intervals or {}).get(c, {}).get(row) if value is not None else None
                cells += [_number(found and found["ci95_low"], signed), _number(found and found["ci95_high"], signed),
                          "" if not found or "p_value" not in found else f"{found['p_value']:.6f}"]
        writer.writerow(cells)

    for row in table["rows"]:
        line(row, table["values"], table.get("ci95"), row, signed=False)
    for row in table["rows"]:
        line(f"{row} gain over {table['base']}", table["gain_over_base"], table.get("gain_ci95"), row, signed=True)
    for other, block in (table.get("differences") or {}).items():
        for row in table["rows"]:
            line(f"{row} minus {other}", block["values"], block["ci95"], row, signed=True)
    writer.writerow(["own_task", *(x for c in cols for x in (table["own_task"].get(c) or "", *("" for _ in extra)))])
    return buffer.getvalue()


def read_results(folder: Path) -> tuple[dict, dict]:
    """metrics.json and manifest.json of an eval folder, each checked whole (report_input):
    a hand-edited value of the wrong kind is one Error naming file and key, before any drawing."""
    metrics_path, manifest_path = folder / "metrics.json", folder / "manifest.json"
    metrics_doc = check_metrics(_read(metrics_path), str(metrics_path))
    manifest = check_manifest(_read(manifest_path), str(manifest_path))
    check_same_models(metrics_doc, manifest, str(metrics_path), str(manifest_path))
    return metrics_doc, manifest


def write_report(folder: Path) -> dict[str, Path]:
    """Write the tables and PNGs into `folder` (an eval results folder); return what was written.

    All or none: every file is rendered in memory first, and only then is each renamed into
    place, so a failure while drawing leaves the folder's earlier report as it was instead of a
    new table beside an old chart."""
    folder = Path(folder)
    metrics_doc, manifest = read_results(folder)
    table = build_table(metrics_doc, manifest, str(folder / "metrics.json"))
    rendered = {"table.md": to_markdown(table).encode("utf-8"), "table.csv": to_csv(table).encode("utf-8"),
                "table.json": dump_json(table).encode("utf-8"), "chart.png": chart(table)}
    curves = loss_curves(manifest)
    if curves is not None:
        rendered["loss_curves.png"] = curves
    blocked = [name for name in rendered if (folder / name).exists() and not (folder / name).is_file()]
    if blocked:   # checked before the first write: the report stays all old or all new
        raise UserError(f"{folder / blocked[0]} is a folder (or another non-file) where the report writes its "
                        f"{blocked[0]}; move it away, nothing was rewritten")
    for name, data in rendered.items():
        atomic_write_bytes(folder / name, data)
    return {name: folder / name for name in rendered}
