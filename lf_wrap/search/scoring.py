"""Scoring candidates in one running engine: the base model loaded once (no LoRA), each
candidate's merged delta patched into its weights (lf_wrap.search.patching), the search or
report rows generated greedily, each task scored by its own metrics (lf_wrap.tasks).

Why patching and not LoRA requests (measured in bench/bench_search_paths.py, README): on CPU a
request through a LoRA slot costs 1.5-6x a base request, and a linear candidate as an exact
adapter has the ranks of all adapters together; a patched candidate runs at base speed, for
any method (ties and dare exactly, no SVD), and costs a fraction of a second to patch. The base
itself is the engine with nothing patched; a specialist is its adapter alone at weight 1 (the
adapter merged into the base, as `merge adapters --as model` would write it)."""

from __future__ import annotations

import logging
import os
import time

from lf_wrap.evaluation import metrics, stats
from lf_wrap.evaluation.engine import Engine, EngineSpec, Job
from lf_wrap.merge.checks import MergePlan
from lf_wrap.search.candidates import Candidate, deltas
from lf_wrap.search.ledger import Ledger
from lf_wrap.search.rows import TaskRows

log = logging.getLogger(__name__)
BASE = "base"


def key_of(candidate: Candidate | None) -> str:
    return BASE if candidate is None else candidate.label()


def as_dict(candidate: Candidate | None) -> dict | None:
    if candidate is None:
        return None
    return {"method": candidate.method, "weights": list(candidate.weights), "density": candidate.density,
            "seed": candidate.seed}


def from_dict(data: dict | None) -> Candidate | None:
    if data is None:
        return None
    return Candidate(data["method"], tuple(data["weights"]), data.get("density"), data.get("seed"))


class Scorer:
    """`score(kind, candidate)` -> the ledger entry (reused when the ledger has it). The engine
    starts on the first candidate that needs generating, and only then."""

    def __init__(self, spec: EngineSpec, plan: MergePlan, rows: dict[str, TaskRows], ledger: Ledger,
                 batch_size: int):
        self.spec, self.plan, self.rows, self.ledger, self.batch_size = spec, plan, rows, ledger, batch_size
        self.engine: Engine | None = None
        self.patcher = None
        self.scored = self.reused = 0
        self.engine_start_seconds: float | None = None
        self.generate_seconds = 0.0

    def _start(self) -> None:
        from lf_wrap.search.patching import WeightPatcher

        started = time.monotonic()
        log.info(f"search: starting the engine on {self.spec.model} (once; every candidate is patched into it)")
        # Patching reaches into the model, so the engine core must run in this process (vLLM's
        # default on a GPU is a separate process; lf-wrap's CPU default already is this one).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.engine = Engine(self.spec)
        self.patcher = WeightPatcher(self.engine, self.plan.modules, checkpoint=self.plan.base_dir)
        self.engine_start_seconds = round(time.monotonic() - started, 2)

    def close(self) -> None:
        if self.engine is not None:
            self.patcher.restore()
            self.engine.close()
            self.engine = None

    def score(self, kind: str, candidate: Candidate | None) -> dict:
        key = key_of(candidate)
        cached = self.ledger.get(kind, key)
        if cached is not None:
            self.reused += 1
            return cached
        if self.engine is None:
            self._start()
        started = time.monotonic()
        if candidate is None or not any(candidate.weights):
            self.patcher.restore()
        else:
            self.patcher.apply(deltas(self.plan, candidate))
        outputs = self._generate(kind)
        entry = {"rows": kind, "key": key, "candidate": as_dict(candidate), "metrics": {}}
        per_row = {}
        for task, task_rows in self.rows.items():
            requests = getattr(task_rows, kind)
            predictions = [outputs[(task, r.row)] for r in requests]
            references = [r.references for r in requests]
            definition, no_answer = task_rows.data.definition, task_rows.data.no_answer_text
            entry["metrics"][task] = metrics.score_task(definition, predictions, references, no_answer)
            if kind == "report":
                per_row[task] = {"predictions": predictions,
                                 "row_scores": stats.row_scores(definition.metric, predictions, references, no_answer)}
        if per_row:
            entry["report_rows"] = per_row
        seconds = time.monotonic() - started
        self.generate_seconds += seconds
        entry["seconds"] = round(seconds, 2)
        self.scored += 1
        return self.ledger.add(entry)

    def _generate(self, kind: str) -> dict[tuple[str, int], str]:
        jobs, keys = [], []
        for task, task_rows in self.rows.items():
            for request in getattr(task_rows, kind):
                jobs.append(Job(BASE, request.token_ids, task_rows.max_new_tokens))
                keys.append((task, request.row))
        out: dict[tuple[str, int], str] = {}
        for start in range(0, len(jobs), self.batch_size):
            results = self.engine.run(jobs[start:start + self.batch_size])
            out.update({k: r["prediction"] for k, r in zip(keys[start:start + self.batch_size], results)})
        return out


def headline_scores(entry: dict, rows: dict[str, TaskRows]) -> dict[str, float]:
    return {task: entry["metrics"][task][r.data.definition.headline] for task, r in rows.items()}
