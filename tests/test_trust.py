"""No stale answer by any path, one writer per folder, `--force` only on lf-wrap's own outputs:
the cases of the second hostile probe (symlinked weights, engine extra_args, the base's config,
eval --out inside the base, --force onto folders lf-wrap did not write or that hold an input,
symlinked outputs, two runs into one folder)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import run_lf_wrap
from helpers.adapters import linked_adapter, make_adapter
from helpers.search import search_recipe, write_planned_search
from lf_wrap.cli import cli
from lf_wrap.core.hashing import tree_digest


def merge(*args):
    return CliRunner().invoke(cli, ["merge", "adapters", *map(str, args)])


def eval_recipe(path: Path, base: Path, prepared: Path, models: list[dict], **engine) -> Path:
    recipe = {"model_name_or_path": str(base), "template": "qwen", "dataset_dir": str(prepared),
              "models": models, "tasks": {"qa": {"dataset": "tiny_qa_validation", "max_new_tokens": 6}},
              "engine": {"dtype": "float32", "max_model_len": 1024, "gpu_memory_utilization": 0.2,
                         "max_lora_rank": 8, "enforce_eager": True, **engine},
              "batch_size": 16}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def errors(result) -> list[str]:
    text = result.stderr if isinstance(result, subprocess.CompletedProcess) else result.output
    return [line for line in text.splitlines() if line.startswith("Error:")]


# ---------------------------------------------------------------- 1. symlinked weights


def test_a_merge_of_an_adapter_whose_weights_are_a_symlink_is_redone_when_the_target_changes(adapters, tmp_path):
    """Probe V2m: the link's target rewritten; the same merge command must not say "already holds"."""
    from lf_wrap.core.adapters import read_adapter

    target = linked_adapter(adapters["A"], tmp_path / "qa_sym", tmp_path / "store")
    out = tmp_path / "msym"
    args = (tmp_path / "qa_sym", adapters["B"], "--method", "linear", "--weights", "0.5,0.5", "--as", "adapter",
            "--out", out)
    assert merge(*args).exit_code == 0
    before = read_adapter(tmp_path / "qa_sym").fingerprint()
    shutil.copyfile(adapters["C"] / "adapter_model.safetensors", target)     # other bytes (same rank) behind the link
    assert read_adapter(tmp_path / "qa_sym").fingerprint() != before
    again = merge(*args)
    assert again.exit_code == 2 and "holds another merge" in again.output, again.output
    assert "already holds this merge" not in again.output


# ---------------------------------------------------------------- 2. engine extra_args


