"""`lf-wrap merge` on the tiny model with three seeded random PEFT adapters (ranks 4/8/4,
different lora_alpha, one rsLoRA), against LLaMA-Factory's export, PEFT and vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import REPO, read_json, run_lf_wrap
from helpers.adapters import (load_model, lora_delta, max_abs_diff, model_greedy, model_weights,
                              peft_merged_weights)
from lf_wrap.cli import cli


def merge_cli(*args):
    result = CliRunner().invoke(cli, ["merge", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("merged")


@pytest.fixture(scope="module")
def abc(adapters):
    return [adapters[k] for k in "ABC"]


@pytest.fixture(scope="module")
def sum_model(abc, outputs):
    """The study's 3-in-1: `sum --as model`, i.e. llamafactory-cli export with a,b,c."""
    proc = run_lf_wrap("merge", "adapters", *abc, "--out", outputs / "sum-model")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return outputs / "sum-model"


@pytest.fixture(scope="module")
def sum_adapter(abc, outputs):
    merge_cli("adapters", *abc, "--as", "adapter", "--out", outputs / "sum-adapter")
    return outputs / "sum-adapter"


def expected(base, adapters, weights):
    """W + sum_i w_i * s_i * B_i @ A_i, from the files, independently of lf_wrap.merge."""
    tensors = model_weights(base)
    for name in tensors:
        if name.endswith(("q_proj.weight", "v_proj.weight")):
            tensors[name] = tensors[name] + sum(w * lora_delta(a, name) for a, w in zip(adapters, weights))
    return tensors


def test_sum_model_is_llamafactory_export_of_all_three(tiny_model, abc, sum_model):
    args = yaml.safe_load((sum_model / "llamafactory_export.yaml").read_text())
    assert args["adapter_name_or_path"].split(",") == [str(a.resolve()) for a in abc]
    assert args["infer_dtype"] == "float32" and args["finetuning_type"] == "lora"
    diff = max_abs_diff(model_weights(sum_model), expected(tiny_model, abc, [1, 1, 1]))
    print(f"\nsum --as model (llamafactory-cli export) vs W + dW_A + dW_B + dW_C: max abs diff {diff:.3g}")
    assert diff < 1e-6
    manifest = read_json(sum_model / "merge_manifest.json")
    assert manifest["llamafactory_export"]["exit_code"] == 0
    assert [i["r"] for i in manifest["inputs"]] == [4, 8, 4] and manifest["inputs"][1]["use_rslora"]
    assert all(i["digest"].startswith("blake3:") for i in manifest["inputs"]) and manifest["base"]["digest"].startswith("blake3:")
    assert manifest["stage"] == "merge" and manifest["status"] == "finished" and manifest["argv"][:3] == ["lf-wrap", "merge", "adapters"]


def test_linear_at_weight_one_matches_the_llamafactory_export(abc, sum_model, outputs):
    merge_cli("adapters", *abc, "--method", "linear", "--weights", "1,1,1", "--out", outputs / "linear-111")
    diff = max_abs_diff(model_weights(outputs / "linear-111"), model_weights(sum_model))
    print(f"\nlinear 1,1,1 (in-process) vs llamafactory-cli export: max abs diff {diff:.3g}")
    assert diff < 1e-5


def test_linear_weight_one_zero_zero_is_adapter_a_alone(tiny_model, abc, adapters, outputs):
    merge_cli("adapters", *abc, "--method", "linear", "--weights", "1,0,0", "--out", outputs / "linear-100")
    merged, base = model_weights(outputs / "linear-100"), model_weights(tiny_model)
    alone = expected(tiny_model, [adapters["A"]], [1])
    assert max_abs_diff(merged, alone) < 1e-6
    untouched = [k for k in base if not k.endswith(("q_proj.weight", "v_proj.weight"))]
    assert untouched and all(torch.equal(merged[k], base[k]) for k in untouched)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (outputs / "linear-100" / name).read_bytes() == (tiny_model / name).read_bytes()


