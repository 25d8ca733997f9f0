"""The main job end to end on the tiny model: prepare -> train -> merge -> eval -> report, the
way `make demo DEMO_MODEL=tiny` runs it (real LLaMA-Factory, PEFT and vLLM; ~3 minutes)."""

from __future__ import annotations

import math

from conftest import read_json, run_lf_wrap

MODELS = ["base", "lora_translate", "lora_summarize", "lora_qa", "merge_3in1", "merge_linear"]
ROWS = ["translate BLEU", "summarize ROUGE-1", "qa EM", "mean"]


def test_tiny_demo_runs_every_stage_and_prints_the_table(tmp_path):
    out = tmp_path / "demo"
    proc = run_lf_wrap("demo", "--model", "tiny", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The table printed to the console, one column per model, the study's rows.
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| metric |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == MODELS
    table = read_json(out / "eval" / "table.json")
    assert table["columns"] == MODELS and table["rows"] == ROWS
    for model in MODELS:
        for row in ROWS:
            value = table["values"][model][row]
            assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0, (model, row, value)
    # Every stage's artefacts, in the one run folder.
    for task in ("translate", "summarize", "qa"):
        assert (out / "runs" / task / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "merges" / "3in1" / "config.json").exists()
    assert (out / "merges" / "linear" / "merge_manifest.json").exists()
    for name in ("chart.png", "loss_curves.png", "table.md", "table.csv", "metrics.json"):
        assert (out / "eval" / name).stat().st_size > 0
    # Progress lines per stage and the total time.
    for stage in ("data:", "train:", "merge:", "eval:", "done: total"):
        assert stage in proc.stderr
    # The demo never touches the runs/ links of the folder it was started from.
    assert not (tmp_path / "runs").exists()
    # One manifest contract: prepare, train, merge and eval manifests open with the same header.
    from lf_wrap.core.manifest import HEADER_KEYS

    manifests = {"prepare": out / "dataset_info" / "demo_qa_train.manifest.json",
                 "train": out / "runs" / "qa" / "manifest.json",
                 "merge": out / "merges" / "linear" / "merge_manifest.json",
                 "eval": out / "eval" / "manifest.json"}
    commits = set()
    for stage, path in manifests.items():
        manifest = read_json(path)
        assert list(manifest)[:len(HEADER_KEYS)] == list(HEADER_KEYS), (stage, list(manifest)[:10])
        assert manifest["stage"] == stage and manifest["status"] == "finished", stage
        assert manifest["argv"][:2] == ["lf-wrap", "demo"] and manifest["seconds"] >= 0, stage
        assert manifest["started"] <= manifest["ended"], stage
        commits.add(None if manifest["git"] is None else manifest["git"]["commit"])
    assert len(commits) == 1
