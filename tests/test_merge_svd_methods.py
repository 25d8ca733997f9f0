"""The SVD-based merge methods (tsv, iso_c, iso_cts, knots; docs/merge-methods.md).

FusionBench is not a dependency, and CI does not have it: `fb_*` below are its 0.2.33 arithmetic
on one key, reproduced line for line from fusion_bench/method/task_singular_vector/utils/
TSVM_utils.py (compute_and_sum_svd_mem_reduction) and isotropic_merging/iso_utils.py (iso_c,
iso_cts), float32 as FusionBench runs them on CPU; `knots_official` reproduces gstoica27/KnOTS's
SVDMerger (task_merger.py) with its ties_masking and disjoint mean (masking_ops.py).
- Full-rank deltas (where FusionBench's result is a function of its input): lf-wrap's methods
  equal the reproduced arithmetic to 1e-4 relative (measured 2e-7 to 3e-6).
- LoRA deltas (summed rank below min(m, n)): FusionBench picks up singular vectors of zero
  singular values; lf-wrap's rank-aware methods do not, and their output is deterministic."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from helpers.cli import assert_refused, merge_adapters as merge_cli
from helpers.adapters import lora_delta, model_weights
from lf_wrap.cli import cli
from lf_wrap.merge.methods import METHODS
from lf_wrap.merge.methods.iso import cts_split
from lf_wrap.merge.methods.knots import align

NEW = ("tsv", "iso_c", "iso_cts", "knots")
ONES = [1.0, 1.0, 1.0]


def lora_deltas(m: int, n: int, ranks=(4, 8, 6), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g) for r in ranks]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the measure the issue's figures use."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def combine(name, deltas, weights=ONES, density=None, **params):
    density = density if density is not None or not METHODS[name].density else 0.5
    return METHODS[name].combine(deltas, weights, density, None, params)


# ---------------------------------------------------------------- FusionBench's arithmetic, reproduced


def fb_tsvm(tvs):
    sv_reduction = 1 / len(tvs)
    for i, vec in enumerate(tvs):
        u, s, vh = torch.linalg.svd(vec, full_matrices=False)
        if i == 0:
            sum_u, sum_s, sum_vh = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(vh)
        k = int(s.shape[0] * sv_reduction)
        sum_u[:, i * k:(i + 1) * k], sum_s[i * k:(i + 1) * k], sum_vh[i * k:(i + 1) * k, :] = u[:, :k], s[:k], vh[:k]
    u_u, _, vh_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_vh, _, vh_vh = torch.linalg.svd(sum_vh, full_matrices=False)
    return torch.linalg.multi_dot((u_u, vh_u, torch.diag(sum_s), u_vh, vh_vh))


def fb_iso_c(tvs):
    merged = sum(tvs) / len(tvs)
    merged *= len(tvs)
    u, s, v = torch.linalg.svd(merged, full_matrices=False)
    return torch.linalg.multi_dot((u, torch.diag(torch.ones_like(s) * s.mean()), v))


def fb_iso_cts(tvs, common_space_fraction):
    shape_, tasks = tvs[0].shape, len(tvs)
    combined_w = sum(tvs)
    common = int(min(shape_) * common_space_fraction)
    common = min(shape_) - round((min(shape_) - common) / tasks) * tasks
    u, s, v = torch.linalg.svd(combined_w, full_matrices=False)
    cu, cs, cv = u[:, :common], s[:common], v[:common, :]
    d = int((min(shape_) - common) / tasks)
    for i, w in enumerate(tvs):
        u_ts, s_ts, v_ts = torch.linalg.svd(w - cu @ cu.T @ w, full_matrices=False)
        if i == 0:
            big_u, big_s, big_v = torch.zeros_like(u_ts), torch.zeros_like(s_ts), torch.zeros_like(v_ts)
        big_u[:, i * d:(i + 1) * d], big_s[i * d:(i + 1) * d], big_v[i * d:(i + 1) * d, :] = \
            u_ts[:, :d], s_ts[:d], v_ts[:d, :]
    big_u[:, tasks * d:tasks * d + common], big_s[tasks * d:tasks * d + common] = cu, cs
    big_v[tasks * d:tasks * d + common, :] = cv
    a, _, b = torch.linalg.svd(big_u, full_matrices=False)
    big_u = a @ b
    a, _, b = torch.linalg.svd(big_v, full_matrices=False)
    big_v = a @ b
    return torch.linalg.multi_dot((big_u, torch.diag(torch.ones_like(big_s) * big_s.mean()), big_v))


def fb_subspace_alignment(delta_weights, eps=1e-4):
    u, s, vh = torch.linalg.svd(torch.cat(delta_weights, dim=1).to(torch.float64), full_matrices=False)
    u, vh, s = u[:, s > eps].float(), vh[s > eps].float(), s[s > eps].float()
    return u, s, torch.split(vh, delta_weights[0].shape[1], dim=1)


def knots_official(tvs, scaling):
    """KnOTS-TIES with topK 100 (no trim, the LLaMA config), merging_type mean, on one module."""
    u, s, v = torch.linalg.svd(torch.cat(tvs, dim=1).to(torch.float64), full_matrices=False)
    u, v, s = u[:, s > 1e-5].float(), v[s > 1e-5].float(), s[s > 1e-5].float()
    reps = torch.vstack([(torch.diag(s) @ block).flatten() for block in torch.split(v, tvs[0].shape[1], dim=1)])
    signs = torch.sign(reps.sum(dim=0))
    signs[signs == 0] = torch.sign(signs.sum())
    masked = reps * torch.where(signs.unsqueeze(0) > 0, reps > 0, reps < 0) * scaling
    counts = (masked != 0).sum(dim=0).float()
    merged = masked.sum(dim=0) / counts.clamp(min=1)
    return u @ merged.reshape(-1, tvs[0].shape[1])


# ---------------------------------------------------------------- full rank: FusionBench's result


FULL_RANK = {"LoRA 12x16, ranks 4/8/6": lambda: lora_deltas(12, 16),
             "LoRA 16x12, ranks 4/8/6": lambda: lora_deltas(16, 12),
             "dense 10x14": lambda: [torch.randn(10, 14, generator=torch.Generator().manual_seed(i)) for i in range(3)]}


@pytest.mark.parametrize("case", list(FULL_RANK))
def test_full_rank_deltas_give_fusionbench_result(case):
    deltas = FULL_RANK[case]()
    got = {"tsv": rel(combine("tsv", deltas), fb_tsvm(deltas)),
           "iso_c": rel(combine("iso_c", deltas), fb_iso_c(deltas)),
           "iso_cts": rel(combine("iso_cts", deltas), fb_iso_cts(deltas, 0.8)),
           "iso_cts f=0.5": rel(combine("iso_cts", deltas, common_fraction=0.5), fb_iso_cts(deltas, 0.5)),
           "iso_cts f=1 is iso_c": rel(combine("iso_cts", deltas, common_fraction=1.0), fb_iso_c(deltas))}
    print(case, {k: f"{v:.1e}" for k, v in got.items()})
    assert max(got.values()) < 1e-4, got


def test_alpha_and_weights_scale_as_fusionbench_does():
    deltas = lora_deltas(12, 16)
    weights = [0.5, 1.5, -0.8]
    # TSV-M: a list alpha multiplies each task vector before the SVD, a float alpha the result
    assert rel(combine("tsv", deltas, weights), fb_tsvm([w * d for w, d in zip(weights, deltas)])) < 1e-4
    assert rel(combine("tsv", deltas, alpha=0.7), 0.7 * fb_tsvm(deltas)) < 1e-4
    # Iso: scaling_factor multiplies the result; lf-wrap's weights scale each delta first
    assert rel(combine("iso_c", deltas, alpha=1.5), 1.5 * fb_iso_c(deltas)) < 1e-4
    assert rel(combine("iso_cts", deltas, alpha=1.5), 1.5 * fb_iso_cts(deltas, 0.8)) < 1e-4
    for name in ("iso_c", "iso_cts"):
        assert rel(combine(name, deltas, [0.4] * 3), 0.4 * combine(name, deltas)) < 1e-5
        assert rel(combine(name, deltas, weights), combine(name, [w * d for w, d in zip(weights, deltas)])) < 1e-5


def test_iso_cts_split_rounds_half_to_even():
    assert cts_split(48, 3, 0.8) == (39, 3)
    assert cts_split(64, 2, 0.8) == (52, 6)      # 6.5 rounds to 6 (half up would give 50 and 7)
    assert cts_split(4096, 3, 0.8) == (3277, 273)
    assert cts_split(18, 3, 0.8) == (15, 1)      # the rank-aware split of 4+8+6


def test_knots_alignment_is_fusionbench_helper_and_knots_ties_is_the_official_arithmetic():
    deltas = lora_deltas(12, 16)
    basis, blocks = align(deltas)
    u, s, vhs = fb_subspace_alignment(deltas)
    assert basis.shape[1] == s.numel() == 12
    for block, vh in zip(blocks, vhs):
        assert rel(basis @ block, u @ torch.diag(s) @ vh) < 1e-5
    for delta, block in zip(deltas, blocks):          # each task is exactly U @ its block
        assert rel(basis @ block, delta) < 1e-5
    # density 1 (KnOTS's topK 100): the official sign election and disjoint mean, scaled
    assert rel(combine("knots", deltas, density=1.0), knots_official(deltas, 1.0)) < 1e-4
    assert rel(combine("knots", deltas, [0.6] * 3, density=1.0), knots_official(deltas, 0.6)) < 1e-4
    assert rel(combine("knots", deltas, density=1.0, alpha=0.6), knots_official(deltas, 0.6)) < 1e-4
    # knots + linear is task arithmetic (the alignment is a change of basis)
    weights = [0.5, 1.5, -0.8]
    expected = sum(w * d for w, d in zip(weights, deltas))
    assert rel(METHODS["knots"].combine(deltas, weights, None, None, {"merge": "linear", "alpha": 2.0}),
               2 * expected) < 1e-5


# ---------------------------------------------------------------- LoRA deltas: rank-aware and deterministic


@pytest.mark.parametrize("shape", [(64, 48), (48, 64)])
def test_lora_deltas_give_a_deterministic_merge_where_fusionbench_does_not(shape):
    """A 1e-7 relative change of the deltas moves FusionBench's output by about its largest
    element (measured 0.6 to 1.6); lf-wrap's by about 1e-7 of it."""
    deltas = lora_deltas(*shape)
    g = torch.Generator().manual_seed(1)
    nudged = [d * (1 + 1e-7 * (2 * torch.rand(d.shape, generator=g) - 1)) for d in deltas]
    fusionbench = {"tsv": fb_tsvm, "iso_c": fb_iso_c, "iso_cts": lambda t: fb_iso_cts(t, 0.8)}
    ours = {name: rel(combine(name, nudged), combine(name, deltas)) for name in NEW}
    theirs = {name: rel(fn(nudged), fn(deltas)) for name, fn in fusionbench.items()}
    print(shape, "lf-wrap moved", {k: f"{v:.1e}" for k, v in ours.items()},
          "FusionBench moved", {k: f"{v:.2f}" for k, v in theirs.items()})
    assert max(ours.values()) < 1e-5
    assert min(theirs.values()) > 0.05           # the trap is real on these shapes


