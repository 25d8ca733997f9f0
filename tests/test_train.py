"""`lf-wrap train` end to end: the real llamafactory-cli trains the tiny model on CPU.

Each task's smoke recipe runs once (module scope) into a shared working folder under tmp; the
other tests reuse those run directories. The launch environment for multi-GPU and multi-node
is checked on the function that builds it; `--nproc 1` also runs for real (torchrun on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, read_json, run_lf_wrap

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import sha256_file
from lf_wrap.train.run import launch_spec, train, update_latest

RECIPES = REPO / "recipes"
TASKS = ["translate", "summarize", "qa"]


def smoke_sets(task: str, tiny_model: Path, prepared: Path, *extra: str) -> list[str]:
    pairs = [f"model_name_or_path={tiny_model}", f"lf_wrap.dataset=tiny_{task}_train",
             f"lf_wrap.dataset_dir={prepared}", *extra]
    return [arg for pair in pairs for arg in ("--set", pair)]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "adapter" / "trainer_log.jsonl").read_text().splitlines()]
    return [(r["current_steps"], r["loss"]) for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The user's working folder: runs/ lands here, never in the repository."""
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def smoke_run(work, tiny_model, prepared):
    """Train a task's smoke recipe once per module."""
    done = {}

    def run(task: str):
        if task not in done:
            done[task] = run_lf_wrap("train", RECIPES / f"{task}.yaml", "--smoke",
                                     *smoke_sets(task, tiny_model, prepared), "--run-dir", f"runs/{task}-smoke",
                                     cwd=work)
        return done[task], work / "runs" / f"{task}-smoke"

    return run


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_smoke_run_trains_an_adapter(task, smoke_run, work, prepared):
    done, run_dir = smoke_run(task)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    adapter = run_dir / "adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_log.jsonl", "training_loss.png"):
        assert (adapter / name).is_file(), name
    logged = losses(run_dir)
    assert len(logged) == 10 and logged[-1][1] < logged[0][1], logged        # the loss falls

    assert (run_dir / "recipe.yaml").read_bytes() == (RECIPES / f"{task}.yaml").read_bytes()
    args = yaml.safe_load((run_dir / "train_args.yaml").read_text())
    assert args["dataset"] == f"tiny_{task}_train" and args["output_dir"] == str(adapter.resolve())
    assert args["bf16"] is False and args["max_steps"] == 10 and "lf_wrap" not in args
    assert "llamafactory-cli" in (run_dir / "train.log").read_text()

    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "finished" and manifest["exit_code"] == 0
    assert manifest["argv"][1:] == ["train", str((run_dir / "train_args.yaml").resolve())]
    assert {"lf-wrap", "llamafactory", "transformers", "peft", "torch"} <= set(manifest["versions"])
    data = manifest["data"][f"tiny_{task}_train"]
    assert data["sha256"] == sha256_file(prepared / f"tiny_{task}_train.json") == data["prepared"]["sha256"]
    assert manifest["started"] <= manifest["ended"] and manifest["train_metrics"]["seconds_per_step"] > 0
    assert (work / "runs" / f"{task}-latest").resolve() == run_dir.resolve()
    print(f"{task}: {manifest['train_metrics']['seconds_per_step']} s/step, {manifest['seconds']} s in all")


@pytest.mark.slow
def test_finished_run_skips_and_changed_args_need_force(smoke_run, work, tiny_model, prepared, monkeypatch, capsys):
    done, run_dir = smoke_run("translate")
    assert done.returncode == 0
    monkeypatch.chdir(work)
    before = (run_dir / "train.log").read_bytes(), read_json(run_dir / "manifest.json")
    sets = smoke_sets("translate", tiny_model, prepared)[1::2]
    result = train(RECIPES / "translate.yaml", sets, run_dir=run_dir, smoke=True)
    assert result.skipped and "already finished" in capsys.readouterr().out
    assert ((run_dir / "train.log").read_bytes(), read_json(run_dir / "manifest.json")) == before
    with pytest.raises(UserError, match=r"holds a finished run with other arguments \(differing: max_steps\); "
                                        r"pass --force"):
        train(RECIPES / "translate.yaml", sets + ["max_steps=4"], run_dir=run_dir, smoke=True)


@pytest.mark.slow
def test_resume_from_checkpoint(smoke_run, work, tiny_model, prepared, monkeypatch):
    done, first = smoke_run("translate")
    assert done.returncode == 0
    monkeypatch.chdir(work)
    sets = smoke_sets("translate", tiny_model, prepared)[1::2]
    checkpoint = first / "adapter" / "checkpoint-5"
    result = train(RECIPES / "translate.yaml", sets + [f"resume_from_checkpoint={checkpoint}"],
                   run_dir=work / "runs" / "resumed", smoke=True)
    resumed = losses(result.run_dir)
    assert resumed[0][0] == 6 and resumed[-1][0] == 10                       # steps 6..10 only
    assert resumed[0][1] == pytest.approx(dict(losses(first))[6], rel=1e-4)  # the same state as before