@pytest.mark.parametrize("weights", ["1,1,1", "0.5,-0.3,0.8"])
def test_exact_adapter_form_reproduces_the_model_form(tiny_model, abc, outputs, weights):
    adapter, model = outputs / f"lin-adapter-{weights}", outputs / f"lin-model-{weights}"
    merge_cli("adapters", *abc, "--method", "linear", "--weights", weights, "--as", "adapter", "--out", adapter)
    merge_cli("adapters", *abc, "--method", "linear", "--weights", weights, "--out", model)
    config = read_json(adapter / "adapter_config.json")
    assert config["r"] == 16 and config["lora_alpha"] == 16 and not config["use_rslora"]
    diff = max_abs_diff(peft_merged_weights(tiny_model, adapter), model_weights(model))
    print(f"\nlinear {weights}: PEFT merge of the merged adapter vs merged model: max abs diff {diff:.3g}")
    assert diff < 1e-5
    assert read_json(adapter / "merge_manifest.json")["errors"]["max"] < 1e-5


def test_sum_adapter_reproduces_the_llamafactory_export(tiny_model, sum_adapter, sum_model):
    diff = max_abs_diff(peft_merged_weights(tiny_model, sum_adapter), model_weights(sum_model))
    print(f"\nsum --as adapter (PEFT merge_and_unload) vs llamafactory-cli export: max abs diff {diff:.3g}")
    assert diff < 1e-5


def test_ties_adapter_is_an_svd_with_its_error_recorded(tiny_model, abc, outputs):
    common = ["--method", "ties", "--density", "0.4", "--weights", "1,0.5,1"]
    merge_cli("adapters", *abc, *common, "--out", outputs / "ties-model")
    merge_cli("adapters", *abc, *common, "--as", "adapter", "--out", outputs / "ties-r16")
    merge_cli("adapters", *abc, *common, "--as", "adapter", "--rank", "128", "--out", outputs / "ties-full")
    model, base = model_weights(outputs / "ties-model"), model_weights(tiny_model)
    low = read_json(outputs / "ties-r16" / "merge_manifest.json")
    assert low["rank"] == 16 and read_json(outputs / "ties-r16" / "adapter_config.json")["r"] == 16
    factors = model_weights(outputs / "ties-r16")
    for name, error in low["errors"]["relative_frobenius"].items():
        delta = model[name] - base[name]
        prefix = "base_model.model." + name.removesuffix(".weight")
        approx = factors[prefix + ".lora_B.weight"] @ factors[prefix + ".lora_A.weight"]
        assert abs(float(torch.linalg.norm(delta - approx) / torch.linalg.norm(delta)) - error) < 1e-3
        assert 0.01 < error < 1   # a TIES delta is not low-rank: rank 16 loses something
    # At full rank (q_proj 128 x 128; v_proj 64 x 128 padded) the SVD adapter is the TIES model again.
    assert read_json(outputs / "ties-full" / "merge_manifest.json")["errors"]["max"] < 1e-5
    assert max_abs_diff(peft_merged_weights(tiny_model, outputs / "ties-full"), model) < 1e-5


def test_dare_is_reproducible_from_its_seed(abc, outputs):
    for name, seed in (("dare-a", 3), ("dare-b", 3), ("dare-c", 4)):
        merge_cli("adapters", *abc, "--method", "dare_ties", "--density", "0.5", "--seed", seed,
                  "--out", outputs / name)
    a, b, c = (model_weights(outputs / n) for n in ("dare-a", "dare-b", "dare-c"))
    assert max_abs_diff(a, b) == 0 and max_abs_diff(a, c) > 0
    assert read_json(outputs / "dare-a" / "merge_manifest.json")["seed"] == 3


def test_merged_adapter_generates_like_the_merged_model_in_transformers(tiny_model, sum_adapter, sum_model,
                                                                        short_prompts):
    with_adapter = model_greedy(load_model(tiny_model, sum_adapter), short_prompts)
    merged = model_greedy(load_model(sum_model), short_prompts)
    assert with_adapter == merged
    assert merged != model_greedy(load_model(tiny_model), short_prompts)   # the merge changed what the model says