def test_lora_merge_is_the_same_with_one_or_two_threads():
    deltas = lora_deltas(512, 384, ranks=(8, 8, 8))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = {name: combine(name, deltas) for name in NEW}
        torch.set_num_threads(2)
        two = {name: combine(name, deltas) for name in NEW}
    finally:
        torch.set_num_threads(threads)
    moved = {name: rel(two[name], one[name]) for name in NEW}
    print("1 vs 2 threads, 512x384, 3 x r8:", {k: f"{v:.1e}" for k, v in moved.items()})
    assert max(moved.values()) < 1e-5


@pytest.mark.parametrize("ranks", [(8, 16, 8), (40, 40, 40), (100, 90, 80)])
def test_sketched_svd_gives_the_full_svd_merge(monkeypatch, ranks):
    """spectrum.svd finds a low-rank delta's SVD from a seeded sketch (widths 64, then 256 on
    this 512 x 384 module, then LAPACK's full SVD): the merges are those of the full SVD."""
    from lf_wrap.merge.methods import spectrum

    deltas = lora_deltas(512, 384, ranks=ranks)
    sketched = {name: combine(name, deltas) for name in NEW}
    monkeypatch.setattr(spectrum, "SKETCH", 10**9)
    moved = {name: rel(sketched[name], combine(name, deltas)) for name in NEW}
    print(ranks, "sketched vs full SVD:", {k: f"{v:.1e}" for k, v in moved.items()})
    # Iso-CTS at ranks 100/90/80: 3 x 18 task directions nearly fill the 54 left by the common
    # subspace, and its polar factor amplifies rounding (a 1e-7 change of the deltas: 5e-6)
    assert max(moved.values()) < 5e-5


