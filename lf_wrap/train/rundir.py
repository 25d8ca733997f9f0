"""What a run directory already holds, and what `lf-wrap train` into it does about that.

The rules, in the order they apply:

- A run directory never is, contains or lies inside something the run reads (the model
  folder, the dataset folder and files, any path an argument names): every run rewrites its
  manifest, log and arg file, and --force removes `adapter/`. --force does not lift this.
- A folder without lf-wrap's manifest.json (and not empty) is not ours: refused.
- Other arguments than the run there (train_args.yaml, resume_from_checkpoint aside): refused,
  naming the differing keys; --force (train again from step 1) or another --run-dir.
- The same arguments: a finished run is skipped; an interrupted, failed or killed one
  (manifest still `running`) continues from its last checkpoint, which is what a user who
  types the same command again wants. Without a checkpoint there is nothing to lose: it starts
  again from step 1. Either way it says so in one line, and the manifest records it.
- --force trains again from step 1 and says which checkpoints it removes.

The command printed when a run is interrupted is the whole command again (recipe, --smoke,
every --set, --run-dir, --nproc), so that following it continues the same run."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lf_wrap.core.errors import UserError
from lf_wrap.core.manifest import FAILED, FINISHED, INTERRUPTED

RESUME_KEY = "resume_from_checkpoint"
_HOLDS = {FINISHED: "a finished run", FAILED: "a failed run", INTERRUPTED: "an interrupted run"}


def _holds(status: str | None) -> str:
    return _HOLDS.get(status, "an unfinished run")     # `running` with no lock held: lf-wrap was killed


# ---------------------------------------------------------------- inputs


def run_inputs(args: dict[str, Any], dataset_dir: Path, datasets: dict[str, Path | None]) -> list[tuple[str, str]]:
    """(what, path as named) for everything on disk a run reads: the model folder, the dataset
    folder and files, and any existing path an argument names (a reference or reward model's
    adapters, a deepspeed config...). The checkpoint a run resumes from is left out: it lies
    inside its own run directory by design."""
    found = [("the model (model_name_or_path)", str(args.get("model_name_or_path", ""))),
             ("the dataset folder (lf_wrap.dataset_dir)", str(dataset_dir))]
    found += [(f"dataset '{name}'", str(path)) for name, path in datasets.items() if path is not None]
    for key, value in args.items():
        if key in ("model_name_or_path", RESUME_KEY):
            continue
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                parts = dict.fromkeys(p.strip() for p in [text, *text.split(",")])   # ordered, no repeats
                found += [(f"`{key}`", part) for part in parts if part]
    return [(what, path) for what, path in found if path and Path(path).expanduser().exists()]


def check_apart_from_inputs(run_dir: Path, inputs: list[tuple[str, str]]) -> None:
    mine = Path(run_dir).resolve()
    for what, path in inputs:
        other = Path(path).expanduser().resolve()
        relation = ("is" if mine == other else "lies inside" if mine.is_relative_to(other)
                    else "contains" if other.is_relative_to(mine) else None)
        if relation:
            raise UserError(f"run directory {run_dir} {relation} {what} {path}; a run directory must lie apart "
                            "from what the run reads (even with --force); choose another --run-dir")


# ---------------------------------------------------------------- what is there


def read_manifest(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def existing_run(run_dir: Path) -> dict | None:
    """The manifest of the run already in `run_dir`; None for a new or empty folder. Refuses a
    folder lf-wrap did not make, before anything is written into it."""
    if not run_dir.exists():
        return None
    previous = read_manifest(run_dir)
    if previous is None and any(p.name != ".lock" for p in run_dir.iterdir()):
        raise UserError(f"{run_dir} exists and is not an lf-wrap run directory (no manifest.json); "
                        "choose another --run-dir")
    return previous


def checkpoints(adapter: Path, complete: bool = True) -> list[Path]:
    """adapter/checkpoint-N, lowest N first. `complete`: only those holding trainer_state.json,
    which transformers writes last; a checkpoint being saved when the run stopped lacks it."""
    found = [(int(p.name[11:]), p) for p in Path(adapter).glob("checkpoint-*")
             if p.name[11:].isdigit() and p.is_dir() and (not complete or (p / "trainer_state.json").is_file())]
    return [p for _, p in sorted(found)]


def _differing(run_dir: Path, train_args: dict) -> list[str]:
    try:
        old = yaml.safe_load((run_dir / "train_args.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        old = None
    if not isinstance(old, dict):
        return ["all: its train_args.yaml is missing or unreadable"]
    keys = (set(old) | set(train_args)) - {RESUME_KEY}
    return sorted(k for k in keys if old.get(k) != train_args.get(k))


# ---------------------------------------------------------------- what to do


@dataclass
class Rerun:
    """What this run does about the one already in its directory."""

    previous: dict | None = None     # that run's manifest
    skip: bool = False               # finished with the same arguments
    resume: Path | None = None       # its last checkpoint, chosen by lf-wrap
    remove: bool = False             # remove adapter/ first: training starts from step 1
    say: str | None = None           # the one line that tells the user

    def earlier_attempts(self) -> list[dict]:
        """For the new manifest: every attempt before this one, oldest first."""
        if self.previous is None:
            return []
        keep = ("status", "started", "ended", "exit_code", "resumed_from", "argv")
        return [*self.previous.get("earlier_attempts", []), {k: self.previous.get(k) for k in keep}]


def decide(run_dir: Path, previous: dict | None, train_args: dict, force: bool) -> Rerun:
    if previous is None:
        return Rerun()
    status, adapter = previous.get("status"), run_dir / "adapter"
    explicit = train_args.get(RESUME_KEY)
    if force:
        if explicit or not adapter.exists():
            return Rerun(previous, say=f"--force: training again in {run_dir}"
                                       + (f", from {explicit}" if explicit else " from step 1"))
        saved = ", ".join(p.name for p in checkpoints(adapter, complete=False))
        return Rerun(previous, remove=True, say=f"--force: removing {adapter} (the adapter"
                                                + (f" and its checkpoints {saved}" if saved else "")
                                                + "); training from step 1")
    own = checkpoints(adapter)
    changed = _differing(run_dir, train_args)
    if changed:
        pair = shlex.quote(f"{RESUME_KEY}={own[-1]}") if own and status != FINISHED else None
        keep = f", --force --set {pair} to continue from its last checkpoint with the new arguments" if pair else ""
        raise UserError(f"{run_dir} holds {_holds(status)} with other arguments (differing: {', '.join(changed)}); "
                        f"pass --force to train again there from step 1 (it removes the adapter and its "
                        f"checkpoints){keep}, or choose another --run-dir")
    if status == FINISHED:
        return Rerun(previous, skip=True, say=f"{run_dir} already finished ({previous.get('ended')}); "
                                              "skipping. Pass --force to train again.")
    if explicit:
        other = (f" (its own last checkpoint is {own[-1]}: leave out that --set to continue from there)"
                 if own and Path(explicit).resolve() != own[-1].resolve() else "")
        return Rerun(previous, say=f"{run_dir} holds {_holds(status)}; resuming from {explicit}, as "
                                   f"--set {RESUME_KEY} says{other}")
    if own:
        return Rerun(previous, resume=own[-1], say=f"{run_dir} holds {_holds(status)}; resuming from its "
                                                   f"last checkpoint {own[-1]} (--force starts again from step 1)")
    return Rerun(previous, remove=adapter.exists(),
                 say=f"{run_dir} holds {_holds(status)} with no checkpoint; starting again from step 1")


# ---------------------------------------------------------------- how to continue


def continue_command(recipe: Path, sets: list[str], smoke: bool, run_dir: Path, nproc: int | None) -> list[str]:
    """The command that continues this run: the same arguments, the run directory named (a
    default one is timestamped), and no --set resume_from_checkpoint once the run has a
    checkpoint of its own (lf-wrap then picks its newest)."""
    if checkpoints(run_dir / "adapter"):
        sets = [s for s in sets if s.partition("=")[0].strip().removeprefix("train.") != RESUME_KEY]
    return ["lf-wrap", "train", str(recipe), *(["--smoke"] if smoke else []),
            *[arg for pair in sets for arg in ("--set", pair)], "--run-dir", str(run_dir),
            *(["--nproc", str(nproc)] if nproc is not None else [])]


def how_to_continue(run_dir: Path, command: list[str]) -> str:
    own = checkpoints(run_dir / "adapter")
    where = (f"Its last checkpoint is {own[-1]}; the same command continues from there"
             if own else "No checkpoint was saved yet; the same command starts again from step 1")
    return f"{where} (with --force it starts again from step 1):\n  {shlex.join(command)}"