VLLM_SCRIPT = textwrap.dedent("""
    import json, sys

    def main():
        base, adapter, rank, prompts, out = sys.argv[1:]
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
        llm = LLM(model=base, dtype="float32", enable_lora=True, max_lora_rank=int(rank), max_loras=1,
                  max_model_len=256, enforce_eager=True, seed=0)
        params = SamplingParams(temperature=0, max_tokens=8)
        requests = [{"prompt_token_ids": ids} for ids in json.loads(prompts)]
        done = llm.generate(requests, params, lora_request=LoRARequest("merged", 1, adapter))
        json.dump([list(o.outputs[0].token_ids) for o in done], open(out, "w"))

    if __name__ == "__main__":
        main()
""")


def test_merged_adapter_generates_like_the_merged_model_in_vllm(tiny_model, sum_adapter, sum_model, short_prompts,
                                                                tmp_path):

    script, out = tmp_path / "vllm_lora.py", tmp_path / "tokens.json"
    script.write_text(VLLM_SCRIPT)
    rank = read_json(sum_adapter / "adapter_config.json")["r"]
    proc = subprocess.run([sys.executable, str(script), str(tiny_model), str(sum_adapter), str(rank),
                           json.dumps(short_prompts), str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    merged = model_greedy(load_model(sum_model), short_prompts)
    assert json.loads(out.read_text()) == merged


def test_merged_model_loads_in_transformers_with_its_chat_template(sum_model, outputs, abc):
    from transformers import AutoTokenizer

    merge_cli("adapters", *abc, "--method", "ties", "--density", "0.5", "--out", outputs / "ties-plain")
    for folder in (sum_model, outputs / "ties-plain"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        assert (folder / "generation_config.json").is_file()


# ---------------------------------------------------------------- recipes


def test_repo_recipe_is_the_studys_three_in_one():
    from lf_wrap.merge.config import load_recipe, parse_config

    config, _ = load_recipe(REPO / "recipes" / "merge.yaml")
    assert config.method == "sum" and config.output_form == "model" and config.out == "runs/merge-3in1"
    assert config.adapters == [f"runs/{t}-latest/adapter" for t in ("translate", "summarize", "qa")]
    # the commented weighted example below the marker is a valid recipe too
    text = (REPO / "recipes" / "merge.yaml").read_text(encoding="utf-8")
    example = text.split("# --- weighted example", 1)[1]
    block = "\n".join(line[2:] for line in example.splitlines() if line.startswith("# "))
    assert parse_config(yaml.safe_load(block), "example").method != "sum"


def test_recipe_run_keeps_the_recipe_and_skips_a_repeat(abc, tmp_path):
    recipe = tmp_path / "my-merge.yaml"
    text = ("# my merge\nadapters:\n" + "".join(f"  - {a}\n" for a in abc) +
            f"method: linear\nweights: [0.3, 0.3, 0.3]\nas: adapter\nout: {tmp_path / 'out'}\n")
    recipe.write_text(text)
    merge_cli("recipe", recipe, "--set", "weights=[1, 0, 0]")
    out = tmp_path / "out"
    assert (out / "merge_recipe.yaml").read_text() == text
    assert yaml.safe_load((out / "merge_config.yaml").read_text())["weights"] == [1, 0, 0]
    first = read_json(out / "merge_manifest.json")
    again = merge_cli("recipe", recipe, "--set", "weights=[1, 0, 0]")
    assert "skipping" in again.output and read_json(out / "merge_manifest.json") == first
    refused = CliRunner().invoke(cli, ["merge", "recipe", str(recipe)])
    assert refused.exit_code == 2 and "--force" in refused.output
    merge_cli("recipe", recipe, "--force")
    assert read_json(out / "merge_manifest.json")["weights"] == [0.3, 0.3, 0.3]
    check = merge_cli("recipe", recipe, "--set", f"out={tmp_path / 'never'}", "--check")
    assert "OK" in check.output and not (tmp_path / "never").exists()
