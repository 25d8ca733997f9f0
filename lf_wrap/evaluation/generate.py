"""One engine's share of `lf-wrap eval`: its pending rows in batches, each finished batch's
prediction records handed to the predictions files, one progress bar (lf_wrap.evaluation.run
plans which rows and engines)."""

from __future__ import annotations

import time
from collections import defaultdict
from itertools import groupby

from lf_wrap.core.console import Progress
from lf_wrap.serving.engine import Job, run_batches
from lf_wrap.evaluation.models import ResolvedModel
from lf_wrap.evaluation.recipe import EvalRecipe
from lf_wrap.evaluation.requests import Request


def _record(model: ResolvedModel, request: Request, output: dict) -> dict:
    return {"row": request.row, "id": request.id, "model": model.name, "task": request.task,
            "prompt_sha256": request.prompt_sha256, "prediction": output["prediction"],
            "references": request.references, "finish_reason": output["finish_reason"],
            "prompt_tokens": output["prompt_tokens"], "completion_tokens": output["completion_tokens"],
            "truncated": request.truncated, "token_ids": output["token_ids"]}


def _batches(pending: list, size: int, one_model: bool) -> list[list]:
    """`size` rows a batch; with `one_model`, a batch never holds two models' rows."""
    runs = [list(run) for _, run in groupby(pending, key=lambda item: item[0].name)] if one_model else [pending]
    return [run[i:i + size] for run in runs for i in range(0, len(run), size)]


def generate(recipe: EvalRecipe, spec, files: dict, pending: list, label: str, server=None) -> dict:
    """Generate `pending` [(model, request)] in one engine (or its data-parallel copies): each
    batch's records appended to `files[(model, task)]` as it finishes, a progress bar of rows
    with the generation rate. Returns the engine's timing for the manifest. With a `server`
    (a patched engine), a batch holds one model's rows only."""

    batches = _batches(pending, recipe.batch_size, server is not None)
    jobs = [[Job(m.name, r.token_ids, recipe.tasks[r.task].max_new_tokens) for m, r in batch] for batch in batches]
    started = time.monotonic()
    ready: list[float] = []
    bars: list = []
    served: list = []
    tokens, last = 0, started

    def engine_ready(serve) -> None:   # the bar starts with generation, so rows/s leaves the start out
        ready.append(time.monotonic())
        served.append(serve)
        bars.append(Progress(label, len(pending), "row"))

    try:
        for index, outputs in run_batches(spec, jobs, recipe.engine.data_parallel_size,
                                          recipe.engine.tensor_parallel_size, on_ready=engine_ready,
                                          server=server):
            bar = bars[0]
            by_file = defaultdict(list)
            for (model, request), output in zip(batches[index], outputs):
                by_file[(model.name, request.task)].append(_record(model, request, output))
                tokens += output["completion_tokens"]
            for key, records in by_file.items():
                files[key].append(records)
            last = time.monotonic()
            generating = max(last - ready[0], 1e-9)
            bar.update(bar.done + len(outputs), f"{tokens / generating:.0f} generated tok/s")
            if bar.done >= bar.total:
                bar.close()       # before the engine shuts down, so the rate is generation's
    finally:
        for bar in bars:
            bar.close()
    start_seconds = ready[0] - started
    seconds = max(last - ready[0], 1e-9)
    patching = served[0].timing() if served and hasattr(served[0], "timing") else {}
    return {"rows": len(pending), "completion_tokens": tokens, "engine_start_seconds": round(start_seconds, 2),
            "generate_seconds": round(seconds, 2), "rows_per_second": round(len(pending) / seconds, 3),
            "tokens_per_second": round(tokens / seconds, 2), **patching}