def test_rank_aware_results_keep_what_fusionbench_defines():
    """Where FusionBench's output is arbitrary, its spectrum (TSV-M) and its part inside the
    adapters' row and column spaces (Iso-C) are not: lf-wrap's keep both, minus the shrink."""
    deltas = lora_deltas(64, 48)
    p, rank = 48, 18
    # TSV-M: k = 16 per task; a rank-4 and a rank-6 task have only 4 and 6 real directions
    spectrum = torch.linalg.svdvals(combine("tsv", deltas).double())
    kept = torch.cat([torch.linalg.svdvals(d.double())[:min(16, r)] for d, r in zip(deltas, (4, 8, 6))])
    assert torch.allclose(spectrum[:rank], kept.sort(descending=True).values, rtol=1e-5)
    assert spectrum[rank] < 1e-5 * spectrum[0]
    fb_spectrum = torch.linalg.svdvals(fb_tsvm(deltas).double())
    assert torch.allclose(fb_spectrum[:rank], spectrum[:rank], rtol=1e-4)
    # Iso-C: flat spectrum over the rank non-zero values (FusionBench: over all p, zeros included)
    merged, theirs = combine("iso_c", deltas).double(), fb_iso_c(deltas).double()
    values = torch.linalg.svdvals(merged)
    assert torch.linalg.matrix_rank(theirs, rtol=1e-5) == p and torch.linalg.matrix_rank(merged, rtol=1e-5) == rank
    assert torch.allclose(values[:rank], values[0].expand(rank), rtol=1e-5)
    u, _, vh = torch.linalg.svd(sum(deltas).double(), full_matrices=False)
    inside = u[:, :rank] @ u[:, :rank].T @ theirs @ vh[:rank].T @ vh[:rank]
    assert rel(merged, inside * p / rank) < 1e-4
    # Iso-CTS: every output direction lies in the adapters' spaces, one flat value
    merged = combine("iso_cts", deltas).double()
    values = torch.linalg.svdvals(merged)
    assert torch.linalg.matrix_rank(merged, rtol=1e-5) == rank
    assert torch.allclose(values[:rank], values[0].expand(rank), rtol=1e-5)
    assert rel(u[:, :rank] @ u[:, :rank].T @ merged @ vh[:rank].T @ vh[:rank], merged) < 1e-5