@pytest.mark.parametrize("key,message", [
    ("dtype", "set engine.dtype instead of engine.extra_args.dtype"),
    ("seed", "set engine.seed instead"),
    ("enable_lora", "is set by lf-wrap itself"),
    ("model", "is set by lf-wrap itself"),
])
def test_extra_args_may_not_respell_a_typed_setting(tiny_model, prepared, tmp_path, key, message):
    """Probe V7: extra_args={dtype: bfloat16} ran bfloat16 while meta.json recorded float32."""
    recipe = eval_recipe(tmp_path / "eval.yaml", tiny_model, prepared, [{"name": "base"}])
    result = run_lf_wrap("eval", recipe, "--out", tmp_path / "out", "--set", f"engine.extra_args={{{key}: 1}}")
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "engine.extra_args" in errors(result)[0] and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_reuses_nothing_after_a_symlinked_weight_or_an_extra_arg_changed(tiny_model, prepared, adapters,
                                                                                tmp_path):
    """Probes V2 and V5d: a link target rewritten, then engine.extra_args changed: each refused
    (before: "0 predictions generated, 16 reused")."""
    target = linked_adapter(adapters["A"], tmp_path / "qa_sym", tmp_path / "store")
    recipe = eval_recipe(tmp_path / "eval.yaml", tiny_model, prepared,
                         [{"name": "base"}, {"name": "lora", "path": str(tmp_path / "qa_sym")}])
    out = tmp_path / "results"
    first = run_lf_wrap("eval", recipe, "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    meta = json.loads((out / "predictions" / "lora" / "qa.meta.json").read_text())
    assert "adapter/adapter_model.safetensors" in meta["model_files"]
    assert meta["engine_args"]["dtype"] == "float32" and "seed" not in meta["engine_args"]

    saved = target.read_bytes()
    shutil.copyfile(adapters["C"] / "adapter_model.safetensors", target)
    changed = run_lf_wrap("eval", recipe, "--out", out)
    assert changed.returncode == 2, changed.stdout[-2000:]
    assert "model 'lora'" in errors(changed)[0] and "adapter/adapter_model.safetensors" in errors(changed)[0]
    target.write_bytes(saved)

    hf = run_lf_wrap("eval", recipe, "--out", out, "--set", "engine.extra_args={hf_overrides: {rms_norm_eps: 10.0}}")
    assert hf.returncode == 2, hf.stdout[-2000:]
    assert "engine_args" in errors(hf)[0] and "rms_norm_eps" in errors(hf)[0]
    same = run_lf_wrap("eval", recipe, "--out", out, "--set", "engine.seed=7")   # greedy: the seed draws nothing
    assert same.returncode == 0 and "0 predictions generated, 16 reused" in same.stdout, same.stderr[-2000:]


# ---------------------------------------------------------------- 3. the search's identity is eval's


def test_the_search_identity_covers_linked_weights_the_base_config_and_extra_args(tiny_model, adapters, tmp_path):
    """Probes S44, S45, S46: each change gives the search another identity, so its scores are not reused
    (before: the base's weights only, the link target's name, no engine arguments)."""
    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.run import plan_search

    path, base = write_planned_search(tiny_model, adapters, tmp_path)

    def identity(*overrides: str) -> str:
        return plan_search(load_search_recipe(path, overrides)[0]).identity

    first = identity()
    assert identity() == first
    store = tmp_path / "store" / "C_weights.safetensors"
    saved = store.read_bytes()
    shutil.copyfile(adapters["A"] / "adapter_model.safetensors", store)
    assert identity() != first
    store.write_bytes(saved)
    assert identity() == first
    assert identity("eval_overrides=['engine.extra_args={hf_overrides: {rms_norm_eps: 10.0}}']") != first
    config = json.loads((base / "config.json").read_text())
    config["rms_norm_eps"] = 10.0
    (base / "config.json").write_text(json.dumps(config))
    assert identity() != first


def test_a_search_folder_with_other_inputs_says_which(tiny_model, adapters, tmp_path):
    """Probe S43: "holds a search with other inputs (base, adapters, rows or generation settings)"
    did not say which; now the changed file or setting is named."""
    from lf_wrap.core.manifest import StageRecord
    from lf_wrap.search.recipe import load_search_recipe
    from lf_wrap.search.splits import row_ids, scoring_ids
    from lf_wrap.search.folder import search_space
    from lf_wrap.search.run import plan_search

    path, base = write_planned_search(tiny_model, adapters, tmp_path)
    recipe = load_search_recipe(path, ())[0]
    plan = plan_search(recipe)
    out = Path(recipe.out)
    out.mkdir()
    body = {"identity": plan.identity, "space": search_space(recipe),
            "inputs": plan.inputs, "rows": row_ids(plan.rows), "generation": plan.generation,
            "scoring": scoring_ids(plan.rows)}
    (out / "manifest.json").write_text(json.dumps(StageRecord("search").manifest(body)))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 10.0}))
    result = run_lf_wrap("merge", "search", path, "--set",
                         "eval_overrides=['engine.extra_args={hf_overrides: {rms_norm_eps: 1.0}}']")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "other inputs (the base model's config.json, generation.engine_args)" in errors(result)[0]


# ---------------------------------------------------------------- 4. eval --out inside the base


