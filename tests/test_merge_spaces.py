"""Merge spaces (full, knots, core; lf_wrap.merge.spaces) and CART, checked against the reference
definitions written out here (/work/shared/references/merge-spaces-core.md): the core matrices
built from plain SVDs of the stacked factors, TSV-M and CART and the isotropic step as formulas.

What a user notices: core + linear is the model full linear writes; core + TSV-M is the paper's
TSV-M on the core matrices; `--as adapter` in core space is exact (its delta is `--as model`'s);
adapters of ranks 4/8/4 merge without padding, the same with one or two threads and under a 1e-7
change of the inputs; a space a method cannot run in is one `Error:` line, exit 2, nothing written."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from click.testing import CliRunner

from lf_wrap.cli import cli
from lf_wrap.merge.methods import METHODS
from lf_wrap.merge.methods.core import merge_in_core
from helpers.cli import assert_refused, merge_adapters as merge_cli
from helpers.adapters import lora_delta, make_adapter, model_weights

WEIGHTED = ("linear", "ties", "dare_linear", "dare_ties", "tsv", "iso_c", "iso_cts", "cart")
MODULE = "model.layers.0.self_attn.v_proj.weight"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def factors(m: int, n: int, ranks=(4, 8, 4), seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A_i, B_i) pairs in float32, LoRA-shaped."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(r, n, generator=g), 0.1 * torch.randn(m, r, generator=g)) for r in ranks]


def bound(name: str, weights, density=None, **params):
    """The method with its settings bound, as lf_wrap.merge.spaces binds it (one seed per call)."""
    method = METHODS[name]
    density = density if density is not None or not method.density else 0.5
    return lambda items: method.combine(items, weights, density,
                                        torch.Generator().manual_seed(7) if method.seeded else None, params)


def in_core(name: str, pairs, scalings, weights, isotropize=False, **params) -> torch.Tensor:
    a_mat, b_mat = merge_in_core(pairs, scalings, weights, bound(name, weights, **params), isotropize)
    return b_mat @ a_mat


# ---------------------------------------------------------------- the reference formulas, written out


def reference_core(pairs, scalings):
    """U_ref, V_ref and M_i from plain SVDs of B_stack (scaling folded) and A_stack, float64."""
    b_stack = torch.cat([s * b.double() for (_, b), s in zip(pairs, scalings)], dim=1)
    a_stack = torch.cat([a.double() for a, _ in pairs], dim=0)
    u_ref = torch.linalg.svd(b_stack, full_matrices=False)[0]
    v_ref = torch.linalg.svd(a_stack, full_matrices=False)[2].T
    return u_ref, v_ref, [u_ref.T @ (s * b.double() @ a.double()) @ v_ref for (a, b), s in zip(pairs, scalings)]


def polar(x):
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def tsv_m(tasks, k):
    """TSV-M: each task's top-k triplets, the stacked singular vectors made orthonormal."""
    svds = [torch.linalg.svd(t, full_matrices=False) for t in tasks]
    u = torch.cat([u[:, :k] for u, _, _ in svds], dim=1)
    s = torch.cat([s[:k] for _, s, _ in svds])
    vh = torch.cat([vh[:k] for _, _, vh in svds], dim=0)
    return polar(u) @ torch.diag(s) @ polar(vh)


def cart_formula(tasks, k_fraction, c):
    mean = sum(tasks) / len(tasks)
    kept = 0
    for task in tasks:
        u, s, vh = torch.linalg.svd(task - mean, full_matrices=False)
        k = math.ceil(s.numel() * k_fraction)
        kept = kept + u[:, :k] @ torch.diag(s[:k]) @ vh[:k]
    return mean + c * kept


def flat_spectrum(x):
    p, s, qh = torch.linalg.svd(x, full_matrices=False)
    return s.mean() * p @ qh


# ---------------------------------------------------------------- the maths against the reference


def test_core_tsv_is_the_reference_tsv_m_on_the_core_matrices():
    pairs, scalings, weights = factors(96, 80, ranks=(8, 8, 8)), [2.0, 0.5, 1.0], [1.0, 0.5, 1.5]
    u_ref, v_ref, cores = reference_core(pairs, scalings)
    expected = u_ref @ tsv_m([w * m for w, m in zip(weights, cores)], k=8) @ v_ref.T     # k = int(R / T) = 8
    assert rel(in_core("tsv", pairs, scalings, weights), expected) < 1e-4
    assert rel(in_core("tsv", pairs, scalings, weights, alpha=0.6), 0.6 * expected) < 1e-4


