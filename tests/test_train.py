"""`lf-wrap train` end to end: the real llamafactory-cli trains the tiny model on CPU.

Each task's smoke recipe runs once (module scope) into a shared working folder under tmp; the
other tests reuse those run directories. The launch environment for multi-GPU and multi-node
is checked on the function that builds it; `--nproc 1` also runs for real (torchrun on CPU)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
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
from lf_wrap.train.rundir import decide

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
    train_log = (run_dir / "train.log").read_text()
    assert "llamafactory-cli" in train_log
    # A calm terminal: llamafactory-cli's own output is in train.log, not on the terminal, where a
    # pipe gets plain progress lines (steps with the loss) and the log's path.
    assert "trainable params" in train_log and "trainable params" not in done.stdout + done.stderr
    assert f"llamafactory-cli's output: runs/{task}-smoke/train.log" in done.stderr
    assert "lf-wrap: train: 10/10 steps (loss " in done.stderr.splitlines()[-2], done.stderr

    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "finished" and manifest["exit_code"] == 0
    assert manifest["llamafactory_argv"][1:] == ["train", str((run_dir / "train_args.yaml").resolve())]
    assert manifest["stage"] == "train" and manifest["argv"][:2] == ["lf-wrap", "train"] and manifest["git"]["commit"]
    assert {"lf-wrap", "llamafactory", "transformers", "peft", "torch"} <= set(manifest["versions"])
    data = manifest["data"][f"tiny_{task}_train"]
    assert data["sha256"] == sha256_file(prepared / f"tiny_{task}_train.json") == data["prepared"]["sha256"]
    assert manifest["started"] <= manifest["ended"] and manifest["train_metrics"]["seconds_per_step"] > 0
    assert (work / "runs" / f"{task}-latest").resolve() == run_dir.resolve()
    print(f"{task}: {manifest['train_metrics']['seconds_per_step']} s/step, {manifest['seconds']} s in all")


@pytest.mark.slow
def test_finished_run_skips_and_changed_args_need_force(smoke_run, work, tiny_model, prepared, monkeypatch, lf_log):
    caplog = lf_log
    done, run_dir = smoke_run("translate")
    assert done.returncode == 0
    monkeypatch.chdir(work)
    before = (run_dir / "train.log").read_bytes(), read_json(run_dir / "manifest.json")
    sets = smoke_sets("translate", tiny_model, prepared)[1::2]
    result = train(RECIPES / "translate.yaml", sets, run_dir=run_dir, smoke=True)
    assert result.skipped and "already finished" in caplog.text
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
    # The same command again: a failed run with no checkpoint starts again from step 1, and says so.
    again = run_lf_wrap("train", RECIPES / "translate.yaml", "--smoke",
                        *smoke_sets("translate", tiny_model, prepared, "lora_target=no_such_proj"),
                        "--run-dir", "runs/broken", cwd=work)
    assert again.returncode == 1
    assert "lf-wrap: runs/broken holds a failed run with no checkpoint; starting again from step 1" in again.stderr
    manifest = read_json(work / "runs" / "broken" / "manifest.json")
    assert manifest["resumed_from"] is None and [a["status"] for a in manifest["earlier_attempts"]] == ["failed"]


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
@pytest.mark.parametrize("sig, exit_code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_stops_the_child(work, tiny_model, prepared, sig, exit_code, name):
    """Through LLaMA-Factory's torchrun launcher (--nproc 1 runs on CPU), so this also shows
    that FORCE_TORCHRUN/NPROC_PER_NODE and PATH reach the child for real. SIGTERM (a scheduler)
    stops it the same way, with the shell's 143 (probe SG4: it exited 130)."""
    run_dir = work / "runs" / f"interrupted-{name}"
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
    child.send_signal(sig)                  # SIGINT: what Ctrl-C in a terminal does
    _, err = child.communicate(timeout=90)
    assert child.returncode == exit_code, err
    assert f"Error: interrupted ({name}); llamafactory-cli was stopped" in err
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted"
    assert manifest["env"]["FORCE_TORCHRUN"] == "1" and manifest["env"]["NPROC_PER_NODE"] == "1"
    assert "distributed training: True" in log.read_text(errors="replace")
    # torchrun puts its worker in a process group of its own and stops it itself: allow it a moment.
    deadline = time.monotonic() + 30
    while _alive(run_dir / "train_args.yaml") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(run_dir / "train_args.yaml")


