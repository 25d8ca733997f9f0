"""`engine.serve: patch` (lf_wrap.serving.server) on the tiny model, float32: one engine
serves the base, an adapter and a merged model, patching each into the base's weights in turn,
and its predictions are token for token those of the models served as before (the adapter as a
LoRA request, the merged model in an engine of its own). A full model that differs from the
base outside the patchable weights keeps its own engine, with a log line saying why; and the
predictions' identity does not depend on the mode (a run in the other mode reuses them all)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from conftest import read_json, run_lf_wrap
from helpers.adapters import make_adapter

TASKS = ("translate", "qa")
PATCHED = ["base", "adapter", "merged"]


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory):
    from lf_wrap.merge.config import MergeConfig
    from lf_wrap.merge.run import merge

    root = tmp_path_factory.mktemp("patched-eval")
    a = make_adapter(tiny_model, root / "adapter_a", r=8, alpha=16, seed=11)
    b = make_adapter(tiny_model, root / "adapter_b", r=4, alpha=8, seed=12)
    # The adapter scored also targets o_proj, which the merge leaves at W0: the patcher serves
    # the union of both, each model's own weights and W0 elsewhere.
    adapter = make_adapter(tiny_model, root / "adapter", r=8, alpha=16, seed=13,
                           targets=("q_proj", "v_proj", "o_proj"))
    merged = merge(MergeConfig(adapters=[str(a), str(b)], method="ties", weights=[1.0, 0.7], density=0.5,
                               out=str(root / "merged"))).out
    odd = root / "odd"                   # the merge with its final norm changed: not patchable
    shutil.copytree(merged, odd)
    weights = load_file(str(odd / "model.safetensors"))
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1.5
    save_file(weights, str(odd / "model.safetensors"), metadata={"format": "pt"})
    return {"root": root, "base": tiny_model, "adapter": adapter, "merged": Path(merged), "odd": odd}


def recipe_file(models, prepared, serve: str, names=("base", "adapter", "merged", "odd")) -> Path:
    recipe = {
        "model_name_or_path": str(models["base"]), "template": "qwen", "dataset_dir": str(prepared),
        "models": [{"name": n, **({"path": str(models[n])} if n != "base" else {})} for n in names],
        "tasks": {t: {"dataset": f"tiny_{t}_validation", "max_new_tokens": 12} for t in TASKS},
        # eager: a compiled start costs 15-70 s on 2 cores; patching a compiled engine is
        # test_search_patching's (compiled, token for token)
        "engine": {"dtype": "float32", "max_model_len": 2048, "serve": serve, "enforce_eager": True},
        "batch_size": 5,               # 8 rows a task: a model's rows span batches, never share one
        "bootstrap": {"resamples": 200},
    }
    path = models["root"] / f"eval-{serve}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def evaluate(recipe: Path, out: Path, *args: str) -> dict:
    done = run_lf_wrap("eval", recipe, "--out", out, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return {"out": out, "manifest": read_json(out / "manifest.json"), "stderr": done.stderr}


def tokens(out: Path, model: str, task: str) -> list[list[int]]:
    lines = (out / "predictions" / model / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["token_ids"] for line in lines]


# ---------------------------------------------------------------- without an engine


def test_which_full_models_qualify(models):
    from lf_wrap.serving.server import full_model_patch

    names, why = full_model_patch(str(models["merged"]), models["base"])
    assert why == "" and names and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in names)
    assert full_model_patch(str(models["base"]), models["base"]) == ([], "")
    names, why = full_model_patch(str(models["odd"]), models["base"])
    assert names is None and "model.norm.weight differs" in why


def test_a_changed_config_keeps_an_engine_of_its_own(models, tmp_path):
    from lf_wrap.serving.server import full_model_patch

    other = tmp_path / "other"
    shutil.copytree(models["merged"], other)
    config = json.loads((other / "config.json").read_text())
    config["rope_theta"] = 12345.0
    (other / "config.json").write_text(json.dumps(config))
    assert full_model_patch(str(other), models["base"]) == (None, "its config.json is not the base's")


def test_a_config_written_by_another_transformers_is_still_the_bases(models, tmp_path):
    """A base from the Hub records the transformers that saved it, and a merge written today
    another: the same settings, so the merge is patched in, not given an engine of its own."""
    from lf_wrap.serving.server import full_model_patch

    other = tmp_path / "other"
    shutil.copytree(models["merged"], other)
    for name in ("config.json", "generation_config.json"):
        settings = json.loads((other / name).read_text())
        settings["transformers_version"] = "4.43.1"
        (other / name).write_text(json.dumps(dict(reversed(list(settings.items()))), indent=4))
    names, why = full_model_patch(str(other), models["base"])
    assert why == "" and names == full_model_patch(str(models["merged"]), models["base"])[0]
    # LLaMA-Factory's export writes the tokenizer with padding_side and split_special_tokens at its
    # default: nothing vLLM serves changes (the demo's 3-in-1 got an engine of its own for it)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (models["base"] / name).exists():
            shutil.copy(models["base"] / name, other / name)
    settings = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**settings, "padding_side": "left",
                                                             "split_special_tokens": False}))
    assert full_model_patch(str(other), models["base"])[1] == ""
    (other / "tokenizer_config.json").write_text(json.dumps({**settings, "split_special_tokens": True}))
    assert full_model_patch(str(other), models["base"]) == (None, "its tokenizer_config.json is not the base's")


def test_an_adapter_merge_cannot_read_stays_a_lora_request(models, tmp_path):
    from lf_wrap.evaluation.models import ResolvedModel
    from lf_wrap.evaluation.run import _engine_groups, _serving_entry
    from lf_wrap.serving.server import plan_patches

    biased = tmp_path / "biased"
    shutil.copytree(models["adapter"], biased)
    config = json.loads((biased / "adapter_config.json").read_text())
    (biased / "adapter_config.json").write_text(json.dumps({**config, "bias": "lora_only"}))
    base = str(models["base"])
    resolved = [ResolvedModel("base", "base", base), ResolvedModel("ok", "adapter", str(models["adapter"]), rank=8),
                ResolvedModel("biased", "adapter", str(biased), rank=8),
                ResolvedModel("merged", "full", str(models["merged"])), ResolvedModel("odd", "full", str(models["odd"]))]
    patched = plan_patches(resolved, models["base"])
    assert patched.names() == ["ok", "merged"] and set(patched.refused) == {"biased", "odd"}
    assert "bias is 'lora_only'" in patched.refused["biased"]
    groups = _engine_groups(resolved, base, patched)
    assert [[m.name for m in g[2]] for g in groups] == [["base", "ok", "biased", "merged"], ["odd"]]
    assert _serving_entry(groups[0][2], True, "patch", patched) == {"serve": "patch", "patched": ["ok", "merged"],
                                                                   "lora": ["biased"]}
    assert _serving_entry(groups[1][2], False, "patch", patched)["serve"] == "own engine"


def test_serve_settings(monkeypatch):
    from lf_wrap.core.errors import UserError
    from lf_wrap.serving.settings import EngineSettings
    from lf_wrap.serving.server import resolve_serve

    assert EngineSettings().serve == "auto"
    assert resolve_serve(EngineSettings(serve="auto"))[0] == "patch"          # this machine is a CPU
    assert resolve_serve(EngineSettings(serve="auto", tensor_parallel_size=2))[0] == "lora"
    with pytest.raises(UserError, match="tensor_parallel_size"):
        resolve_serve(EngineSettings(serve="patch", tensor_parallel_size=2))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert resolve_serve(EngineSettings(serve="auto"))[0] == "lora"


def test_batches_never_mix_models():
    from types import SimpleNamespace

    from lf_wrap.evaluation.generate import _batches

    a, b = SimpleNamespace(name="a"), SimpleNamespace(name="b")
    pending = [(a, i) for i in range(7)] + [(b, i) for i in range(3)]
    assert [[(m.name, i) for m, i in batch] for batch in _batches(pending, 5, True)] == [
        [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("a", 4)], [("a", 5), ("a", 6)], [("b", 0), ("b", 1), ("b", 2)]]
    assert len(_batches(pending, 5, False)) == 2


# ---------------------------------------------------------------- end to end (three eval runs)


@pytest.fixture(scope="module")
def patched(models, prepared):
    return evaluate(recipe_file(models, prepared, "patch"), models["root"] / "out-patch")


@pytest.fixture(scope="module")
def alone(models, prepared):
    """Today's way: base + adapter (a LoRA request) in one engine, each full model in its own."""
    return evaluate(recipe_file(models, prepared, "lora"), models["root"] / "out-lora")


