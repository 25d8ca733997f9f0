"""`lf-wrap train`: one recipe -> one run directory holding one LoRA adapter.

Everything that can be checked is checked before `llamafactory-cli` starts, because a bad
key found by LLaMA-Factory costs a minute of imports and model loading (hours, if it sits in
a multi-node queue first). Then the run directory gets the recipe verbatim, the exact arg
file handed to `llamafactory-cli train`, the console log, the adapter in `adapter/`
(LLaMA-Factory's output_dir) and `manifest.json`; on success `<recipe>-latest` beside the run folder points
at it, which is where merge and eval recipes look for adapters."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from lf_wrap import __version__
from lf_wrap.core.environments import llamafactory_cli
from lf_wrap.core.errors import UserError
from lf_wrap.core.interrupts import Stop
from lf_wrap.core.files import atomic_write_json, atomic_write_text, sha256_file
from lf_wrap.train.lf_args import check_args, lf_schema
from lf_wrap.core.manifest import FAILED, FINISHED, INTERRUPTED, StageRecord
from lf_wrap.core.console import verbose
from lf_wrap.core.process import RECORDED_ENV, ProcessFailed, run_logged
from lf_wrap.train.checks import check_datasets, check_mixing, check_model, check_paths, data_manifest
from lf_wrap.train.recipe import Overrides, Recipe, load_recipe, merged_args, parse_overrides, training_tasks
from lf_wrap.train.progress import TrainingProgress
from lf_wrap.train.rundir import (Rerun, check_apart_from_inputs, checkpoints, continue_command, decide,
                                  existing_run, how_to_continue, run_inputs)

log = logging.getLogger(__name__)

RUNS = Path("runs")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")   # hashed; checkpoints are not


@dataclass
class TrainPlan:
    """A recipe checked and resolved: what `llamafactory-cli train` will get, minus run paths."""

    recipe: Recipe
    overrides: Overrides
    smoke: bool
    args: dict[str, Any]                 # LLaMA-Factory keys, checked and coerced
    train_datasets: list[str]            # lf_wrap.dataset, patterns resolved to names
    datasets: dict[str, Path | None]     # every dataset named -> data file (None: a remote entry)
    model: str                           # how model_name_or_path was found
    tasks: list[str] = field(default_factory=list)   # the training sets' tasks: several for a joint adapter
    versions: dict[str, str | None] = field(default_factory=dict)

    def train_args(self, run_dir: Path) -> dict[str, Any]:
        """The arg file's content: the plan plus the keys lf-wrap owns (absolute paths)."""
        section = self.recipe.lf_wrap
        return {**self.args, "dataset": ",".join(self.train_datasets),
                "dataset_dir": str(section.dataset_dir.resolve()),
                "output_dir": str((run_dir / "adapter").resolve())}


def plan_training(recipe_path: Path, sets: list[str] | tuple[str, ...] = (), smoke: bool = False) -> TrainPlan:
    """Every check `lf-wrap validate` runs; raises UserError on the first file/key to fix."""
    overrides = parse_overrides(sets)
    recipe = load_recipe(recipe_path, overrides)
    raw, origin = merged_args(recipe, overrides, smoke)
    section = recipe.lf_wrap
    # The cheap checks first: asking LLaMA-Factory for its fields takes ~10 s of imports.
    where = f"{recipe.path} ({'--set lf_wrap.dataset' if 'dataset' in overrides.section else 'lf_wrap.dataset'})"
    datasets = check_datasets(section.dataset, section.dataset_dir, where, patterns=True)
    train_datasets = list(datasets)
    model = check_model(raw, origin.get("model_name_or_path", str(recipe.path)))
    schema = lf_schema()
    for where, layer in _layers(recipe):
        check_args(layer, dict.fromkeys(layer, where), schema)
    args = check_args(raw, origin, schema)
    if args.get("eval_dataset"):
        datasets |= check_datasets(str(args["eval_dataset"]).split(","), section.dataset_dir,
                                   origin["eval_dataset"])
    check_paths(args, origin, schema.versions)
    check_mixing(args, origin, train_datasets)
    return TrainPlan(recipe=recipe, overrides=overrides, smoke=smoke, args=args, train_datasets=train_datasets,
                     datasets=datasets, model=model, tasks=training_tasks(train_datasets, section.dataset_dir),
                     versions={"lf-wrap": __version__, **schema.versions})


