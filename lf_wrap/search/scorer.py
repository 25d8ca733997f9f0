"""Scoring candidates in one running engine: the base model loaded once (no LoRA), each
candidate's merged delta patched into its weights (lf_wrap.serving.patching), the search or
report rows generated greedily, each task scored by its own metrics (lf_wrap.tasks).

Why patching and not LoRA requests (measured in bench/bench_search_paths.py, README): on CPU a
request through a LoRA slot costs 1.5-6x a base request, and a linear candidate as an exact
adapter has the ranks of all adapters together; a patched candidate runs at base speed, for
any method (ties and dare exactly, no SVD), and costs a fraction of a second to patch. The base
itself is the engine with nothing patched; a specialist is its adapter alone at weight 1 (the
adapter merged into the base, as `merge adapters --as model` would write it); the joint adapter
(SearchRecipe.joint) is patched in the same way, whole."""

from __future__ import annotations

import logging
import os
import time

from lf_wrap.serving.engine import Engine, EngineSpec, Job
from lf_wrap.merge.checks import MergePlan
from lf_wrap.search.candidates import JOINT, Candidate, deltas, freeze, thaw
from lf_wrap.search.ledger import Ledger
from lf_wrap.search.splits import TaskRows

log = logging.getLogger(__name__)
BASE = "base"


def key_of(candidate: Candidate | None) -> str:
    return BASE if candidate is None else candidate.label()


def as_dict(candidate: Candidate | None) -> dict | None:
    if candidate is None:
        return None
    return {"method": candidate.method, "weights": [thaw(w) for w in candidate.weights], "density": candidate.density,
            "seed": candidate.seed, **({"space": candidate.space} if candidate.space != "full" else {})}


def from_dict(data: dict | None) -> Candidate | None:
    if data is None:
        return None
    return Candidate(data["method"], tuple(freeze(w) for w in data["weights"]), data.get("density"), data.get("seed"),
                     data.get("space", "full"))


def _jobs(rows: dict[str, TaskRows]) -> dict[str, list[Job]]:
    """Every request of the search and of the report rows, task after task, in row order."""
    return {kind: [Job(BASE, r.token_ids, task_rows.max_new_tokens)
                   for task_rows in rows.values() for r in getattr(task_rows, kind)]
            for kind in ("search", "report")}


class PatchedServer:
    """Serves (rows kind, candidate dict) -> the predictions of that kind's jobs, in order, from
    one engine whose weights it patches. Picklable: each data-parallel replica builds its own
    from the merge settings (and reads the adapters itself)."""

    def __init__(self, merge_config: dict, jobs: dict[str, list[Job]], batch_size: int,
                 joint_config: dict | None = None):
        self.merge_config, self.jobs, self.batch_size = merge_config, jobs, batch_size
        self.joint_config = joint_config

    def __call__(self, engine: Engine):
        from lf_wrap.merge.checks import check_inputs
        from lf_wrap.merge.config import MergeConfig

        plan = check_inputs(MergeConfig.model_validate(self.merge_config))
        joint = check_inputs(MergeConfig.model_validate(self.joint_config)) if self.joint_config else None
        return self.bind(engine, plan, joint)

    def bind(self, engine: Engine, plan: MergePlan, joint: MergePlan | None = None):
        from lf_wrap.serving.server import PatchServer

        server = PatchServer(engine, plan.modules, plan.base_dir)

        def serve(payload: tuple[str, dict | None]) -> list[str]:
            kind, data = payload
            candidate = from_dict(data)
            if candidate is not None and candidate.method == JOINT:
                server.switch(key_of(candidate), lambda patcher: patcher.apply(deltas(plan, candidate, joint)))
            elif candidate is None or not any(candidate.numbers()):
                server.switch(None)
            else:
                server.switch(key_of(candidate), lambda patcher: patcher.apply(deltas(plan, candidate)))
            jobs, out = self.jobs[kind], []
            for start in range(0, len(jobs), self.batch_size):
                out += [r["prediction"] for r in engine.run(jobs[start:start + self.batch_size])]
            return out

        serve.restore = server.restore
        return serve


