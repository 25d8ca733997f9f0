"""Layer-wise merge weights (lf_wrap.merge.blocks) on the 2-layer tiny model: a weight per adapter
per block of layers, or per kind (attention, MLP), checked against the deltas summed by hand
from the adapters' own files (helpers.adapters.lora_delta), and the errors when the form does not fit."""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import read_json
from helpers.adapters import lora_delta, make_adapter, model_weights
from lf_wrap.cli import cli
from lf_wrap.merge.blocks import block_ranges
from lf_wrap.merge.checks import check_inputs
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS
from lf_wrap.merge.run import merge, merged_delta

Q0, V0 = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"


def _layer(name: str) -> int:
    return 0 if ".layers.0." in name else 1


def test_blocks_split_layers_evenly_the_first_ones_larger():
    assert block_ranges(10, 3) == [(0, 3), (4, 6), (7, 9)]
    assert block_ranges(2, 2) == [(0, 0), (1, 1)] and block_ranges(28, 1) == [(0, 27)]


def test_weights_one_zero_change_only_layer_0_as_merged_by_hand(tiny_model, adapter_paths, tmp_path):
    a = adapter_paths[0]
    out = merge(MergeConfig(adapters=adapter_paths[:2], method="linear", weights=[[1.0, 0.0], 0.0],
                            out=str(tmp_path / "first"))).out
    base, merged = model_weights(tiny_model), model_weights(out)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {Q0, V0}
    for name in changed:
        assert torch.allclose(merged[name], base[name] + lora_delta(a, name), atol=1e-6)


def test_two_adapters_a_weight_per_block_model_and_exact_adapter(tiny_model, adapter_paths, tmp_path):
    weights = [[1.0, -0.5], [0.25, 2.0]]
    a, b = adapter_paths[:2]
    model = merge(MergeConfig(adapters=[a, b], method="linear", weights=weights, out=str(tmp_path / "m"))).out
    adapter = merge(MergeConfig(adapters=[a, b], method="linear", weights=weights, out=str(tmp_path / "a"),
                                **{"as": "adapter"})).out
    base, merged = model_weights(tiny_model), model_weights(model)
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    targeted = [k for k in base if "q_proj.weight" in k or "v_proj.weight" in k]
    assert len(targeted) == 4
    for name in targeted:
        by_hand = weights[0][_layer(name)] * lora_delta(a, name) + weights[1][_layer(name)] * lora_delta(b, name)
        assert torch.allclose(merged[name], base[name] + by_hand, atol=1e-6), name
        prefix = "base_model.model." + name.removesuffix(".weight")
        assert torch.allclose(lora[prefix + ".lora_B.weight"] @ lora[prefix + ".lora_A.weight"], by_hand, atol=1e-6)
    manifest = read_json(model / "merge_manifest.json")
    assert manifest["weights"] == weights
    assert manifest["blocks"]["count"] == 2 and manifest["blocks"]["layers"] == [[0, 0], [1, 1]]
    assert manifest["blocks"]["module_weights"][Q0] == [1.0, 0.25]
    assert manifest["blocks"]["module_weights"]["model.layers.1.self_attn.q_proj.weight"] == [-0.5, 2.0]


@pytest.mark.parametrize("method", [m for m, info in METHODS.items() if info.weighted and m != "linear"])
def test_every_weighted_method_takes_each_block_its_weights(adapter_paths, tmp_path, method):
    """Module by module, a layer-wise merge is the method at that block's weights."""
    density = 0.5 if METHODS[method].density else None
    layered = check_inputs(MergeConfig(adapters=adapter_paths, method=method, weights=[[1.0, 0.5], [0.5, 1.5], 1.0],
                                       density=density, out=str(tmp_path / "no")))
    for name in layered.modules:
        flat = [[1.0, 0.5, 1.0], [0.5, 1.5, 1.0]][_layer(name)]
        plain = check_inputs(MergeConfig(adapters=adapter_paths, method=method, weights=flat, density=density,
                                         out=str(tmp_path / "no")))
        assert torch.equal(merged_delta(layered, name), merged_delta(plain, name)), name


def test_per_kind_weights_split_attention_from_mlp(tiny_model, tmp_path):
    a = make_adapter(tiny_model, tmp_path / "qa", 4, 8, seed=3, targets=("q_proj", "up_proj"))
    b = make_adapter(tiny_model, tmp_path / "qb", 4, 8, seed=4, targets=("q_proj", "up_proj"))
    out = merge(MergeConfig(adapters=[str(a), str(b)], method="linear",
                            weights=[{"attention": [1.0, 0.0], "mlp": 0.5}, 0.0], out=str(tmp_path / "m"))).out
    base, merged = model_weights(tiny_model), model_weights(out)
    for name in (n for n in base if "q_proj.weight" in n or "up_proj.weight" in n):
        weight = 0.5 if "up_proj" in name else [1.0, 0.0][_layer(name)]
        assert torch.allclose(merged[name], base[name] + weight * lora_delta(a, name), atol=1e-6), name


def _merge_recipe(tmp_path, adapters, weights, out):
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump({"adapters": adapters, "method": "linear", "weights": weights,
                                    "out": str(tmp_path / out)}), encoding="utf-8")
    return CliRunner().invoke(cli, ["merge", "recipe", str(path)])


def test_a_form_that_does_not_fit_the_base_is_one_error_naming_weights(tiny_model, adapter_paths, tmp_path):
    done = _merge_recipe(tmp_path, adapter_paths[:2], [[1.0, 0.0, 0.5], 1.0], "three")
    assert done.exit_code == 2 and done.output.count("Error:") == 1, done.output
    assert "weights: 3 blocks is more than the base's 2 decoder layers" in done.output
    assert not (tmp_path / "three").exists()
    done = _merge_recipe(tmp_path, adapter_paths[:2], [[1.0, 0.0], [1.0]], "lengths")
    assert done.exit_code == 2 and "weights: block lists of 1 and 2 weights" in done.output, done.output
    done = _merge_recipe(tmp_path, adapter_paths[:2], [{"attn": 1.0}, 1.0], "kind")
    assert done.exit_code == 2 and "per-kind weights are keyed by attention and mlp" in done.output, done.output
    mlp = make_adapter(tiny_model, tmp_path / "mlp", 4, 8, targets=("q_proj", "up_proj"))
    done = _merge_recipe(tmp_path, [str(mlp), str(mlp)], [{"attention": 1.0}, 1.0], "nomlp")
    assert done.exit_code == 2 and "adapter 0 has no mlp weight" in done.output, done.output
    assert not any((tmp_path / n).exists() for n in ("lengths", "kind", "nomlp"))