def _checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.name[11:]) for p in (run_dir / "adapter").glob("checkpoint-*"))


@pytest.mark.slow
def test_interrupted_run_continues_with_the_command_it_prints(work, tiny_model, prepared, monkeypatch):
    """Ctrl-C after the first checkpoint; the message ends with the whole command (every --set,
    --smoke, --run-dir, shell-quoted: this run dir has a space), and that command resumes the run
    from its last checkpoint with the smoke arguments, instead of the full recipe from step 1."""
    sets = smoke_sets("translate", tiny_model, prepared, "max_steps=30", "gradient_accumulation_steps=4")
    command = ["train", str(RECIPES / "translate.yaml"), "--smoke", *sets, "--run-dir", "runs/cut short"]
    run_dir = work / "runs" / "cut short"
    child = subprocess.Popen([str(Path(sys.executable).parent / "lf-wrap"), *command], cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list((run_dir / "adapter").glob("checkpoint-*/trainer_state.json")):
        assert child.poll() is None, child.communicate()
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=90)
    assert child.returncode == 130, err
    last = _checkpoints(run_dir)[-1]
    assert last < 30
    hints = [line.strip() for line in err.splitlines() if line.strip().startswith("lf-wrap train ")]
    assert hints == [shlex.join(["lf-wrap", *command])], err
    assert f"last checkpoint is {run_dir.relative_to(work) / 'adapter' / f'checkpoint-{last}'}" in err

    # Other arguments into the interrupted run: refused, naming the keys, nothing touched.
    monkeypatch.chdir(work)
    before = read_json(run_dir / "manifest.json"), (run_dir / "train_args.yaml").read_bytes()
    with pytest.raises(UserError, match=r"runs/cut short holds an interrupted run with other arguments \(differing: "
                                        r"bf16, cutoff_len, learning_rate, per_device_train_batch_size, save_steps, "
                                        r"warmup_steps\); pass --force .*, --force --set 'resume_from_checkpoint="
                                        rf"runs/cut short/adapter/checkpoint-{last}' to continue"):
        train(RECIPES / "translate.yaml", sets[1::2], run_dir=Path("runs/cut short"))     # the full recipe
    assert (read_json(run_dir / "manifest.json"), (run_dir / "train_args.yaml").read_bytes()) == before
    assert _checkpoints(run_dir)[-1] == last

    done = run_lf_wrap(*shlex.split(hints[0])[1:], cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    checkpoint = (run_dir / "adapter" / f"checkpoint-{last}").resolve()
    assert "holds an interrupted run; resuming from its last checkpoint" in done.stderr
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "finished" and manifest["resumed_from"] == str(checkpoint)
    assert [a["status"] for a in manifest["earlier_attempts"]] == ["interrupted"]
    args = yaml.safe_load((run_dir / "train_args.yaml").read_text())
    assert args["resume_from_checkpoint"] == str(checkpoint)
    assert args["bf16"] is False and args["cutoff_len"] == 128 and args["max_steps"] == 30   # smoke kept
    assert read_json(run_dir / "adapter" / "trainer_state.json")["global_step"] == 30
    assert losses(run_dir)[0][0] == last + 1                                   # continued, not restarted


@pytest.mark.slow
def test_failed_run_resumes_by_itself_and_force_starts_again(smoke_run, work, tiny_model, prepared, monkeypatch,
                                                              lf_log):
    """A failed run (here: a copy of the smoke run marked failed, its last checkpoint removed)
    re-run with the same arguments continues from its last checkpoint; --force says which
    checkpoints it removes and trains from step 1."""
    caplog = lf_log
    done, finished = smoke_run("translate")
    assert done.returncode == 0
    monkeypatch.chdir(work)
    run_dir = Path("runs/failed")
    shutil.copytree(finished, run_dir, symlinks=True)
    shutil.rmtree(run_dir / "adapter" / "checkpoint-10")
    manifest = {**read_json(run_dir / "manifest.json"), "status": "failed", "exit_code": 1}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    args = yaml.safe_load((run_dir / "train_args.yaml").read_text())
    args["output_dir"] = str((run_dir / "adapter").resolve())
    (run_dir / "train_args.yaml").write_text(yaml.safe_dump(args, sort_keys=False))
    sets = smoke_sets("translate", tiny_model, prepared)[1::2]

    result = train(RECIPES / "translate.yaml", sets, run_dir=run_dir, smoke=True)
    checkpoint = (run_dir / "adapter" / "checkpoint-5").resolve()
    assert f"holds a failed run; resuming from its last checkpoint {run_dir / 'adapter' / 'checkpoint-5'}" \
        in caplog.text
    caplog.clear()
    assert result.manifest["resumed_from"] == str(checkpoint)
    assert losses(run_dir)[0][0] == 6 and losses(run_dir)[-1][0] == 10          # steps 6..10 only

    result = train(RECIPES / "translate.yaml", sets, run_dir=run_dir, smoke=True, force=True)
    out = caplog.text
    assert (f"--force: removing {run_dir / 'adapter'} (the adapter and its checkpoints checkpoint-5, "
            "checkpoint-10); training from step 1") in out
    assert result.manifest["resumed_from"] is None and losses(run_dir)[0][0] == 1
    assert [a["status"] for a in result.manifest["earlier_attempts"]] == ["failed", "finished"]


def test_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):
    """lf-wrap killed outright leaves its manifest saying `running`; a checkpoint being saved at
    that moment has no trainer_state.json yet and is passed over (rule checked without a launch)."""
    run_dir = tmp_path / "run"
    for step, complete in ((3, True), (4, False)):
        (run_dir / "adapter" / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (run_dir / "adapter" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    args = {"max_steps": 10, "output_dir": str(run_dir / "adapter")}
    (run_dir / "train_args.yaml").write_text(yaml.safe_dump(args))
    rerun = decide(run_dir, {"status": "running"}, args, force=False)
    assert rerun.resume == run_dir / "adapter" / "checkpoint-3" and not rerun.remove and not rerun.skip
    assert rerun.say == (f"{run_dir} holds an unfinished run; resuming from its last checkpoint "
                         f"{run_dir / 'adapter' / 'checkpoint-3'} (--force starts again from step 1)")
    assert rerun.earlier_attempts()[0]["status"] == "running"
    with pytest.raises(UserError, match=r"holds an unfinished run with other arguments \(differing: max_steps\)"):
        decide(run_dir, {"status": "running"}, {**args, "max_steps": 20}, force=False)
    forced = decide(run_dir, {"status": "running"}, {**args, "max_steps": 20}, force=True)
    assert forced.remove and "its checkpoints checkpoint-3, checkpoint-4); training from step 1" in forced.say


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


@pytest.mark.slow
def test_a_joint_run_trains_one_adapter_on_every_set(work, tiny_model, prepared):
    """recipes/joint.yaml's smoke set: the three tasks' sets handed to LLaMA-Factory as one
    `dataset` list, mixed by its own mix_strategy (concat); the run records the three tasks and
    no task of its own (a joint adapter is no specialist)."""
    names = [f"tiny_{task}_train" for task in TASKS]
    sets = [f"model_name_or_path={tiny_model}", f"lf_wrap.dataset={','.join(names)}", f"lf_wrap.dataset_dir={prepared}"]
    done = run_lf_wrap("train", RECIPES / "joint.yaml", "--smoke", *[a for s in sets for a in ("--set", s)],
                       "--run-dir", "runs/joint-smoke", cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    run_dir = work / "runs" / "joint-smoke"
    args = yaml.safe_load((run_dir / "train_args.yaml").read_text())
    assert args["dataset"] == ",".join(names) and args["mix_strategy"] == "concat"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    train_log = (run_dir / "train.log").read_text()
    assert all(f"dataset {name}" in train_log.lower() or name in train_log for name in names), train_log[-3000:]
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "finished" and manifest["task"] is None and manifest["tasks"] == TASKS
    assert list(manifest["data"]) == names
    assert (work / "runs" / "joint-latest").resolve() == run_dir.resolve()