def test_cart_and_isotropize_are_the_reference_formulas():
    pairs, scalings, weights = factors(40, 30, ranks=(8, 8, 8)), [2.0, 0.5, 1.0], [1.0, 0.5, 1.5]
    deltas = [s * b @ a for (a, b), s in zip(pairs, scalings)]
    tasks = [w * d.double() for w, d in zip(weights, deltas)]
    # full space: p = 30 singular values, ceil(30 x 0.1) = 3 per centred task
    full = METHODS["cart"].combine(deltas, weights, None, None, {"rank_fraction": 0.1, "alpha": 0.3})
    assert rel(full, cart_formula(tasks, 0.1, 0.3)) < 1e-4
    assert rel(METHODS["cart"].combine(deltas, weights, None, None, {}), cart_formula(tasks, 0.04, 0.1)) < 1e-4
    # core space: p = R = 24, the formulas on the core matrices
    u_ref, v_ref, cores = reference_core(pairs, scalings)
    weighted = [w * m for w, m in zip(weights, cores)]
    assert rel(in_core("cart", pairs, scalings, weights, rank_fraction=0.2, alpha=0.3),
               u_ref @ cart_formula(weighted, 0.2, 0.3) @ v_ref.T) < 1e-4
    # isotropize: the merged core matrix's singular values replaced by their mean (full rank here)
    for name, merged in (("linear", sum(weighted)), ("tsv", tsv_m(weighted, 8))):
        got = in_core(name, pairs, scalings, weights, isotropize=True)
        assert rel(got, u_ref @ flat_spectrum(merged) @ v_ref.T) < 1e-4, name


def test_linear_methods_give_the_full_space_result_and_knots_space_holds_knots():
    pairs, scalings, weights = factors(64, 48), [2.0, 1.0, 0.5], [1.0, 0.5, 1.5]
    deltas = [s * b @ a for (a, b), s in zip(pairs, scalings)]
    linear = sum(w * d for w, d in zip(weights, deltas))
    assert rel(in_core("linear", pairs, scalings, weights), linear) < 1e-5
    # Iso-C is orthogonally equivariant and rank-aware: the same in every space
    iso_full = METHODS["iso_c"].combine(deltas, weights, None, None, {})
    assert rel(in_core("iso_c", pairs, scalings, weights), iso_full) < 1e-5
    # method knots is KnOTS space with TIES inside (the same at every weight 1)
    from lf_wrap.merge.methods.knots import in_knots_space

    ones = [1.0, 1.0, 1.0]
    knots = METHODS["knots"].combine(deltas, ones, 0.5, None, {})
    assert rel(in_knots_space(deltas, bound("ties", ones, density=0.5)), knots) < 1e-5
    assert rel(in_knots_space(deltas, bound("linear", weights)), linear) < 1e-5


@pytest.mark.parametrize("duplicate", [False, True], ids=["ranks 4/8/4", "an adapter given twice"])
def test_core_merge_is_deterministic_across_threads_and_tiny_changes(duplicate):
    """Ranks 4/8/4 (R = 16, no padding); given twice, the stacks are rank-deficient and the SVD's
    null-space vectors arbitrary: the dropped reference directions keep the merge defined."""
    pairs = factors(512, 384)
    if duplicate:
        pairs = [pairs[0], pairs[1], pairs[0]]
    scalings, weights = [2.0, 1.0, 0.5], [1.0, 0.5, 1.5]
    g = torch.Generator().manual_seed(1)
    nudged = [(a * (1 + 1e-7 * (2 * torch.rand(a.shape, generator=g) - 1)), b) for a, b in pairs]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = {name: in_core(name, pairs, scalings, weights) for name in WEIGHTED}
        one["isotropize"] = in_core("tsv", pairs, scalings, weights, isotropize=True)
        torch.set_num_threads(2)
        two = {name: in_core(name, pairs, scalings, weights) for name in WEIGHTED}
        two["isotropize"] = in_core("tsv", pairs, scalings, weights, isotropize=True)
        moved = {name: in_core(name, nudged, scalings, weights) for name in WEIGHTED}
        moved["isotropize"] = in_core("tsv", nudged, scalings, weights, isotropize=True)
    finally:
        torch.set_num_threads(threads)
    assert {n: m.shape for n, m in one.items()} == {n: (512, 384) for n in one}
    threads_moved = {name: rel(two[name], one[name]) for name in one}
    input_moved = {name: rel(moved[name], one[name]) for name in one}
    print("1 vs 2 threads:", {k: f"{v:.1e}" for k, v in threads_moved.items()})
    print("1e-7 nudge:", {k: f"{v:.1e}" for k, v in input_moved.items()})
    assert max(threads_moved.values()) < 1e-5
    # ties/dare trim by magnitude: a nudge may swap two near-equal entries at the cut; the rest move ~1e-7
    assert max(v for k, v in input_moved.items() if "ties" not in k and "dare" not in k) < 1e-5