@pytest.mark.slow
def test_child_failure_propagates_exit_code_and_log_tail(work, tiny_model, prepared):
    done = run_lf_wrap("train", RECIPES / "translate.yaml", "--smoke",
                       *smoke_sets("translate", tiny_model, prepared, "lora_target=no_such_proj"),
                       "--run-dir", "runs/broken", cwd=work)
    assert done.returncode == 1
    assert "llamafactory-cli exited with code 1" in done.stderr
    assert "--- last lines of runs/broken/train.log ---" in done.stderr
    assert "Target modules {'no_such_proj'} not found" in done.stderr
    manifest = read_json(work / "runs" / "broken" / "manifest.json")
    assert manifest["status"] == "failed" and manifest["exit_code"] == 1
    latest = work / "runs" / "translate-latest"
    assert not latest.exists() or latest.resolve().name != "broken"


def _alive(args_file: Path) -> bool:
    """Is any process still running with this arg file on its command line?"""
    for proc in Path("/proc").iterdir():
        try:
            if str(args_file).encode() in (proc / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


@pytest.mark.slow
def test_ctrl_c_stops_the_child(work, tiny_model, prepared):
    """Through LLaMA-Factory's torchrun launcher (--nproc 1 runs on CPU), so this also shows
    that FORCE_TORCHRUN/NPROC_PER_NODE and PATH reach the child for real."""
    run_dir = work / "runs" / "interrupted"
    argv = [str(Path(sys.executable).parent / "lf-wrap"), "train", str(RECIPES / "translate.yaml"), "--smoke",
            *smoke_sets("translate", tiny_model, prepared, "max_steps=100000"), "--run-dir", str(run_dir),
            "--nproc", "1"]
    # A shell's background jobs ignore SIGINT, and children inherit that: restore the default.
    child = subprocess.Popen(argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = run_dir / "train.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.exists() and "'loss'" in log.read_text(errors="replace")):
        assert child.poll() is None, child.communicate()
        time.sleep(0.5)
    child.send_signal(signal.SIGINT)        # what Ctrl-C in a terminal does
    _, err = child.communicate(timeout=90)
    assert child.returncode == 130
    assert "interrupted; llamafactory-cli was stopped" in err
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted"
    assert manifest["env"]["FORCE_TORCHRUN"] == "1" and manifest["env"]["NPROC_PER_NODE"] == "1"
    assert "distributed training: True" in log.read_text(errors="replace")
    # torchrun puts its worker in a process group of its own and stops it itself: allow it a moment.
    deadline = time.monotonic() + 30
    while _alive(run_dir / "train_args.yaml") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(run_dir / "train_args.yaml")


def test_launch_spec_multi_gpu_multi_node(tmp_path):
    environ = {"PATH": "/usr/bin", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1",
               "MASTER_PORT": "29500", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    args_file = tmp_path / "run" / "train_args.yaml"
    launch = launch_spec(args_file, nproc=4, environ=environ)
    cli = Path(os.environ["LF_WRAP_LLAMAFACTORY_CLI"])
    assert launch.argv == [str(cli), "train", str(args_file)]
    child = launch.child_env(environ)
    assert child["FORCE_TORCHRUN"] == "1" and child["NPROC_PER_NODE"] == "4"
    assert child["PATH"].split(os.pathsep)[0] == str(cli.parent)     # LLaMA-Factory runs `torchrun` from PATH
    recorded = launch.switches(environ)
    for key in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES",
                "FORCE_TORCHRUN", "NPROC_PER_NODE"):
        assert recorded[key] == child[key]
    single = launch_spec(args_file, environ={"PATH": "/usr/bin"})
    assert "FORCE_TORCHRUN" not in single.env and "NPROC_PER_NODE" not in single.env


def test_torchrun_refuses_a_run_dir_with_spaces(tmp_path):
    with pytest.raises(UserError, match="splits its arguments on spaces"):
        launch_spec(tmp_path / "my runs" / "train_args.yaml", nproc=2, environ={})
    with pytest.raises(UserError, match="--nproc must be at least 1"):
        launch_spec(tmp_path / "train_args.yaml", nproc=0, environ={})


def test_latest_link_moves_to_the_newest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("translate-1", "translate-2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        link = update_latest(Path("runs") / name, "translate")
        assert link.resolve() == (tmp_path / "runs" / name).resolve()
    assert os.readlink(tmp_path / "runs" / "translate-latest") == "translate-2"   # relative: the repo can move
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["translate-1", "translate-2", "translate-latest"]


def test_refuses_a_folder_that_is_not_a_run_dir(tmp_path, tiny_model, prepared, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="mine exists and is not an lf-wrap run directory"):
        train(RECIPES / "qa.yaml", smoke_sets("qa", tiny_model, prepared)[1::2], run_dir=Path("mine"), smoke=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
