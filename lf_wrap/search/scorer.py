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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Part:
    """Some of the search rows: task -> indices of its search rows (a stage of lf_wrap.search.pruning)."""

    name: str
    rows: dict[str, list[int]]
    key: tuple | None = None         # the part of Judge.part_gains it makes whole: (fold or None, task)


def scored_rows(entry: dict) -> dict[str, dict[int, dict]]:
    """task -> {search row index: its scores} of a ledger entry, whole or partial."""
    out = {}
    for task, data in entry["per_row"].items():
        indices = data.get("rows", range(len(data["row_scores"])))
        out[task] = dict(zip(indices, data["row_scores"]))
    return out


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

        def serve(payload: tuple) -> list[str]:
            """(kind, candidate dict) or (kind, candidate dict, indices of that kind's jobs to run)."""
            kind, data, picks = (*payload, None)[:3]
            candidate = from_dict(data)
            if candidate is not None and candidate.method == JOINT:
                server.switch(key_of(candidate), lambda patcher: patcher.apply(deltas(plan, candidate, joint)))
            elif candidate is None or candidate.is_base():
                server.switch(None)
            else:
                server.switch(key_of(candidate), lambda patcher: patcher.apply(deltas(plan, candidate)))
            jobs, out = self.jobs[kind], []
            jobs = jobs if picks is None else [jobs[i] for i in picks]
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
        self.generated = {"search": 0, "report": 0}      # rows generated (requests sent), by kind
        self.offsets, start = {}, 0                      # task -> where its search rows start among the jobs
        for task, task_rows in rows.items():
            self.offsets[task], start = start, start + len(task_rows.search)
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

    def score_many(self, kind: str, candidates: list[Candidate | None], part: Part | None = None) -> list[dict]:
        """Scores from the ledger where it has them (another worker's too: read again first),
        the others computed here; in a shared search only those this process claims, then those
        another worker was scoring, once it has written them (or died: then here). `part`: only
        those search rows are needed (an entry may then be partial); without it, every row (a
        partial entry is completed: only its rows not yet scored are generated)."""
        self.ledger.refresh()
        missing = {key_of(c): c for c in candidates if self._needed(kind, c, part)}
        before = self.scored
        while missing:
            with self.ledger.claim(kind, list(missing)) as mine:
                self.ledger.refresh()                     # written by another worker since
                todo = [missing[k] for k in mine if self._needed(kind, missing[k], part)]
                self._generate(kind, self._take_from_eval(kind, todo), part)
            missing = {k: c for k, c in missing.items() if self._needed(kind, c, part)}
            if missing and not mine:
                self.ledger.wait(kind, next(iter(missing)))
        self.reused += len(candidates) - (self.scored - before)      # the eval's answers among them
        return [self.ledger.get(kind, key_of(c)) or self.ledger.partial(kind, key_of(c)) for c in candidates]

    def _needed(self, kind: str, candidate: Candidate | None, part: Part | None) -> dict[str, list[int]]:
        """task -> the search rows of `part` (every row without it) the ledger lacks for `candidate`."""
        key = key_of(candidate)
        if self.ledger.get(kind, key) is not None:
            return {}
        want = part.rows if part is not None else {t: range(len(getattr(r, kind))) for t, r in self.rows.items()}
        earlier = self.ledger.partial(kind, key)
        have = scored_rows(earlier) if earlier is not None else {}
        needed = {t: [i for i in rows if i not in have.get(t, {})] for t, rows in want.items()}
        return {t: rows for t, rows in needed.items() if rows}

    def _picks(self, kind: str, candidate: Candidate | None, part: Part | None) -> list[int] | None:
        """The indices of the jobs to run for `candidate`: None for all of them (nothing on record)."""
        if self.ledger.partial(kind, key_of(candidate)) is None and part is None:
            return None
        needed = self._needed(kind, candidate, part)
        return [self.offsets[t] + i for t in self.rows for i in needed.get(t, [])]

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

    def _generate(self, kind: str, todo: list[Candidate | None], part: Part | None = None) -> None:
        if not todo:
            return
        if self.engine is None and self.pool is None:
            self._start()
        picks = [self._picks(kind, c, part) for c in todo]
        payloads = [(kind, as_dict(c)) if p is None else (kind, as_dict(c), p) for c, p in zip(todo, picks)]
        if self.pool is not None:
            last = time.monotonic()                   # seconds: since the previous result came back
            for index, predictions in self.pool.imap(payloads):
                now = time.monotonic()
                self._file(kind, todo[index], predictions, now - last, picks[index], part)
                last = now
        else:
            for candidate, payload, chosen in zip(todo, payloads, picks):
                started = time.monotonic()
                predictions = self.serve(payload)
                self._file(kind, candidate, predictions, time.monotonic() - started, chosen, part)

    def _file(self, kind: str, candidate: Candidate | None, predictions: list[str], seconds: float,
              picks: list[int] | None, part: Part | None) -> dict:
        self.generated[kind] += len(predictions)
        if picks is None:
            return self._record(kind, candidate, predictions, seconds)
        return self._record_part(kind, candidate, predictions, seconds, picks, part)

    def _record_part(self, kind: str, candidate: Candidate | None, predictions: list[str], seconds: float,
                     picks: list[int], part: Part | None) -> dict:
        """The rows of `picks` added to the candidate's partial entry: a new partial line, or a
        whole one (the same line a single pass writes) once every row is scored."""
        earlier = self.ledger.partial(kind, key_of(candidate))
        have = scored_rows(earlier) if earlier is not None else {}
        parts = list(earlier.get("parts", [])) if earlier is not None else []
        parts += [part.name] if part is not None else ["the rest"]
        got: dict[str, list[tuple[int, str]]] = {}
        for pick, prediction in zip(picks, predictions):
            task = max((t for t in self.offsets if self.offsets[t] <= pick), key=self.offsets.get)
            got.setdefault(task, []).append((pick - self.offsets[task], prediction))
        for task, pairs in got.items():
            requests = getattr(self.rows[task], kind)
            data = self.rows[task].data
            scores = data.definition.family.rows([p for _, p in pairs], [requests[i].references for i, _ in pairs],
                                                 data.no_answer_text)
            have.setdefault(task, {}).update({i: score for (i, _), score in zip(pairs, scores)})
        whole = all(len(have.get(t, {})) == len(getattr(r, kind)) for t, r in self.rows.items())
        entry = {"rows": kind, "key": key_of(candidate), "candidate": as_dict(candidate), "metrics": {},
                 "per_row": {}, "parts": parts, **({} if whole else {"partial": True})}
        for task, task_rows in self.rows.items():
            if task not in have:
                continue
            indices = sorted(have[task])
            scores = [have[task][i] for i in indices]
            if len(indices) == len(getattr(task_rows, kind)):
                entry["metrics"][task] = task_rows.data.definition.family.corpus(scores)
            entry["per_row"][task] = {"row_scores": scores} if whole else {"rows": indices, "row_scores": scores}
        self.generate_seconds += seconds
        entry["seconds"] = round(seconds, 2)
        self.scored += 1
        return self.ledger.add(entry)

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
