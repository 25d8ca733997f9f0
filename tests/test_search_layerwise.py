"""The search's layer-wise weights (`blocks`, `per_kind`) on the 2-layer tiny model: a block-weighted
candidate patched into a running engine generates what `lf-wrap merge recipe` writes for the same
weights; a search with `blocks: 2` runs and its leaderboard shows the best merge's weights per
block; more blocks than the base has layers is one Error before any engine starts."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from conftest import read_json, run_lf_wrap
from helpers.engine import engine_greedy, engine_spec, served_alone
from helpers.search import read_ledger, search_recipe
from lf_wrap.cli import cli
from lf_wrap.search.candidates import Candidate, deltas, thaw

LAYERED = {"linear": Candidate("linear", ((1.0, -0.3), (0.5, 0.8), 0.0)),
           "ties": Candidate("ties", ((1.0, 0.5), (0.5, 1.0), 1.0), density=0.4)}


def test_one_block_keeps_the_parameters_keys_and_space_of_one_weight_per_adapter():
    """blocks 1: `weight.<task>` parameters, `linear[0.5,1]` keys, the same space and csv columns;
    blocks 2: a parameter per block, equal block weights one number, a key that survives the ledger."""
    from optuna.trial import FixedTrial

    from lf_wrap.search.folder import search_space
    from lf_wrap.search.report.panels import weight_columns
    from lf_wrap.search.recipe import SearchRecipe
    from lf_wrap.search.scorer import as_dict, from_dict
    from lf_wrap.search.optimiser import _grid_space, reference_params, suggest

    tasks = ["a", "b"]
    one = SearchRecipe(eval="e.yaml", adapters=[{"path": "x"}, {"path": "y"}])
    assert reference_params(one, tasks)[1] == {"weight.a": 0.5, "weight.b": 0.5}
    candidate = suggest(FixedTrial({"weight.a": 0.5, "weight.b": 1.0}), one, tasks)
    assert candidate.label() == "linear[0.5,1]" and as_dict(candidate)["weights"] == [0.5, 1.0]
    assert set(search_space(one)) == {"methods", "weights", "density", "sampler", "grid", "seed", "objective",
                                      "uncertainty"}
    assert weight_columns(tasks, None) == ["weight_a", "weight_b"]
    two = one.model_copy(update={"blocks": 2, "sampler": "grid"})
    assert list(_grid_space(two, tasks)) == ["weight.a.0", "weight.a.1", "weight.b.0", "weight.b.1"]
    candidate = suggest(FixedTrial({"weight.a.0": 1.0, "weight.a.1": 0.0, "weight.b.0": 0.5, "weight.b.1": 0.5}),
                        two, tasks)
    assert candidate.label() == "linear[1/0,0.5]" and from_dict(as_dict(candidate)) == candidate
    assert search_space(two)["blocks"] == 2
    kinds = one.model_copy(update={"per_kind": True})
    candidate = suggest(FixedTrial({"weight.a.attention": 1.0, "weight.a.mlp": 0.0, "weight.b.attention": 0.5,
                                    "weight.b.mlp": 0.5}), kinds, tasks)
    assert candidate.label() == "linear[attention=1 mlp=0,0.5]"
    assert as_dict(candidate)["weights"] == [{"attention": 1.0, "mlp": 0.0}, 0.5]


@pytest.fixture(scope="module")
def written_tokens(tiny_model, adapter_paths, engine_prompts, tmp_path_factory):
    """Greedy tokens of the base and of each layered candidate written by `lf-wrap merge recipe`
    (as model), each served alone, before the patched engine starts."""
    folder = tmp_path_factory.mktemp("layered-merged")
    tokens = {"base": served_alone(tiny_model, engine_prompts)}
    for key, c in LAYERED.items():
        recipe = folder / f"{key}.yaml"
        recipe.write_text(yaml.safe_dump({"adapters": adapter_paths, "method": c.method, "density": c.density,
                                          "weights": [thaw(w) for w in c.weights], "as": "model",
                                          "out": str(folder / key)}), encoding="utf-8")
        done = CliRunner().invoke(cli, ["merge", "recipe", str(recipe)])
        assert done.exit_code == 0, done.output
        assert read_json(folder / key / "merge_manifest.json")["blocks"]["layers"] == [[0, 0], [1, 1]]
        tokens[key] = served_alone(folder / key, engine_prompts)
        assert tokens[key] != tokens["base"], f"{key}: the merge does not change the tokens"
    return tokens


@pytest.mark.slow
def test_patched_block_weighted_candidates_generate_what_merge_recipe_writes(tiny_model, merge_plan, engine_prompts,
                                                                             written_tokens):
    from lf_wrap.serving.engine import Engine
    from lf_wrap.serving.patching import WeightPatcher

    engine = Engine(engine_spec(tiny_model))
    try:
        patcher = WeightPatcher(engine, merge_plan.modules)
        for key, candidate in LAYERED.items():
            patcher.apply(deltas(merge_plan, candidate))
            assert engine_greedy(engine, engine_prompts) == written_tokens[key], key
        patcher.restore()
        assert engine_greedy(engine, engine_prompts) == written_tokens["base"]
    finally:
        engine.close()


@pytest.mark.slow
def test_a_search_with_two_blocks_shows_the_best_weights_per_block(search_study, tmp_path):
    out = tmp_path / "blocks"
    # A range without 1 and 0.5: no reference merge is asked as a trial, every candidate is sampled.
    path = search_recipe(search_study, out, methods=["linear"], blocks=2, budget=3, round_size=3,
                         weights={"low": 0.05, "high": 1.3, "step": 0.25})
    done = run_lf_wrap("merge", "search", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    manifest = read_json(out / "manifest.json")
    assert manifest["space"]["blocks"] == 2 and "per_kind" not in manifest["space"]
    assert any("/" in entry["key"] for entry in read_ledger(out))          # layered candidates were scored
    board = read_json(out / "leaderboard.json")
    assert board["blocks"] == {"count": 2, "kinds": None, "layers": [[0, 0], [1, 1]]}
    best = board["rows"][0]
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert f"Weights of `{best['label']}` (rank 1) per block of layers" in markdown
    assert "| adapter | layer 0 | layer 1 |" in markdown and "| task_a | " in markdown
    header = (out / "leaderboard.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "weight_task_a_block0" in header and "weight_task_c_block1" in header and "weight_task_a" not in header
    if manifest["final"]["verdict"] == "confirmed":
        merged = out / "best"
    else:            # nothing confirmed on 7 report rows: no best/; the winner written as a user would
        assert not (out / "best").exists()
        merged = tmp_path / "winner"
        given = yaml.safe_load(path.read_text(encoding="utf-8"))
        base = yaml.safe_load(open(given["eval"], encoding="utf-8"))["model_name_or_path"]
        recipe = tmp_path / "winner.yaml"
        recipe.write_text(yaml.safe_dump({"adapters": [a["path"] for a in given["adapters"]], "base": base,
                                          "method": "linear", "weights": best["candidate"]["weights"],
                                          "as": "adapter", "out": str(merged)}), encoding="utf-8")
        written = run_lf_wrap("merge", "recipe", recipe)
        assert written.returncode == 0, written.stderr[-3000:]
    written = yaml.safe_load((merged / "merge_config.yaml").read_text(encoding="utf-8"))
    assert written["weights"] == [best["weights"][t] for t in board["tasks"]]
    if any(isinstance(w, list) for w in written["weights"]):
        assert read_json(merged / "merge_manifest.json")["blocks"]["count"] == 2
    assert (out / "chart.png").stat().st_size > 0
    again = run_lf_wrap("merge", "search", path, "--set", "blocks=1")
    assert again.returncode == 2 and "another search space (blocks)" in again.stderr, again.stderr[-2000:]


@pytest.mark.slow
def test_more_blocks_than_layers_is_one_error_before_any_engine(search_study, tmp_path):
    out = tmp_path / "three"
    path = search_recipe(search_study, out, blocks=3)
    for args in ([path, "--check"], [path], [path, "--set", "per_kind=true"]):
        done = run_lf_wrap("merge", "search", *args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.count("Error:") == 1, done.stderr
        assert "Error: blocks: 3 blocks is more than the base's 2 decoder layers" in done.stderr
        assert "starting" not in done.stdout + done.stderr and not out.exists()
    checked = run_lf_wrap("validate", path)
    assert checked.returncode == 2 and "blocks: 3 blocks is more than" in checked.stdout + checked.stderr
    zero = run_lf_wrap("merge", "search", path, "--set", "blocks=0")
    assert zero.returncode == 2 and zero.stderr.count("Error:") == 1 and "blocks" in zero.stderr
    assert not out.exists()