@pytest.mark.parametrize("where", ["", "results"])
def test_eval_never_writes_into_the_base_model(tiny_model, prepared, tmp_path, where):
    """Probes X1, X2: predictions, metrics and tables were written into the base model folder."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    before = tree_digest(base)[0], sorted(p.name for p in base.iterdir())
    recipe = eval_recipe(tmp_path / "eval.yaml", base, prepared, [{"name": "base"}])
    result = run_lf_wrap("eval", recipe, "--out", base / where if where else base)
    assert result.returncode == 2, result.stdout[-2000:]
    assert "the base model" in errors(result)[0] and "never writes over its inputs" in errors(result)[0]
    assert (tree_digest(base)[0], sorted(p.name for p in base.iterdir())) == before


# ---------------------------------------------------------------- 6. --force only on lf-wrap's own outputs


def test_merge_force_refuses_a_folder_with_an_empty_manifest_or_a_file_of_the_users(adapters, tmp_path):
    """Probe R3g: `merge_manifest.json` = {} beside data.txt was replaced; and a user's file added to
    an earlier merge would have been deleted with it."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "merge_manifest.json").write_text("{}")
    (out / "data.txt").write_text("mine")
    result = merge(adapters["A"], "--method", "linear", "--out", out, "--force")
    assert result.exit_code == 2 and "is not an lf-wrap merge output" in result.output, result.output
    assert (out / "data.txt").read_text() == "mine"

    merged = tmp_path / "merged"
    assert merge(adapters["A"], "--method", "linear", "--as", "adapter", "--out", merged).exit_code == 0
    (merged / "notes.md").write_text("my notes")
    result = merge(adapters["A"], "--method", "linear", "--weights", "0.3", "--as", "adapter", "--out", merged,
                   "--force")
    assert result.exit_code == 2 and "holds files lf-wrap did not write (notes.md)" in result.output, result.output
    assert (merged / "notes.md").read_text() == "my notes"


def test_merge_force_onto_a_symlinked_out_replaces_the_folder_it_points_to(adapters, tmp_path):
    """Probe R3i: `OSError: Cannot call rmtree on a symbolic link`, `.mlink.old` left behind."""
    real, link = tmp_path / "m1", tmp_path / "mlink"
    assert merge(adapters["A"], "--method", "linear", "--as", "adapter", "--out", real).exit_code == 0
    link.symlink_to(real)
    result = merge(adapters["A"], "--method", "linear", "--weights", "0.3", "--as", "adapter", "--out", link,
                   "--force")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert json.loads((real / "merge_manifest.json").read_text())["weights"] == [0.3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m1", "mlink"]


def _fake_search_folder(out: Path, **files: str) -> None:
    from lf_wrap.core.manifest import StageRecord

    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps(StageRecord("search").manifest({"identity": "earlier"})))
    for name, text in files.items():
        (out / name).write_text(text)


def test_search_force_deletes_no_folder_and_no_file_that_lf_wrap_did_not_write(tiny_model, adapters, tmp_path):
    """Probes S49 (a web app's folder with a manifest.json wiped) and S51 (the eval recipe the search
    reads, kept inside out, deleted); both refused before any engine starts."""
    path, _ = write_planned_search(tiny_model, adapters, tmp_path)
    recipe = yaml.safe_load(path.read_text())

    webapp = tmp_path / "webapp"
    webapp.mkdir()
    (webapp / "manifest.json").write_text(json.dumps({"name": "my web app", "start_url": "/"}))
    (webapp / "index.html").write_text("<html></html>")
    result = run_lf_wrap("merge", "search", path, "--set", f"out={webapp}", "--force")
    assert result.returncode == 2 and "is not an lf-wrap search output" in errors(result)[0], result.stderr[-2000:]
    assert (webapp / "index.html").is_file()

    inside = tmp_path / "evin"
    _fake_search_folder(inside, **{"scores.jsonl": "", "leaderboard.md": ""})
    shutil.copyfile(recipe["eval"], inside / "eval.yaml")
    mine = dict(recipe, eval=str(inside / "eval.yaml"), out=str(inside))
    (inside / "my-search.yaml").write_text(yaml.safe_dump(mine))
    result = run_lf_wrap("merge", "search", inside / "my-search.yaml", "--force")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "holds the eval recipe" in errors(result)[0] and "--force would delete it" in errors(result)[0]
    assert {"eval.yaml", "my-search.yaml", "scores.jsonl"} <= {p.name for p in inside.iterdir()}

    kept = tmp_path / "kept"
    _fake_search_folder(kept, **{"scores.jsonl": "", "my-notes.txt": "x"})
    result = run_lf_wrap("merge", "search", path, "--set", f"out={kept}", "--force")
    assert result.returncode == 2 and "holds files lf-wrap did not write (my-notes.txt)" in errors(result)[0]
    assert (kept / "my-notes.txt").is_file()


# ---------------------------------------------------------------- 8, 9. one writer per folder

HOLD = ("import sys, time\n"
        "from lf_wrap.core.locks import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n"
        "    print('LOCKED', flush=True)\n"
        "    time.sleep(600)\n")


