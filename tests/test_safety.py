"""No command destroys a user's files: `--force` replaces only lf-wrap's own earlier output of
the same kind, never an input; a merge killed with kill -9 leaves nothing that later runs keep;
an interrupted merge or eval exits 130 (143 for SIGTERM) like an interrupted training run, with
one line, and an eval's manifest says it was interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers.terminal import started_from_a_terminal, stop, wait_until
from lf_wrap.cli import cli
from lf_wrap.core.files import clean_stale_temporaries
from lf_wrap.core.hashing import tree_digest


def merge(*args):
    return CliRunner().invoke(cli, ["merge", "adapters", *map(str, args)])


def snapshot(folder: Path) -> str:
    return tree_digest(folder)[0]


def test_force_never_replaces_an_input_adapter(adapters, tmp_path):
    """`--out` = one of the inputs, with --force: refused, the adapter untouched."""
    target = adapters["B"]
    before = snapshot(target)
    result = merge(adapters["A"], target, "--method", "linear", "--weights", "0.5,0.5", "--as", "adapter",
                   "--out", target, "--force")
    assert result.exit_code == 2, result.output
    assert f"--out {target} is input adapter" in result.output and "never writes over its inputs" in result.output
    assert snapshot(target) == before


def test_force_never_replaces_the_base_or_a_folder_holding_an_input(adapters, tiny_model, tmp_path):
    before = snapshot(tiny_model)
    result = merge(adapters["A"], "--method", "linear", "--out", tiny_model, "--force")
    assert result.exit_code == 2 and "is the base model" in result.output, result.output
    assert snapshot(tiny_model) == before
    parent = adapters["A"].parent
    before = snapshot(parent)
    result = merge(adapters["A"], "--method", "linear", "--out", parent, "--force")
    assert result.exit_code == 2 and "contains input adapter" in result.output, result.output
    assert snapshot(parent) == before


def test_force_replaces_an_earlier_merge(adapters, tmp_path):
    out = tmp_path / "merged"
    assert merge(adapters["A"], "--method", "linear", "--weights", "0.5", "--out", out).exit_code == 0
    first = json.loads((out / "merge_manifest.json").read_text())
    result = merge(adapters["A"], "--method", "linear", "--weights", "0.7", "--out", out)
    assert result.exit_code == 2 and "holds another merge" in result.output
    result = merge(adapters["A"], "--method", "linear", "--weights", "0.7", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    second = json.loads((out / "merge_manifest.json").read_text())
    assert second["weights"] == [0.7] and second["fingerprint"] != first["fingerprint"]
    assert second["stage"] == "merge" and second["status"] == "finished"


def test_a_killed_merge_leaves_a_temporary_folder_the_next_run_removes(adapters, tmp_path):
    """kill -9 mid-merge: the hidden temporary folder is removed by the next merge into the same place."""
    out = tmp_path / "merged"
    code = ("import sys, time\n"
            "import lf_wrap.merge.run as run\n"
            "def stall(plan, tmp):\n"
            "    (tmp / 'partial.bin').write_bytes(b'x' * 1000)\n"
            "    print('STARTED', flush=True)\n"
            "    time.sleep(600)\n"
            "run.write_model = stall\n"
            "from lf_wrap.cli import cli\n"
            "cli(sys.argv[1:])\n")
    child = subprocess.Popen([sys.executable, "-c", code, "merge", "adapters", str(adapters["A"]), "--method",
                              "linear", "--out", str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "STARTED"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".merged.") and p.name.endswith(".tmp")]
    assert len(left) == 1 and (left[0] / "partial.bin").is_file()
    result = merge(adapters["A"], "--method", "linear", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"removed {left[0]}, a temporary folder left by an interrupted run" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_a_live_merges_temporary_folder_is_left_alone(tmp_path):
    live = tmp_path / f".merged.{os.getpid()}.abc.tmp"
    live.mkdir()
    assert clean_stale_temporaries(tmp_path / "merged") == [] and live.is_dir()


def test_an_interrupted_merge_exits_130_and_leaves_nothing(adapters, tmp_path):
    out = tmp_path / "merged"
    code = ("import sys, time\n"
            "import lf_wrap.merge.run as run\n"
            "def stall(plan, tmp):\n"
            "    print('STARTED', flush=True)\n"
            "    time.sleep(600)\n"
            "run.write_model = stall\n"
            "from lf_wrap.cli import cli\n"
            "cli(sys.argv[1:])\n")
    for sig, exit_code, name in ((signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")):
        child = subprocess.Popen([sys.executable, "-c", code, "merge", "adapters", str(adapters["A"]), "--method",
                                  "linear", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert child.stdout.readline().strip() == "STARTED"
        time.sleep(0.2)
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
        assert child.returncode == exit_code, err     # a SIGTERM: 143, as a shell reports it (probe SG3)
        assert [line for line in err.splitlines() if line.strip()] == [f"Error: interrupted ({name})"], err
        assert list(tmp_path.iterdir()) == []


def test_an_interrupted_prepare_says_which_signal_and_writes_nothing(sample_sources, tmp_path):
    """Probe SG3's question for `data prepare`: SIGTERM killed it silently (no line; the shell's 143
    by the signal, not by lf-wrap). It writes its set, manifest and entry all or none, so there is
    no manifest to mark: one line, 130/143, nothing written."""
    code = ("import sys, time\n"
            "import lf_wrap.data.prepare as prepare\n"
            "def stall(*args, **kwargs):\n"
            "    print('STARTED', flush=True)\n"
            "    time.sleep(600)\n"
            "prepare.load_split = stall\n"
            "from lf_wrap.cli import cli\n"
            "cli(sys.argv[1:])\n")
    folder = tmp_path / "ds"
    for sig, exit_code, name in ((signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")):
        child = subprocess.Popen([sys.executable, "-c", code, "data", "prepare", "qa", "--source",
                                  str(sample_sources / "squad_v2" / "validation.jsonl"), "--split", "validation",
                                  "-n", "4", "--name", "cut", "--dataset-dir", str(folder)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "STARTED"
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
        assert child.returncode == exit_code, err
        assert [line for line in err.splitlines() if line.strip()] == [f"Error: interrupted ({name})"], err
        assert not folder.exists() or sorted(p.name for p in folder.iterdir()) in ([], [".dataset_info.json.lock"])

# ---------------------------------------------------------------- stale predictions are never reused


def eval_recipe(tmp_path: Path, base: Path, prepared: Path, models: list[dict]) -> Path:
    import yaml

    recipe = {"model_name_or_path": str(base), "template": "qwen", "dataset_dir": str(prepared),
              "models": models, "tasks": {"qa": {"dataset": "tiny_qa_validation", "max_new_tokens": 6}},
              "engine": {"dtype": "float32", "max_model_len": 1024, "gpu_memory_utilization": 0.2,
                         "max_lora_rank": 8, "enforce_eager": True},
              "batch_size": 16}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.slow
def test_new_base_weights_of_the_same_shape_are_not_served_from_old_predictions(tiny_model, prepared, tmp_path):
    import shutil

    from conftest import run_lf_wrap
    from lf_wrap.demo.tiny_model import build_tiny_model

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    recipe = eval_recipe(tmp_path, base, prepared, [{"name": "base"}])
    out = tmp_path / "results"
    first = run_lf_wrap("eval", recipe, "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = (out / "predictions" / "base" / "qa.jsonl").read_bytes()

    other = build_tiny_model(tmp_path / "other", seed=7)          # same shapes, other weights
    shutil.copyfile(other / "model.safetensors", base / "model.safetensors")
    again = run_lf_wrap("eval", recipe, "--out", out)
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr[-2000:]
    message = [line for line in again.stderr.splitlines() if line.startswith("Error:")]
    assert len(message) == 1 and "model 'base'" in message[0] and "base/model.safetensors" in message[0]
    assert "--force" in message[0]
    assert (out / "predictions" / "base" / "qa.jsonl").read_bytes() == saved      # nothing mixed, nothing lost

    old_meta = json.loads((out / "predictions" / "base" / "qa.meta.json").read_text())
    forced = run_lf_wrap("eval", recipe, "--out", out, "--force")
    assert forced.returncode == 0 and "8 predictions generated, 0 reused" in forced.stdout, forced.stderr[-2000:]
    new_meta = json.loads((out / "predictions" / "base" / "qa.meta.json").read_text())
    assert new_meta["model_fingerprint"] != old_meta["model_fingerprint"]
    assert new_meta["model_files"]["base/model.safetensors"] != old_meta["model_files"]["base/model.safetensors"]
    assert new_meta["model_files"]["base/tokenizer.json"] == old_meta["model_files"]["base/tokenizer.json"]


@pytest.mark.slow
def test_a_merge_redone_in_place_is_not_served_from_old_predictions(tiny_model, prepared, adapters, tmp_path):
    from conftest import run_lf_wrap

    merged = tmp_path / "merged"
    assert merge(adapters["A"], adapters["C"], "--method", "linear", "--weights", "0.7,0.7",
                 "--out", merged).exit_code == 0
    recipe = eval_recipe(tmp_path, tiny_model, prepared, [{"name": "merged", "path": str(merged)}])
    out = tmp_path / "results"
    assert run_lf_wrap("eval", recipe, "--out", out).returncode == 0
    assert merge(adapters["A"], adapters["C"], "--method", "linear", "--weights", "0.3,0.4",
                 "--out", merged, "--force").exit_code == 0
    again = run_lf_wrap("eval", recipe, "--out", out)
    assert again.returncode == 2 and "model 'merged'" in again.stderr and "model/model.safetensors" in again.stderr


# ---------------------------------------------------------------- an eval stopped by Ctrl-C or SIGTERM

@pytest.mark.slow
def test_an_interrupted_eval_says_so_in_its_manifest_releases_its_lock_and_resumes(tiny_model, prepared, tmp_path):
    """Probe SG1/SG3: Ctrl-C exited 130 with no manifest; SIGTERM exited 143 silently and left the
    lock file. Now each: one line, 130/143, manifest `interrupted`, no lock; the rerun writes the
    missing rows only."""
    import yaml

    path = eval_recipe(tmp_path, tiny_model, prepared, [{"name": "base"}])
    recipe = yaml.safe_load(path.read_text())
    recipe["tasks"] = {"qa": {"dataset": "tiny_qa_train", "max_new_tokens": 32}}    # 40 rows, one a batch
    recipe["batch_size"] = 1
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "results"
    predictions = out / "predictions" / "base" / "qa.jsonl"
    argv = [str(Path(sys.executable).parent / "lf-wrap"), "eval", str(path), "--out", str(out)]
    for sig, exit_code, name in ((signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")):
        before = len(predictions.read_text().splitlines()) if predictions.exists() else 0
        log = tmp_path / f"{name}.log"
        with started_from_a_terminal(argv, log) as child:
            wait_until(child, lambda: predictions.exists() and len(predictions.read_text().splitlines()) > before + 1,
                       log, timeout=300)
            assert stop(child, sig) == exit_code, log.read_text()[-3000:]
        stderr = log.read_text()
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert "Traceback" not in stderr and errors == [
            f"Error: interrupted ({name}); the predictions written so far are kept in {out}: run the same command "
            "to go on"], stderr[-3000:]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and manifest["stage"] == "eval", manifest
        assert not (tmp_path / ".results.lock").exists()
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line)["row"] for line in predictions.read_text().splitlines()]
    assert sorted(rows) == list(range(40))                          # nothing generated twice
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["generated"] + manifest["reused"] == 40
    assert len(manifest["history"]) == 3
