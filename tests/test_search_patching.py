"""Candidate merges patched into a running vLLM engine (lf_wrap.serving.patching) on the tiny
model with three seeded random adapters: the patched engine generates exactly what the same
merge written by `lf-wrap merge adapters --as model` generates when served alone; restoring
gives the base back bit for bit; KV computed under one candidate never serves the next."""

from __future__ import annotations

import pytest
import torch

from helpers.engine import NEW_TOKENS, engine_greedy, engine_spec, served_alone
from lf_wrap.serving.engine import Engine
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.run import merge
from lf_wrap.search.candidates import Candidate, candidate_plan, deltas
from lf_wrap.serving.patching import WeightPatcher

pytestmark = pytest.mark.slow

CANDIDATES = {"linear": Candidate("linear", (0.5, -0.3, 0.8)),
              "ties": Candidate("ties", (1.0, 0.5, 1.0), density=0.4)}


@pytest.fixture(scope="module")
def merged_models(adapter_paths, tmp_path_factory):
    """Each candidate written to disk by the merge stage (`lf-wrap merge adapters --as model`)."""
    folder = tmp_path_factory.mktemp("search-merged")
    out = {}
    for key, c in CANDIDATES.items():
        config = MergeConfig(adapters=adapter_paths, method=c.method, weights=list(c.weights), density=c.density,
                             out=str(folder / key))
        out[key] = merge(config).out
    return out


@pytest.fixture(scope="module")
def reference(tiny_model, merged_models, engine_prompts):
    """Greedy tokens of the base and of every merged model, each in its own engine."""
    tokens = {"base": served_alone(tiny_model, engine_prompts)}
    tokens.update({key: served_alone(path, engine_prompts) for key, path in merged_models.items()})
    for key in CANDIDATES:
        assert tokens[key] != tokens["base"], f"{key}: the merge does not change the tiny model's tokens"
    return tokens


def test_candidates_share_one_engine_start_and_match_their_merged_models(tiny_model, merge_plan, engine_prompts,
                                                                         reference, monkeypatch):
    starts = []
    original_init = Engine.__init__
    monkeypatch.setattr(Engine, "__init__", lambda self, spec: (starts.append(spec), original_init(self, spec))[1])
    engine = Engine(engine_spec(tiny_model))
    try:
        patcher = WeightPatcher(engine, merge_plan.modules)
        assert engine_greedy(engine, engine_prompts) == reference["base"]
        for key in ("linear", "ties", "linear"):      # back to a candidate already seen: no accumulation
            patcher.apply(deltas(merge_plan, CANDIDATES[key]))
            assert engine_greedy(engine, engine_prompts) == reference[key], key
        patcher.restore()
        assert engine_greedy(engine, engine_prompts) == reference["base"]
    finally:
        engine.close()
    assert len(starts) == 1


def test_restore_is_bitwise(tiny_model, merge_plan, engine_prompts):
    """On CPU vLLM packs each weight into a oneDNN handle and empties `.weight`; restoring puts
    back the very closure (and packed copy) vLLM built at load time, and the base's log-probs."""
    from vllm import SamplingParams

    engine = Engine(engine_spec(tiny_model))
    try:
        params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, logprobs=3, prompt_logprobs=1)
        requests = [{"prompt_token_ids": ids} for ids in engine_prompts]

        def logprobs():
            done = engine.llm.generate(requests, params, use_tqdm=False)
            return [(o.prompt_logprobs, [dict(sorted(step.items())) for step in o.outputs[0].logprobs])
                    for o in done]

        patcher = WeightPatcher(engine, merge_plan.modules)
        layers = list(patcher.layers.values())
        assert layers and all(layer.packed for layer in layers)     # this CPU path repacks
        assert all(layer.module.weight.numel() == 0 for layer in layers)
        loaded = {layer.path: (layer.module.cpu_linear, layer.module.weight) for layer in layers}
        before = logprobs()
        patcher.apply(deltas(merge_plan, CANDIDATES["ties"]))
        assert all(layer.module.cpu_linear is not loaded[layer.path][0] for layer in layers)
        assert logprobs() != before
        patcher.restore()
        assert all(layer.module.cpu_linear is loaded[layer.path][0] and layer.module.weight is loaded[layer.path][1]
                   for layer in layers)
        assert logprobs() == before
    finally:
        engine.close()


def test_patching_the_weight_alone_would_change_nothing_on_cpu(tiny_model, merge_plan, engine_prompts, reference):
    """Why the patcher re-packs: writing into `.weight` (empty after load) is not what runs."""
    engine = Engine(engine_spec(tiny_model))
    try:
        model = engine.llm.apply_model(lambda m: m)[0]
        layer = dict(model.named_modules())["model.layers.0.self_attn.qkv_proj"]
        layer.weight = torch.nn.Parameter(torch.randn(256, 128), requires_grad=False)
        assert engine.llm.reset_prefix_cache()
        assert engine_greedy(engine, engine_prompts) == reference["base"]
    finally:
        engine.close()


