"""A search shared by several workers (`workers: shared`): every `lf-wrap merge search` run of the
same recipe is one worker; on one machine or on several nodes whose `out` is one shared folder,
they share one Optuna study (the folder's journal, or an RDB `storage`) and one score ledger,
and each scores other candidates. docs/search-workers.md says how to start them.

What keeps them apart (every lock a flock, dropped by the kernel when its process dies, kill -9
included, so nothing a dead worker held is ever in the way):
  .<out>.lock              shared by the workers (a single run, which needs it exclusive, is refused)
  .<out>.setup.lock        exclusive, around a worker's setup: the folder checked against the
                           manifest (same inputs and space), the manifest written, the study
                           created and the reference merges enqueued once
  workers/alive/<id>       held by worker <id> while it runs: how the others tell it is alive
  workers/optimiser.lock   exclusive, around each ask: the stale trials of dead workers failed and
                           asked again, then at most `budget` trials asked in all
  workers/claims/          one claim per candidate being scored (lf_wrap.search.ledger)
  workers/finish.lock      exclusive, around the final steps (leaderboard, report rows, best merge)

Why not Optuna's heartbeats: in Optuna 5.0 only RDBStorage records them (JournalStorage has
none), and only inside `study.optimize`; the search asks and tells. A worker's flock is its
heartbeat here, for either storage: a trial whose worker holds no lock any more is stale.

Who finishes: every worker that sees the budget complete waits for the finishing lock; the
first does the final steps and writes the manifest `finished`; each one after it finds that and
prints the same summary without scoring anything. If the finishing worker dies, the next one
finishes (every score it had written is reused)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from lf_wrap.core.locks import folder_lock, held, is_held, lock_file
from lf_wrap.core.manifest import FINISHED, read_manifest_file
from lf_wrap.search import optimiser

log = logging.getLogger(__name__)
WORKERS = "workers"
POLL_SECONDS = 2.0       # how often a worker with nothing to ask looks at the others' trials


class Solo:
    """One run at a time (the default): the folder lock exclusive, every unfinished trial a
    leftover of a stopped run."""

    id: str | None = None
    shared = False

    def hold(self, out: Path):
        return folder_lock(out, option="out")

    def setup(self):
        return nullcontext()

    def register(self) -> None:
        pass

    def requeue(self, study) -> int:
        return optimiser.requeue_unfinished(study)

    def ask(self, study, want: int, total: int) -> list:
        return [study.ask() for _ in range(min(want, total - len(optimiser.finished(study))))]

    def wait(self, study) -> None:
        raise AssertionError("a single run has nothing to wait for")

    @contextmanager
    def finishing(self, out: Path) -> Iterator[dict | None]:
        yield None


class Crew(Solo):
    """This process as one worker of a shared search in `out`."""

    shared = True

    def __init__(self, out: Path):
        self.out = out
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.folder = out / WORKERS
        self._stack = ExitStack()
        self._waiting_said = False

    @contextmanager
    def hold(self, out: Path) -> Iterator[None]:
        with self._stack, folder_lock(out, option="out", shared=True):
            try:
                yield
            finally:
                (self.folder / "alive" / self.id).unlink(missing_ok=True)

    def setup(self):
        real = lock_file(self.out)
        return held(real.with_name(f".{self.out.name}.setup.lock"))

    def register(self) -> None:
        """Hold workers/alive/<id> for the rest of the run (released when the process ends)."""
        path = self.folder / "alive" / self.id
        fd = self._stack.enter_context(held(path))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv}).encode(), 0)

    def alive(self, worker: str | None) -> bool:
        return worker is not None and (worker == self.id or is_held(self.folder / "alive" / worker))

    def requeue(self, study) -> int:
        with held(self.folder / "optimiser.lock"):
            return optimiser.requeue_stale(study, self.alive)

    def ask(self, study, want: int, total: int) -> list:
        """At most `want` trials, and never more than `budget` asked in all workers together; the
        trials of workers that died first failed and asked again (their candidates come back)."""
        with held(self.folder / "optimiser.lock"):
            stale = optimiser.requeue_stale(study, self.alive)
            if stale:
                log.info(f"search: {stale} candidate(s) of a worker that stopped asked again")
            busy = len(optimiser.finished(study)) + len(optimiser.running(study))
            trials = [study.ask() for _ in range(max(0, min(want, total - busy)))]
            for trial in trials:
                trial.set_user_attr("worker", self.id)
            return trials

    def wait(self, study) -> None:
        """Nothing left to ask: the rest of the budget is being scored by other workers."""
        if not self._waiting_said:
            others = sorted({t.user_attrs.get("worker", "?") for t in optimiser.running(study)})
            log.info(f"search: the budget's last candidates are being scored by worker(s) {', '.join(others)}; "
                     "waiting (a candidate of a worker that stops is asked again here)")
            self._waiting_said = True
        time.sleep(POLL_SECONDS)

    @contextmanager
    def finishing(self, out: Path) -> Iterator[dict | None]:
        """The finishing lock; yields the manifest when another worker has already finished."""
        with held(self.folder / "finish.lock", wait=False) as fd:
            if fd is not None:
                yield _finished(out)
                return
        log.info("search: the budget is complete; another worker is writing the leaderboard and the final "
                 "figures: waiting for it")
        with held(self.folder / "finish.lock"):
            yield _finished(out)


    def scores_by_worker(self, ledger) -> dict[str, int]:
        """worker id -> how many of the search's scores it computed (what the manifest records)."""
        ledger.refresh()
        counts: dict[str, int] = {}
        for entry in ledger.entries.values():
            worker = entry.get("worker", "a single run")
            counts[worker] = counts.get(worker, 0) + 1
        return counts


def _finished(out: Path) -> dict | None:
    from lf_wrap.search.folder import MANIFEST

    try:
        manifest = read_manifest_file(out / MANIFEST)
    except Exception:
        return None
    return manifest if manifest.get("status") == FINISHED and "final" in manifest else None


def crew(recipe, out: Path) -> Solo:
    return Crew(out) if recipe.workers == "shared" else Solo()