def _holder(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "LOCKED"
    return child


def test_a_second_merge_or_search_into_a_held_folder_is_refused_naming_the_holder(tiny_model, adapters, tmp_path):
    """Probe S53: two searches into one out corrupted its journal and ledger. The folder's holder is
    named; once it dies (kill -9: the kernel drops its lock), the next run goes ahead."""
    merged = tmp_path / "merged"
    child = _holder(merged)
    try:
        result = merge(adapters["A"], "--method", "linear", "--as", "adapter", "--out", merged)
        assert result.exit_code == 2, result.output
        assert f"being written by another lf-wrap run (pid {child.pid}" in result.output
        assert not merged.exists()
        path, _ = write_planned_search(tiny_model, adapters, tmp_path / "study")
        out = tmp_path / "study" / "out"
        searcher = _holder(out)
        try:
            held = run_lf_wrap("merge", "search", path)
            assert held.returncode == 2 and f"(pid {searcher.pid}" in errors(held)[0], held.stderr[-2000:]
            assert not (out / "scores.jsonl").exists()
        finally:
            searcher.kill()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert (tmp_path / ".merged.lock").exists()                     # left by the kill; in nobody's way
    assert merge(adapters["A"], "--method", "linear", "--as", "adapter", "--out", merged).exit_code == 0
    assert not (tmp_path / ".merged.lock").exists()


@pytest.mark.slow
def test_two_evals_resuming_into_one_folder_never_duplicate_a_row(tiny_model, prepared, tmp_path):
    """Probe Q2: both runs appended the same missing rows (qa.jsonl 14 lines for 8 rows, EM 0.1429
    instead of 0.125, on every later run too). Now the second is refused while the first writes."""
    recipe = eval_recipe(tmp_path / "eval.yaml", tiny_model, prepared, [{"name": "base"}])
    out = tmp_path / "results"
    assert run_lf_wrap("eval", recipe, "--out", out).returncode == 0
    predictions = out / "predictions" / "base" / "qa.jsonl"
    truth = json.loads((out / "metrics.json").read_text())["metrics"]["base"]["qa"]
    predictions.write_text("".join(predictions.read_text().splitlines(keepends=True)[:2]))
    exe = Path(sys.executable).parent / "lf-wrap"
    first = subprocess.Popen([str(exe), "eval", str(recipe), "--out", str(out), "--set", "batch_size=1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".results.lock"
    deadline = time.monotonic() + 3      # (before the lock, the second run started while the first loaded)
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_lf_wrap("eval", recipe, "--out", out, "--set", "batch_size=1")
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    assert second.returncode == 2 and f"(pid {first.pid}" in errors(second)[0], second.stderr[-2000:]
    rows = [json.loads(line)["row"] for line in predictions.read_text().splitlines()]
    assert sorted(rows) == list(range(8))
    assert json.loads((out / "metrics.json").read_text())["metrics"]["base"]["qa"] == truth


@pytest.mark.slow
def test_search_force_through_a_symlinked_out_replaces_the_folder_it_points_to(search_study, tmp_path):
    """Probe S52: `--force` onto an out that is a symlink: `OSError: Cannot call rmtree on a symbolic link`."""
    real, link = tmp_path / "real", tmp_path / "link"
    _fake_search_folder(real, **{"scores.jsonl": "", "leaderboard.md": "old"})
    link.symlink_to(real)
    path = search_recipe(search_study, link, budget=2, round_size=2)
    done = run_lf_wrap("merge", "search", path, "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert json.loads((real / "manifest.json").read_text())["status"] == "finished"
    assert "old" not in (real / "leaderboard.md").read_text()


def test_a_search_method_that_needs_more_rank_is_refused_at_check(tiny_model, tmp_path):
    """iso_cts at its default common fraction splits three rank-1 adapters' 3 directions into 3
    common and none per task: refused by --check, before any engine (as `merge adapters` refuses it)."""
    rank1 = {k: make_adapter(tiny_model, tmp_path / "rank1" / k, 1, 2, seed=i) for i, k in enumerate("ABC")}
    path, _ = write_planned_search(tiny_model, rank1, tmp_path)
    result = run_lf_wrap("merge", "search", path, "--set", "methods=[linear, iso_cts]", "--check")
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    assert errors(result)[0].startswith("Error: methods: iso_cts at its default hyper-parameters: params.")