@pytest.mark.slow
def test_patched_predictions_equal_the_models_served_alone(patched, alone):
    engines = patched["manifest"]["engines"]
    assert [e["models"] for e in engines] == [PATCHED, ["odd"]]
    assert engines[0]["serve"] == "patch" and engines[0]["patched"] == ["adapter", "merged"]
    assert engines[0]["lora"] == [] and "enable_lora" not in engines[0]["vllm_args"]
    assert engines[0]["model_changes"] == 2            # base rows first (unpatched), then adapter, merged
    assert engines[1]["serve"] == "own engine" and "model.norm.weight differs" in engines[1]["why"]
    assert "model 'odd' gets an engine of its own, not patched into the base's: model.norm.weight" in patched["stderr"]
    assert [e["models"] for e in alone["manifest"]["engines"]] == [["base", "adapter"], ["merged"], ["odd"]]
    for task in TASKS:
        base = tokens(patched["out"], "base", task)
        for model in (*PATCHED, "odd"):
            assert tokens(patched["out"], model, task) == tokens(alone["out"], model, task), (model, task)
        for model in ("adapter", "merged"):            # the patch changed what the engine answers
            assert tokens(patched["out"], model, task) != base, (model, task)


@pytest.mark.slow
def test_a_merged_models_predictions_are_reused_across_modes_an_adapters_are_not(patched, alone, models, prepared,
                                                                                 tmp_path):
    """A lora run over the patched run's folder reuses the base's and the merged model's predictions
    (the merged model serves its own tensors either way) and starts no engine; an adapter patched
    into the weights rounds otherwise than a LoRA request, so its predictions are not reused;
    changing what decides every answer (max_new_tokens) still regenerates."""
    out = tmp_path / "out"
    shutil.copytree(patched["out"], out)
    again = evaluate(recipe_file(models, prepared, "lora", names=("base", "merged", "odd")), out)
    assert again["manifest"]["generated"] == 0 and again["manifest"]["engines"] == []
    for task in TASKS:
        assert tokens(out, "merged", task) == tokens(alone["out"], "merged", task)
    adapter = run_lf_wrap("eval", recipe_file(models, prepared, "lora"), "--out", out)
    assert adapter.returncode == 2 and "model 'adapter'" in adapter.stderr, adapter.stderr[-2000:]
    assert "adapter_served_as='patch', now adapter_served_as='lora'" in adapter.stderr
    changed = run_lf_wrap("eval", recipe_file(models, prepared, "lora"), "--out", out,
                          "--set", "tasks.qa.max_new_tokens=11")
    assert changed.returncode != 0 and "--force" in changed.stderr