def _layers(recipe: Recipe) -> list[tuple[str, dict[str, Any]]]:
    """The recipe's own LLaMA-Factory values, the smoke set's included whether or not --smoke
    is given: each is checked as written, so that a value hidden today by a later layer (the
    smoke set, a --set) is not found only by the run that first goes without it."""
    layers = [(str(recipe.path), recipe.train)]
    if recipe.lf_wrap.smoke:
        layers.append((f"{recipe.path} (lf_wrap.smoke)", recipe.lf_wrap.smoke))
    return layers


# ---------------------------------------------------------------- launching


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]          # set for the child on top of the inherited environment

    def child_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        return {**environ, **self.env}

    def switches(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables that change what the launch does, as the manifest records them."""
        child = self.child_env(environ)
        return {k: child[k] for k in RECORDED_ENV if k in child}


def _enabled(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "y", "on")


def launch_spec(args_file: Path, nproc: int | None = None, environ: Mapping[str, str] | None = None) -> Launch:
    """`llamafactory-cli train ARGS_FILE` and the environment it needs.

    Multi-GPU and multi-node go through LLaMA-Factory's own launcher: FORCE_TORCHRUN=1 and
    NPROC_PER_NODE make it re-run itself under `torchrun`; NNODES, NODE_RANK, MASTER_ADDR and
    MASTER_PORT are read by it from the inherited environment. It finds `torchrun` on PATH,
    so the training environment's bin/ goes first."""
    environ = os.environ if environ is None else environ
    cli = llamafactory_cli()
    env = {"PATH": os.pathsep.join(p for p in (str(cli.parent), environ.get("PATH", "")) if p)}
    if nproc is not None:
        if nproc < 1:
            raise UserError(f"--nproc must be at least 1, got {nproc}")
        env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE=str(nproc))
    if (nproc is not None or _enabled(environ.get("FORCE_TORCHRUN"))) and re.search(r"\s", str(args_file)):
        raise UserError(f"{args_file}: LLaMA-Factory's torchrun launcher splits its arguments on spaces; "
                        "choose a --run-dir without spaces")
    return Launch(argv=[str(cli), "train", str(args_file)], env=env)


# ---------------------------------------------------------------- run directory


def default_run_dir(recipe: Recipe, now: datetime | None = None) -> Path:
    if recipe.lf_wrap.run_dir is not None:
        return recipe.lf_wrap.run_dir
    return RUNS / f"{recipe.name}-{(now or datetime.now()):%Y%m%d-%H%M%S}"


def update_latest(run_dir: Path, name: str) -> Path:
    """Point <name>-latest beside `run_dir` (runs/<name>-latest for the default run folders) at
    it: a temporary symlink renamed over the old one. A run elsewhere (the demo's, a --run-dir
    on scratch) moves the link of its own folder, never the one in runs/."""
    parent = Path(run_dir).parent
    parent.mkdir(parents=True, exist_ok=True)
    link = parent / f"{name}-latest"
    target = os.path.relpath(Path(run_dir).resolve(), parent.resolve())
    tmp = parent / f".{name}-latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        log.warning(f"could not point {link} at {run_dir} ({err.strerror})")
    return link