def test_zero_and_weightless_deltas():
    deltas = lora_deltas(20, 16)
    for name in NEW:
        assert torch.equal(combine(name, [torch.zeros(20, 16)] * 3), torch.zeros(20, 16)), name
    # a weight of 0 removes that adapter's directions (its delta is 0 before any SVD); T stays 3
    two = [deltas[0], deltas[2]]
    assert rel(combine("iso_c", deltas, [1.0, 0.0, 1.0]), combine("iso_c", two, [1.0, 1.0])) < 1e-5
    assert rel(combine("tsv", deltas, [1.0, 0.0, 1.0]), combine("tsv", two, [1.0, 1.0], task_fraction=1 / 3)) < 1e-5


# ---------------------------------------------------------------- the command line and the files


REFUSED = {
    "alpha not positive": (["--method", "iso_c", "--param", "alpha=-1"], "params.alpha: -1 is not in (0, inf)"),
    "alpha not a number": (["--method", "tsv", "--param", "alpha=big"], "params.alpha: 'big' is not a finite number"),
    "task_fraction above 1/T": (["--method", "tsv", "--param", "task_fraction=0.5"],
                                "params.task_fraction: 0.5 is not in (0, 0.333333]"),
    "common_fraction above 1": (["--method", "iso_cts", "--param", "common_fraction=1.5"],
                                "params.common_fraction: 1.5 is not in [0, 1]"),
    "unknown key": (["--method", "iso_c", "--param", "common_fraction=0.5"],
                    "params.common_fraction: not a hyper-parameter of this method (its hyper-parameters: alpha)"),
    "params for linear": (["--method", "linear", "--param", "alpha=2"],
                          "params: method linear takes no hyper-parameters"),
    "knots merge unknown": (["--method", "knots", "--density", "0.5", "--param", "merge=mean"],
                            "params.merge: 'mean' is not one of ties, linear"),
    "knots ties without density": (["--method", "knots"], "density: method knots needs a density"),
    "knots linear with density": (["--method", "knots", "--param", "merge=linear", "--density", "0.5"],
                                  "density: method knots with merge linear keeps every entry"),
    "param not key=value": (["--method", "iso_c", "--param", "alpha"], "--param 'alpha': expected KEY=VALUE"),
    # ranks 4 + 8 + 4 = 16 for 3 tasks: 0.99 leaves no direction to any task
    "iso_cts needs more rank": (["--method", "iso_cts", "--param", "common_fraction=0.99"],
                                "params.common_fraction: 0.99 leaves no task-specific direction: the adapters' "
                                "summed rank is 16 (ranks 4+8+4) for 3 tasks"),
    "tsv keeps nothing": (["--method", "tsv", "--param", "task_fraction=0.01"],
                          "params.task_fraction: 0.01 of a 64-wide module keeps no singular direction per task"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_hyper_parameters_are_one_error_naming_the_key(adapter_paths, tmp_path, case):
    args, needle = REFUSED[case]
    assert_refused(merge_cli(*adapter_paths, *args, "--out", tmp_path / "out"), needle, tmp_path / "out")


def test_recipe_key_params_and_the_resolved_config(adapter_paths, tmp_path):
    recipe = tmp_path / "merge.yaml"
    recipe.write_text(yaml.safe_dump({"adapters": adapter_paths, "method": "iso_cts", "params": {"alpha": 0.5},
                                      "out": str(tmp_path / "cts")}))
    result = CliRunner().invoke(cli, ["merge", "recipe", str(recipe), "--set", "params.common_fraction=0.5"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "cts" / "merge_config.yaml").read_text())
    assert config["params"] == {"alpha": 0.5, "common_fraction": 0.5}
    manifest = json.loads((tmp_path / "cts" / "merge_manifest.json").read_text())
    assert manifest["params"] == {"alpha": 0.5, "common_fraction": 0.5}
    result = CliRunner().invoke(cli, ["merge", "recipe", str(recipe), "--set", "params.alpha=0"])
    assert result.exit_code == 2 and "params.alpha: 0 is not in (0, inf)" in result.output
    # methods without hyper-parameters write no params key: earlier merges keep their fingerprint
    assert merge_cli(*adapter_paths, "--method", "linear", "--out", tmp_path / "lin").exit_code == 0
    assert "params" not in yaml.safe_load((tmp_path / "lin" / "merge_config.yaml").read_text())
    assert "params" not in json.loads((tmp_path / "lin" / "merge_manifest.json").read_text())


@pytest.mark.parametrize("method, extra", [("tsv", []), ("iso_c", ["--param", "alpha=1.5"]), ("iso_cts", []),
                                           ("knots", ["--density", "0.5"])])
def test_model_and_adapter_outputs(tiny_model, adapter_paths, tmp_path, method, extra):
    """--as model adds the method's delta to the base; --as adapter writes it as one LoRA of
    rank 16 (the summed ranks), which holds a rank-aware merge up to float rounding."""
    weights = ["--weights", "1,0.5,1.5"]
    assert merge_cli(*adapter_paths, "--method", method, *weights, *extra, "--out", tmp_path / "m").exit_code == 0
    result = merge_cli(*adapter_paths, "--method", method, *weights, *extra, "--as", "adapter", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert "relative reconstruction error per module" in result.output
    manifest = json.loads((tmp_path / "a" / "merge_manifest.json").read_text())
    assert manifest["rank"] == 16 and manifest["errors"]["max"] < 1e-5, manifest["errors"]
    base, merged = model_weights(tiny_model), model_weights(tmp_path / "m")
    name = "model.layers.0.self_attn.v_proj.weight"
    deltas = [lora_delta(a, name) for a in adapter_paths]
    params = yaml.safe_load((tmp_path / "m" / "merge_config.yaml").read_text())["params"]
    expected = METHODS[method].combine(deltas, [1.0, 0.5, 1.5], 0.5 if method == "knots" else None, None, params)
    assert rel(merged[name] - base[name], expected) < 1e-4
    assert rel(lora_delta(tmp_path / "a", name), expected) < 1e-4
    untouched = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(merged[untouched], base[untouched])


def test_search_recipe_accepts_the_new_methods_and_a_candidate_is_the_written_merge(adapter_paths, tmp_path):
    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import MergeConfig
    from lf_wrap.merge.run import merged_delta
    from lf_wrap.search.candidates import Candidate, candidate_plan, deltas, sample
    from lf_wrap.search.recipe import SearchRecipe

    recipe = SearchRecipe.model_validate({"eval": "e.yaml", "adapters": [{"path": a} for a in adapter_paths],
                                          "methods": list(NEW)})
    assert recipe.methods == list(NEW)
    drawn = sample(3, 8, seed=0, methods=NEW)
    assert {c.method for c in drawn} <= set(NEW) and all((c.density is None) == (c.method != "knots") for c in drawn)
    plan = check_inputs(MergeConfig(adapters=adapter_paths, method="linear", out=str(tmp_path / "no")))
    candidate = Candidate("iso_cts", (1.0, 0.5, 1.5))
    patched = deltas(plan, candidate)
    name = plan.modules[0]
    written = check_inputs(MergeConfig(adapters=adapter_paths, method="iso_cts", weights=[1.0, 0.5, 1.5],
                                       out=str(tmp_path / "no")))
    assert torch.equal(patched[name], merged_delta(written, name))
    assert candidate_plan(plan, candidate).config.params == {"alpha": 1.0, "common_fraction": 0.8}


# ---------------------------------------------------------------- a patched engine serves the written merge

ENGINE_CANDIDATES = {"tsv": ((1.0, 0.5, 1.5), None), "iso_c": ((1.0, 1.0, 1.0), None),
                     "iso_cts": ((1.5, 1.0, 0.5), None), "knots": ((1.0, 1.0, 1.0), 0.5)}


@pytest.fixture(scope="module")
def written_tokens(tiny_model, adapter_paths, short_prompts, tmp_path_factory):
    """Greedy tokens of the base and of each method's `merge adapters --as model` output, each
    served alone (one vLLM engine at a time in a process: these run before the patched one)."""
    from helpers.engine import served_alone

    folder = tmp_path_factory.mktemp("svd-merged")
    tokens = {"base": served_alone(tiny_model, short_prompts)}
    for method, (weights, density) in ENGINE_CANDIDATES.items():
        args = ["--method", method, "--weights", ",".join(map(str, weights))]
        args += ["--density", str(density)] if density is not None else []
        result = merge_cli(*adapter_paths, *args, "--out", folder / method)
        assert result.exit_code == 0, result.output
        tokens[method] = served_alone(folder / method, short_prompts)
    return tokens


@pytest.fixture(scope="module")
def patched_engine(tiny_model, merge_plan, written_tokens):
    """One engine on the base with a weight patcher, shared by the four methods."""
    from helpers.engine import engine_spec
    from lf_wrap.serving.engine import Engine
    from lf_wrap.serving.patching import WeightPatcher

    engine = Engine(engine_spec(tiny_model))
    try:
        yield engine, WeightPatcher(engine, merge_plan.modules), merge_plan
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.parametrize("method", list(ENGINE_CANDIDATES))
def test_patched_engine_generates_what_the_written_merge_generates(method, patched_engine, written_tokens,
                                                                  short_prompts):
    """The search's candidate for each new method, patched into a running engine, gives the
    same greedy tokens as `lf-wrap merge adapters --method M --as model` served alone."""
    from helpers.engine import engine_greedy
    from lf_wrap.search.candidates import Candidate, deltas

    engine, patcher, plan = patched_engine
    assert engine_greedy(engine, short_prompts) == written_tokens["base"]
    weights, density = ENGINE_CANDIDATES[method]
    patcher.apply(deltas(plan, Candidate(method, weights, density)))
    try:
        assert engine_greedy(engine, short_prompts) == written_tokens[method]
    finally:
        patcher.restore()
    assert written_tokens[method] != written_tokens["base"], f"{method}: the merge does not change the tokens"