def test_no_prefix_cache_reuse_across_candidates(tiny_model, merge_plan, engine_prompts, reference):
    from vllm import SamplingParams

    engine = Engine(engine_spec(tiny_model))
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS)
    long_prompt = [{"prompt_token_ids": engine_prompts[-1]}]

    def run_long():
        out = engine.llm.generate(long_prompt, params, use_tqdm=False)[0]
        return list(out.outputs[0].token_ids), out.num_cached_tokens

    try:
        patcher = WeightPatcher(engine, merge_plan.modules)
        first, second = run_long(), run_long()
        assert first == (reference["base"][-1], 0)
        assert second[0] == reference["base"][-1] and second[1] >= 128    # the cache works within one model
        for key in ("linear", "ties"):
            patcher.apply(deltas(merge_plan, CANDIDATES[key]))
            tokens, cached = run_long()
            assert cached == 0 and tokens == reference[key][-1], key    # recomputed under the new weights
            again = run_long()
            assert again[1] >= 128 and again[0] == reference[key][-1]
        patcher.restore()
        assert run_long() == (reference["base"][-1], 0)
        kv = engine.llm.llm_engine.engine_core.engine_core.scheduler.kv_cache_manager.block_pool
        assert kv.get_num_free_blocks() == kv.num_gpu_blocks - 1     # every block free (one null block)
        assert patcher.changes == 3
    finally:
        engine.close()


def test_compiled_engine_serves_the_patched_weights(tiny_model, merge_plan, engine_prompts, merged_models):
    """lf-wrap's default on CPU compiles the model (dynamo + inductor): the re-packed kernels
    must be what the compiled graph calls, not a copy frozen at compile time."""
    engine = Engine(engine_spec(tiny_model, enforce_eager=False))
    try:
        base = engine_greedy(engine, engine_prompts)
        with WeightPatcher(engine, merge_plan.modules) as patcher:
            patcher.apply(deltas(merge_plan, CANDIDATES["linear"]))
            patched = engine_greedy(engine, engine_prompts)
        assert engine_greedy(engine, engine_prompts) == base
    finally:
        engine.close()
    assert patched == served_alone(merged_models["linear"], engine_prompts, enforce_eager=False) != base


def test_patching_under_a_lora_engine_keeps_the_adapters_working(tiny_model, adapter_paths, merge_plan, engine_prompts,
                                                                  reference):
    """Specialists as LoRA requests and candidates patched into the base, in one engine: the
    patch reaches the LoRA wrappers' base layers; an adapter request still adds its LoRA."""
    spec = engine_spec(tiny_model, enable_lora=True, max_lora_rank=8, max_loras=2, max_cpu_loras=2,
                       lora_target_modules=["q_proj", "v_proj"])
    spec.adapters = {"A": adapter_paths[0]}
    engine = Engine(spec)
    try:
        base, with_a = engine_greedy(engine, engine_prompts), engine_greedy(engine, engine_prompts, lora="A")
        assert base == reference["base"] and with_a != base
        patcher = WeightPatcher(engine, merge_plan.modules)
        assert all(hasattr(layer, "base_layer") for path, layer in patcher.model.named_modules()
                   if path in patcher.layers)
        patcher.apply(deltas(merge_plan, CANDIDATES["linear"]))
        assert engine_greedy(engine, engine_prompts) == reference["linear"]
        assert engine_greedy(engine, engine_prompts, lora="A") != with_a        # A on top of the candidate, not of W0
        patcher.restore()
        assert engine_greedy(engine, engine_prompts) == base
        assert engine_greedy(engine, engine_prompts, lora="A") == with_a
    finally:
        engine.close()


def test_live_weights_are_patched_in_place_and_restored_bitwise(tiny_model, merge_plan, engine_prompts):
    """The CUDA path (weights stay in `.weight`), reproduced on CPU: the targeted layers get
    their weight back and a plain F.linear kernel before the patcher starts."""
    from safetensors.torch import load_file

    checkpoint = load_file(str(tiny_model / "model.safetensors"))
    engine = Engine(engine_spec(tiny_model))
    try:
        modules = dict(engine.llm.apply_model(lambda m: m)[0].named_modules())
        for path in {name.rsplit(".", 2)[0] + ".qkv_proj" for name in merge_plan.modules}:
            fused = torch.cat([checkpoint[f"{path[:-8]}{p}_proj.weight"] for p in "qkv"])
            modules[path].weight = torch.nn.Parameter(fused, requires_grad=False)
            modules[path].cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)
        assert engine.llm.reset_prefix_cache()
        base = engine_greedy(engine, engine_prompts)
        patcher = WeightPatcher(engine, merge_plan.modules)
        assert not any(layer.packed for layer in patcher.layers.values())
        w0 = {path: layer.module.weight.detach().clone() for path, layer in patcher.layers.items()}
        weights = {path: layer.module.weight for path, layer in patcher.layers.items()}
        candidate = candidate_plan(merge_plan, CANDIDATES["ties"])
        patcher.apply(deltas(merge_plan, CANDIDATES["ties"]))
        for name in merge_plan.modules:
            layer = patcher.layers[patcher._part_index[name]]
            part = layer.parts[name]
            from lf_wrap.merge.run import merged_delta

            expected = (checkpoint[name].float() + merged_delta(candidate, name)).to(torch.float32)
            assert torch.equal(layer.module.weight[part.rows], expected)
        assert engine_greedy(engine, engine_prompts) != base
        patcher.restore()
        for path, layer in patcher.layers.items():
            assert layer.module.weight is weights[path] and torch.equal(layer.module.weight, w0[path])
        assert engine_greedy(engine, engine_prompts) == base
    finally:
        engine.close()


def test_refusals(tiny_model, merge_plan):
    from lf_wrap.core.errors import UserError

    engine = Engine(engine_spec(tiny_model))
    try:
        with pytest.raises(UserError, match="no such linear layer"):
            WeightPatcher(engine, ["model.layers.0.self_attn.nothing_proj.weight"])
        patcher = WeightPatcher(engine, merge_plan.modules[:1])
        with pytest.raises(UserError, match="not among"):
            patcher.apply({merge_plan.modules[1]: torch.zeros(1)})
        with pytest.raises(UserError, match="delta of shape"):
            patcher.apply({merge_plan.modules[0]: torch.zeros(3, 3)})
    finally:
        engine.close()