def test_tsv_with_an_adapter_given_twice_is_defined_in_full_space_too():
    """The same adapter twice makes TSV-M's stacked singular vectors dependent: the polar factor
    keeps only their non-zero singular values (before, a 1e-7 change moved the merge by its size)."""
    pairs = factors(96, 80)
    deltas = [b @ a for a, b in (pairs[0], pairs[1], pairs[0])]
    g = torch.Generator().manual_seed(2)
    nudged = [d * (1 + 1e-7 * (2 * torch.rand(d.shape, generator=g) - 1)) for d in deltas]
    tsv = METHODS["tsv"].combine
    assert rel(tsv(nudged, [1.0] * 3, None, None, {}), tsv(deltas, [1.0] * 3, None, None, {})) < 1e-5


# ---------------------------------------------------------------- the command line, on real PEFT adapters


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    """Ranks 4/8/4 with different scalings (one rsLoRA) on q_proj and v_proj."""
    folder = tmp_path_factory.mktemp("space-adapters")
    specs = [(4, 8, False), (8, 4, True), (4, 4, False)]
    return [str(make_adapter(tiny_model, folder / f"a{i}", r, alpha, rslora, seed=i))
            for i, (r, alpha, rslora) in enumerate(specs)]


def test_core_linear_writes_full_linear_s_model(tiny_model, adapters, tmp_path):
    weights = ["--weights", "1,0.5,1.5"]
    assert merge_cli(*adapters, "--method", "linear", *weights, "--out", tmp_path / "full").exit_code == 0
    result = merge_cli(*adapters, "--method", "linear", "--space", "core", *weights, "--out", tmp_path / "core")
    assert result.exit_code == 0, result.output
    base, full, core = (model_weights(p) for p in (tiny_model, tmp_path / "full", tmp_path / "core"))
    for name in (MODULE, "model.layers.1.self_attn.q_proj.weight"):
        assert rel(core[name] - base[name], full[name] - base[name]) < 1e-5
    # full space records nothing new (earlier merges keep their fingerprint); core records its space
    assert "space" not in yaml.safe_load((tmp_path / "full" / "merge_config.yaml").read_text())
    assert yaml.safe_load((tmp_path / "core" / "merge_config.yaml").read_text())["space"] == "core"
    manifests = [json.loads((tmp_path / f / "merge_manifest.json").read_text()) for f in ("full", "core")]
    assert "space" not in manifests[0] and manifests[1]["space"] == "core"
    assert manifests[0]["fingerprint"] != manifests[1]["fingerprint"]


@pytest.mark.parametrize("method, extra", [(m, ["--density", "0.5"] if METHODS[m].density else []) for m in WEIGHTED]
                         + [("tsv", ["--isotropize"])])
def test_core_adapter_is_exact_for_every_method(tiny_model, adapters, tmp_path, method, extra):
    """--as adapter in core space: one LoRA of rank 4 + 8 + 4 = 16, whose delta is --as model's."""
    args = [*adapters, "--method", method, "--space", "core", "--weights", "1,0.5,1.5", *extra]
    assert merge_cli(*args, "--out", tmp_path / "m").exit_code == 0
    result = merge_cli(*args, "--as", "adapter", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "a" / "merge_manifest.json").read_text())
    assert manifest["rank"] == 16 and manifest["space"] == "core" and manifest["errors"]["max"] < 1e-6
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["r"] == 16
    base, merged = model_weights(tiny_model), model_weights(tmp_path / "m")
    for name in (MODULE, "model.layers.1.self_attn.q_proj.weight"):
        assert rel(lora_delta(tmp_path / "a", name), merged[name] - base[name]) < 1e-5, name


def test_a_space_changes_what_the_rank_check_measures(adapters, tmp_path):
    """TSV-M keeps int(p x task_fraction) per task: p = 64 in full space, R = 16 in core space."""
    args = [*adapters, "--method", "tsv", "--param", "task_fraction=0.05"]
    assert merge_cli(*args, "--out", tmp_path / "full").exit_code == 0
    result = merge_cli(*args, "--space", "core", "--out", tmp_path / "core")
    assert result.exit_code == 2
    assert "Error: params.task_fraction: 0.05 of a 16-wide module keeps no singular direction" in result.output