# ---------------------------------------------------------------- adapters no engine can serve


@pytest.fixture(scope="module")
def unservable(tiny_model, tmp_path_factory):
    """Adapters vLLM refuses as LoRA requests (made with the real PEFT) and lf-wrap cannot patch:
    modules_to_save, a LoRA on embed_tokens, one on the tied lm_head; and one with lora_alpha NaN."""
    root = tmp_path_factory.mktemp("unservable")
    found = {"mts": make_adapter(tiny_model, root / "mts", r=4, alpha=8, modules_to_save=("lm_head",)),
             "emb": make_adapter(tiny_model, root / "emb", r=4, alpha=8, targets=("embed_tokens",)),
             "head": make_adapter(tiny_model, root / "head", r=4, alpha=8, targets=("lm_head",))}
    found["nan"] = shutil.copytree(make_adapter(tiny_model, root / "ok", r=4, alpha=8), root / "nan")
    config = json.loads((found["nan"] / "adapter_config.json").read_text())
    (found["nan"] / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": float("nan")}))
    return root, found


@pytest.mark.parametrize("kind, serve, needles", [
    ("mts", "auto", ["modules_to_save is set (['lm_head'])", "llamafactory-cli export"]),
    ("emb", "auto", ["a LoRA on embed_tokens", "an embedding LoRA"]),
    ("head", "lora", ["a LoRA on lm_head"]),
    ("nan", "auto", ["lora_alpha a finite number", "lora_alpha=nan"]),
])
def test_an_adapter_the_engine_cannot_serve_is_refused_before_it_starts(tiny_model, prepared, unservable, kind,
                                                                         serve, needles):
    """Probe SV1-SV3 (and M40 for the eval): not patched, such an adapter went to vLLM as a LoRA
    request, which raised once the engine was up, after the base's rows were generated. Now one
    Error before any engine: what vLLM serves, and how to evaluate it (merged into the base)."""
    root, found = unservable
    recipe = {"model_name_or_path": str(tiny_model), "template": "qwen", "dataset_dir": str(prepared),
              "models": [{"name": "base"}, {"name": kind, "path": str(found[kind])}],
              "tasks": {"qa": {"dataset": "tiny_qa_validation", "max_new_tokens": 4}},
              "engine": {"dtype": "float32", "max_model_len": 2048, "serve": serve, "enforce_eager": True}}
    path = root / f"eval-{kind}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    done = run_lf_wrap("eval", path, "--out", root / f"ev-{kind}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    for needle in [f"model '{kind}'", *needles]:
        assert needle in errors[0], errors[0]
    if kind != "nan":
        assert "vLLM cannot serve adapter" in errors[0] and "linear layers" in errors[0], errors[0]
    assert "engine 1/" not in done.stderr and not (root / f"ev-{kind}" / "predictions").exists()