def _train_metrics(adapter: Path, resume: Any) -> dict:
    try:
        metrics = json.loads((adapter / "all_results.json").read_text(encoding="utf-8"))
        steps = json.loads((adapter / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError):
        return {}
    start = re.search(r"checkpoint-(\d+)", str(resume or ""))
    done = steps - (int(start.group(1)) if start else 0)
    runtime = metrics.get("train_runtime")
    return {"global_step": steps, "train_runtime": runtime, "train_loss": metrics.get("train_loss"),
            "seconds_per_step": round(runtime / done, 3) if runtime and done > 0 else None}


# ---------------------------------------------------------------- the stage


@dataclass
class TrainResult:
    run_dir: Path
    skipped: bool
    manifest: dict


def train(recipe_path: Path, sets: list[str] | tuple[str, ...] = (), run_dir: Path | None = None,
          nproc: int | None = None, smoke: bool = False, force: bool = False,
          command: list[str] | None = None) -> TrainResult:
    """Train, skip a finished run, or continue an unfinished one: see lf_wrap.train.rundir."""
    plan = plan_training(recipe_path, sets, smoke)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(plan.recipe)
    check_apart_from_inputs(run_dir, run_inputs(plan.args, plan.recipe.lf_wrap.dataset_dir, plan.datasets))
    train_args = plan.train_args(run_dir)
    args_file = run_dir / "train_args.yaml"
    launch = launch_spec(args_file.resolve(), nproc)
    existing_run(run_dir)                      # refuses a folder that is not ours before writing a lock into it
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(str(run_dir / ".lock"), timeout=0)
        lock.acquire()
    except Timeout:
        raise UserError(f"{run_dir} is in use by another `lf-wrap train`") from None
    try:
        rerun = decide(run_dir, existing_run(run_dir), train_args, force)
        if rerun.skip:
            log.info(rerun.say)
            return TrainResult(run_dir=run_dir, skipped=True, manifest=rerun.previous)
        return _run(plan, run_dir, train_args, launch, rerun, nproc, command)
    finally:
        lock.release()


def _run(plan: TrainPlan, run_dir: Path, train_args: dict, launch: Launch, rerun: Rerun, nproc: int | None,
         command: list[str] | None) -> TrainResult:
    adapter = run_dir / "adapter"
    if rerun.say:
        log.info(rerun.say)
    if rerun.remove:
        shutil.rmtree(adapter)
    if rerun.resume is not None:
        train_args = {**train_args, "resume_from_checkpoint": str(rerun.resume.resolve())}
    resume = train_args.get("resume_from_checkpoint")
    section = plan.recipe.lf_wrap
    record = StageRecord("train", command)
    manifest: dict[str, Any] = record.manifest({
        "recipe": str(plan.recipe.path),
        "recipe_sha256": sha256_file(plan.recipe.path), "task": section.task, "tasks": plan.tasks,
        "smoke": plan.smoke,
        "overrides": plan.overrides.given, "cwd": os.getcwd(), "run_dir": str(run_dir.resolve()),
        "llamafactory_argv": launch.argv, "env": launch.switches(os.environ), "versions": plan.versions,
        "model": plan.model, "validation_dataset": section.validation_dataset,
        "data": {name: data_manifest(section.dataset_dir, name, path) for name, path in plan.datasets.items()},
        "resumed_from": str(Path(resume).resolve()) if resume else None,
        "earlier_attempts": rerun.earlier_attempts(),
        "exit_code": None,
    })
    atomic_write_json(run_dir / "manifest.json", manifest)     # first: marks the folder as ours
    atomic_write_text(run_dir / "recipe.yaml", plan.recipe.text)
    atomic_write_text(run_dir / "train_args.yaml", yaml.safe_dump(train_args, sort_keys=False, allow_unicode=True))
    log.info(f"run dir {run_dir}")
    log.info(f"$ {' '.join(launch.argv)}")
    if not verbose():
        log.info(f"llamafactory-cli's output: {run_dir / 'train.log'} (lf-wrap -v shows it here too)")
    bar = TrainingProgress(adapter)

    def again() -> list[str]:         # asked when the run stops: it depends on the checkpoints saved
        return continue_command(plan.recipe.path, plan.overrides.given, plan.smoke, run_dir, nproc)

    stop = Stop()                     # which signal stopped it: the exit code a shell gives (130, 143, 129)
    try:
        try:
            done = run_logged(launch.argv, run_dir / "train.log", env=launch.env, on_line=bar.on_line)
        finally:
            bar.close()
    except ProcessFailed as failed:
        _finish(run_dir, manifest, record, FAILED, failed.record.exit_code)
        if checkpoints(adapter):
            log.info(f"{run_dir} failed. {how_to_continue(run_dir, again())}")
        raise
    except KeyboardInterrupt:
        _finish(run_dir, manifest, record, INTERRUPTED, None)
        raise stop.error(f"llamafactory-cli was stopped. Log: {run_dir / 'train.log'}\n"
                         f"{how_to_continue(run_dir, again())}") from None
    manifest["adapter_sha256"] = {name: sha256_file(adapter / name) for name in ADAPTER_FILES
                                  if (adapter / name).is_file()}
    manifest["train_metrics"] = _train_metrics(adapter, resume)
    _finish(run_dir, manifest, record, FINISHED, done.exit_code)
    link = update_latest(run_dir, plan.recipe.name)
    spent = manifest["train_metrics"].get("seconds_per_step")
    log.info(f"finished in {manifest['seconds']:.0f}s" + (f" ({spent} s/step)" if spent else "")
             + f"; adapter in {adapter}; {link} -> {run_dir}")
    return TrainResult(run_dir=run_dir, skipped=False, manifest=manifest)


def _finish(run_dir: Path, manifest: dict, record: StageRecord, status: str, exit_code: int | None) -> None:
    manifest.update(record.finish(status), exit_code=exit_code)
    atomic_write_json(run_dir / "manifest.json", manifest)