REFUSED = {
    "isotropize outside core": (["--method", "tsv", "--isotropize"],
                                "isotropize: only in core space (space: core); this merge runs in full space"),
    "sum in core": (["--method", "sum", "--space", "core"], "space: method sum runs only in full space, not in core"),
    "knots in knots space": (["--method", "knots", "--density", "0.5", "--space", "knots"],
                             "space: method knots runs only in full space, not in knots (it is itself KnOTS space"),
    "rank in core": (["--method", "tsv", "--space", "core", "--as", "adapter", "--rank", "8"],
                     "rank: core space writes its exact adapter"),
    "unknown space": (["--method", "tsv", "--space", "svd"], "Invalid value for '--space'"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_space_a_merge_cannot_use_is_one_error(adapters, tmp_path, case):
    args, needle = REFUSED[case]
    assert_refused(merge_cli(*adapters, *args, "--out", tmp_path / "out"), needle, tmp_path / "out")


def test_recipe_and_validate_name_the_space_key(tiny_model, adapters, tmp_path):
    recipe = tmp_path / "merge.yaml"
    recipe.write_text(yaml.safe_dump({"adapters": adapters, "method": "tsv", "space": "kernel",
                                      "out": str(tmp_path / "out")}))
    for command in (["validate", str(recipe)], ["merge", "recipe", str(recipe)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and f"{recipe}" in errors[0] and "space" in errors[0], result.output
    recipe.write_text(yaml.safe_dump({"adapters": adapters, "method": "linear", "isotropize": True,
                                      "out": str(tmp_path / "out")}))
    result = CliRunner().invoke(cli, ["validate", str(recipe)])
    assert result.exit_code == 2 and "isotropize: only in core space" in result.output, result.output
    # adapters on different modules: core space builds one basis per module from all of them
    other = make_adapter(tiny_model, tmp_path / "q-only", 4, 8, targets=("q_proj",))
    result = merge_cli(adapters[0], other, "--method", "tsv", "--space", "core", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "Error: space: core builds one basis" in result.output, result.output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the search


def test_search_candidates_carry_their_space(adapters, tmp_path):
    import optuna

    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import MergeConfig
    from lf_wrap.merge.run import merged_delta
    from lf_wrap.search import optimiser
    from lf_wrap.search.candidates import Candidate, deltas
    from lf_wrap.search.folder import search_space
    from lf_wrap.search.recipe import SearchRecipe
    from lf_wrap.search.scorer import as_dict, from_dict

    entries = [{"path": a} for a in adapters]
    plain = SearchRecipe.model_validate({"eval": "e.yaml", "adapters": entries})
    assert "spaces" not in search_space(plain)          # earlier searches keep their space
    recipe = SearchRecipe.model_validate({"eval": "e.yaml", "adapters": entries, "methods": ["tsv", "knots"],
                                          "spaces": ["full", "core"]})
    assert search_space(recipe)["spaces"] == ["full", "core"]
    trial = optuna.trial.FixedTrial({"method": "tsv", "space": "core", "weight.a": 1.0, "weight.b": 0.5,
                                     "weight.c": 1.5})
    candidate = optimiser.suggest(trial, recipe, ["a", "b", "c"])
    assert candidate == Candidate("tsv", (1.0, 0.5, 1.5), space="core")
    assert candidate.label() == "tsv[1,0.5,1.5] space core" and from_dict(as_dict(candidate)) == candidate
    assert Candidate("tsv", (1.0, 0.5, 1.5)).label() == "tsv[1,0.5,1.5]"          # full space: as before
    knots = optimiser.suggest(optuna.trial.FixedTrial({"method": "knots", "density": 0.5, "weight.a": 1.0,
                                                   "weight.b": 1.0, "weight.c": 1.0}), recipe, ["a", "b", "c"])
    assert knots.space == "full"                           # knots runs in full space only
    with pytest.raises(ValueError, match="spaces: method knots runs only in full space"):
        SearchRecipe.model_validate({"eval": "e.yaml", "adapters": entries, "methods": ["knots"], "spaces": ["core"]})
    # the patched engine's delta is the written core merge's
    plan = check_inputs(MergeConfig(adapters=adapters, method="linear", out=str(tmp_path / "no")))
    written = check_inputs(MergeConfig(adapters=adapters, method="tsv", space="core", weights=[1.0, 0.5, 1.5],
                                       out=str(tmp_path / "no")))
    for name in plan.modules[:2]:
        assert torch.equal(deltas(plan, candidate)[name], merged_delta(written, name))


def test_search_direct_form_takes_spaces_and_refuses_one_a_method_cannot_use(adapters, tmp_path):
    result = CliRunner().invoke(cli, ["merge", "search", *adapters, "--eval", str(tmp_path / "eval.yaml"),
                                      "--methods", "knots", "--spaces", "core", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "spaces: method knots runs only in full space" in errors[0], result.output
    assert not (tmp_path / "s").exists()