class Scorer:
    """`score(kind, candidate)` / `score_many(kind, candidates)` -> ledger entries (reused when the
    ledger has them). Engines start on the first candidate that needs generating, and only then:
    one in this process, or `replicas` in child processes (data parallel: a round's candidates
    spread over them, each replica scoring a whole candidate)."""

    def __init__(self, spec: EngineSpec, plan: MergePlan, rows: dict[str, TaskRows], ledger: Ledger,
                 batch_size: int, replicas: int = 1, answers=None, joint: MergePlan | None = None):
        self.spec, self.plan, self.rows, self.ledger, self.replicas = spec, plan, rows, ledger, replicas
        self.joint = joint              # the joint adapter's plan (SearchRecipe.joint), or None
        self.answers = answers          # the eval's own answers where they may be used (search.from_eval)
        self.from_eval = 0
        merge_config = plan.config.model_dump(mode="json", by_alias=True)
        joint_config = joint.config.model_dump(mode="json", by_alias=True) if joint is not None else None
        self.server = PatchedServer(merge_config, _jobs(rows), batch_size, joint_config)
        self.engine: Engine | None = None
        self.pool = None
        self.serve = None
        self.scored = self.reused = 0
        self.engine_start_seconds: float | None = None
        self.generate_seconds = 0.0

    def _start(self) -> None:
        started = time.monotonic()
        where = f"{self.replicas} engine replicas" if self.replicas > 1 else "one engine"
        log.info(f"search: starting {where} on {self.spec.model} (once; every candidate is patched in)")
        # Patching reaches into the model, so the engine core must run in the engine's process
        # (vLLM's default on a GPU is a separate process; lf-wrap's CPU default already is this one).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if self.replicas > 1:
            from lf_wrap.serving.engine import ReplicaPool

            devices = self.spec.kwargs.get("tensor_parallel_size", 1)
            self.pool = ReplicaPool(self.spec, self.replicas, devices, server=self.server)
        else:
            self.engine = Engine(self.spec)
            self.serve = self.server.bind(self.engine, self.plan, self.joint)
        self.engine_start_seconds = round(time.monotonic() - started, 2)

    def close(self, after: BaseException | None = None) -> None:
        """`after`: the error or interrupt that stops the search. The engine may then still hold the
        requests it was running, and restoring the base weights refuses: the process ends anyway,
        so that is logged, never raised over `after` (one message for the user, not two)."""
        try:
            self._close()
        except Exception as err:
            if after is None:
                raise
            log.debug(f"search: closing the engine after {type(after).__name__}: {err}")

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.engine is not None:
            try:
                self.serve.restore()
            finally:                  # restoring may refuse after an interrupt; the engine still goes
                self.engine.close()
                self.engine = None

    def score(self, kind: str, candidate: Candidate | None) -> dict:
        return self.score_many(kind, [candidate])[0]

    def score_many(self, kind: str, candidates: list[Candidate | None]) -> list[dict]:
        """Scores from the ledger where it has them (another worker's too: read again first),
        the others computed here; in a shared search only those this process claims, then those
        another worker was scoring, once it has written them (or died: then here)."""
        self.ledger.refresh()
        missing = {key_of(c): c for c in candidates if self.ledger.get(kind, key_of(c)) is None}
        before = self.scored
        while missing:
            with self.ledger.claim(kind, list(missing)) as mine:
                self.ledger.refresh()                     # written by another worker since
                todo = [missing[k] for k in mine if self.ledger.get(kind, k) is None]
                self._generate(kind, self._take_from_eval(kind, todo))
            missing = {k: c for k, c in missing.items() if self.ledger.get(kind, k) is None}
            if missing and not mine:
                self.ledger.wait(kind, next(iter(missing)))
        self.reused += len(candidates) - (self.scored - before)      # the eval's answers among them
        return [self.ledger.get(kind, key_of(c)) for c in candidates]

    def _take_from_eval(self, kind: str, todo: list[Candidate | None]) -> list[Candidate | None]:
        """Record the eval's answers where they may be used (search.from_eval); the rest, to generate."""
        if self.answers is None:
            return todo
        left = []
        for candidate in todo:
            got = self.answers.predictions(kind, candidate)
            if got is None:
                left.append(candidate)
            else:
                self._record(kind, candidate, got, 0.0, source=self.answers.source(candidate))
                self.from_eval += 1
        return left

    def _generate(self, kind: str, todo: list[Candidate | None]) -> None:
        if not todo:
            return
        if self.engine is None and self.pool is None:
            self._start()
        payloads = [(kind, as_dict(c)) for c in todo]
        if self.pool is not None:
            last = time.monotonic()                   # seconds: since the previous result came back
            for index, predictions in self.pool.imap(payloads):
                now = time.monotonic()
                self._record(kind, todo[index], predictions, now - last)
                last = now
        else:
            for candidate, payload in zip(todo, payloads):
                started = time.monotonic()
                predictions = self.serve(payload)
                self._record(kind, candidate, predictions, time.monotonic() - started)

    def _record(self, kind: str, candidate: Candidate | None, predictions: list[str], seconds: float,
                source: str | None = None) -> dict:
        entry = {"rows": kind, "key": key_of(candidate), "candidate": as_dict(candidate), "metrics": {},
                 **({"from_eval": source} if source else {})}
        per_row, start = {}, 0
        for task, task_rows in self.rows.items():
            requests = getattr(task_rows, kind)
            got, start = predictions[start:start + len(requests)], start + len(requests)
            references = [r.references for r in requests]
            definition, no_answer = task_rows.data.definition, task_rows.data.no_answer_text
            scores = definition.family.rows(got, references, no_answer)
            entry["metrics"][task] = definition.family.corpus(scores)
            per_row[task] = {"row_scores": scores}
            if kind == "report":
                per_row[task]["predictions"] = got
        entry["per_row"] = per_row
        self.generate_seconds += seconds
        entry["seconds"] = round(seconds, 2)
        self.scored += source is None
        return self.ledger.add(entry)


def headline_scores(entry: dict, rows: dict[str, TaskRows]) -> dict[str, float]:
    return {task: entry["metrics"][task][r.data.definition.headline] for task, r in rows.items()}


def row_scores(entry: dict) -> dict[str, list[dict]]:
    """task -> the entry's per-row scores (what intervals and lower bounds are computed from)."""
    return {task: data["row_scores"] for task, data in entry["per_row"].items()}
