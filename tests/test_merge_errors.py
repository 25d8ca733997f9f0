"""Bad input to `lf-wrap merge`: one clear message, non-zero exit, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import run_lf_wrap
from helpers.adapters import make_adapter, make_adapters
from lf_wrap.cli import cli


@pytest.fixture(scope="module")
def bad(tiny_model, tmp_path_factory):
    """The three good adapters, and one broken variant of them per check."""
    folder = tmp_path_factory.mktemp("bad-adapters")
    found = make_adapters(tiny_model, folder)
    found["q_only"] = make_adapter(tiny_model, folder / "q_only", 4, 8, targets=("q_proj",))
    for name, edit in {"dora": {"use_dora": True}, "other_base": {"base_model_name_or_path": "someone/else"},
                       "no_base": {"base_model_name_or_path": None}, "bias": {"bias": "all"},
                       "pissa": {"init_lora_weights": "pissa_niter_4"}, "nan_alpha": {"lora_alpha": float("nan")},
                       "inf_alpha": {"lora_alpha": float("inf")}, "nan_rank": {"r": float("nan")},
                       "bool_rank": {"r": True}}.items():
        shutil.copytree(found["A"], folder / name)
        config = json.loads((folder / name / "adapter_config.json").read_text())
        config.update(edit)
        (folder / name / "adapter_config.json").write_text(json.dumps(config))
        found[name] = folder / name
    (folder / "no_config").mkdir()
    (folder / "no_weights").mkdir()
    shutil.copy(found["A"] / "adapter_config.json", folder / "no_weights")
    found["no_config"], found["no_weights"] = folder / "no_config", folder / "no_weights"
    shutil.copytree(found["A"], folder / "garbage_bin")        # an old-style .bin that is no pickle
    (folder / "garbage_bin" / "adapter_model.safetensors").unlink()
    (folder / "garbage_bin" / "adapter_model.bin").write_bytes(bytes(range(7, 107)))
    found["garbage_bin"] = folder / "garbage_bin"
    found["emb"] = make_adapter(tiny_model, folder / "emb", 4, 8, targets=("embed_tokens",))
    found["index_5"] = shutil.copytree(tiny_model, folder / "index_5")    # a weight_map that is no mapping
    (found["index_5"] / "model.safetensors.index.json").write_text('{"weight_map": 5}')
    found["huge_header"] = shutil.copytree(tiny_model, folder / "huge_header")   # header length 10^12
    weights = found["huge_header"] / "model.safetensors"
    weights.write_bytes((10 ** 12).to_bytes(8, "little") + weights.read_bytes()[8:])
    from lf_wrap.demo.tiny_model import build_tiny_model

    found["small_base"] = build_tiny_model(folder / "small-base", hidden=64, heads=2)
    return found


def refused(tmp_path, args, *needles):
    """Run `lf-wrap merge ...`; it must fail with one message holding every needle, write nothing."""
    out = tmp_path / "out"
    args = [str(a).replace("OUT", str(out)) for a in args]
    result = CliRunner().invoke(cli, ["merge", *args])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre"], "something was written"
    return result.output


@pytest.fixture
def tmp(tmp_path):
    (tmp_path / "pre").mkdir()   # an unrelated folder that must stay alone
    return tmp_path


CASES = {
    "missing adapter folder": (lambda b: [b["A"].parent / "nope", b["B"], "--out", "OUT"], ["nope", "no such folder"]),
    "no adapter_config.json": (lambda b: [b["no_config"], b["B"], "--out", "OUT"], ["no_config", "adapter_config.json"]),
    "no weights": (lambda b: [b["no_weights"], b["B"], "--out", "OUT"], ["no_weights", "adapter_model.safetensors"]),
    "DoRA adapter": (lambda b: [b["dora"], b["B"], "--out", "OUT"], ["use_dora", "DoRA"]),
    "trained bias": (lambda b: [b["bias"], b["B"], "--out", "OUT"], ["bias"]),
    "PiSSA adapter": (lambda b: [b["pissa"], b["B"], "--out", "OUT"], ["pissa_niter_4", "modified base"]),
    "different base models": (lambda b: [b["other_base"], b["B"], "--out", "OUT"], ["someone/else", "--base"]),
    "no base named": (lambda b: [b["no_base"], b["B"], "--out", "OUT"], ["base_model_name_or_path", "--base"]),
    "missing base": (lambda b: [b["A"], "--base", b["A"].parent / "no-model", "--out", "OUT"], ["no-model"]),
    "base of another shape": (lambda b: [b["A"], b["B"], "--base", b["small_base"], "--out", "OUT"],
                              ["q_proj", "wrong base model"]),
    "different target modules": (lambda b: [b["A"], b["q_only"], "--out", "OUT"], ["target different modules"]),
    "weights count": (lambda b: [b["A"], b["B"], b["C"], "--method", "linear", "--weights", "1,1", "--out", "OUT"],
                      ["2 weights for 3 adapters"]),
    "weights not numbers": (lambda b: [b["A"], b["B"], "--method", "linear", "--weights", "a,b", "--out", "OUT"],
                            ["--weights", "numbers"]),
    "weights with sum": (lambda b: [b["A"], b["B"], "--weights", "1,1", "--out", "OUT"], ["method linear"]),
    "density missing": (lambda b: [b["A"], b["B"], "--method", "ties", "--out", "OUT"], ["density", "(0, 1]"]),
    "density zero": (lambda b: [b["A"], b["B"], "--method", "dare_ties", "--density", "0", "--out", "OUT"],
                     ["density", "not in (0, 1]"]),
    "density above one": (lambda b: [b["A"], b["B"], "--method", "ties", "--density", "1.5", "--out", "OUT"],
                          ["1.5", "not in (0, 1]"]),
    "density with linear": (lambda b: [b["A"], b["B"], "--method", "linear", "--density", "0.5", "--out", "OUT"],
                            ["density", "linear"]),
    "seed without dare": (lambda b: [b["A"], b["B"], "--method", "ties", "--density", "0.5", "--seed", "1",
                                     "--out", "OUT"], ["seed", "dare"]),
    "rank for an exact adapter": (lambda b: [b["A"], b["B"], "--method", "linear", "--as", "adapter", "--rank", "4",
                                             "--out", "OUT"], ["rank", "exact"]),
    "rank too large": (lambda b: [b["A"], b["B"], "--method", "ties", "--density", "0.5", "--as", "adapter",
                                  "--rank", "500", "--out", "OUT"], ["rank", "500", "128"]),
    "all weights zero": (lambda b: [b["A"], b["B"], "--method", "linear", "--weights", "0,0", "--as", "adapter",
                                    "--out", "OUT"], ["all weights are 0"]),
    "unknown method": (lambda b: [b["A"], b["B"], "--method", "average", "--out", "OUT"], ["average"]),
    # non-finite adapter settings (they merged into a model full of NaN), damaged weight files
    "lora_alpha NaN": (lambda b: [b["nan_alpha"], b["B"], "--out", "OUT"],
                       ["nan_alpha/adapter_config.json", "lora_alpha a finite number", "lora_alpha=nan"]),
    "lora_alpha inf": (lambda b: [b["inf_alpha"], b["B"], "--out", "OUT"], ["inf_alpha", "lora_alpha=inf"]),
    "r NaN": (lambda b: [b["nan_rank"], b["B"], "--out", "OUT"], ["nan_rank", "r must be a positive integer"]),
    "r a boolean": (lambda b: [b["bool_rank"], b["B"], "--out", "OUT"], ["bool_rank", "r=True"]),
    "embedding LoRA": (lambda b: [b["emb"], b["emb"], "--method", "linear", "--out", "OUT"],
                       ["emb: an embedding LoRA", "linear layers only"]),
    "garbage adapter_model.bin": (lambda b: [b["garbage_bin"], "--method", "linear", "--out", "OUT"],
                                  ["garbage_bin/adapter_model.bin: cannot read"]),
    "index weight_map a number": (lambda b: [b["A"], "--method", "linear", "--base", b["index_5"], "--out", "OUT"],
                                  ["index_5/model.safetensors.index.json: weight_map must map"]),
    "safetensors header length 10^12": (
        lambda b: [b["A"], "--method", "linear", "--base", b["huge_header"], "--out", "OUT"],
        ["huge_header/model.safetensors: not a safetensors file", "1000000000000 bytes"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_merge_input_is_refused(bad, tmp, case):
    build, needles = CASES[case]
    print(refused(tmp, ["adapters", *build(bad)], *needles))


def test_existing_output_needs_force(bad, tmp):
    out = tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["merge", "adapters", str(bad["A"]), "--method", "linear", "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.output and "--force" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp.iterdir()) == ["out", "pre"]
    # --force replaces only lf-wrap's own earlier merge output, never a folder of the user's.
    result = CliRunner().invoke(cli, ["merge", "adapters", str(bad["A"]), "--method", "linear", "--out", str(out),
                                      "--force"])
    assert result.exit_code == 2 and "is not an lf-wrap merge output" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("body, overrides, needles", [
    ("adapters: [a]\nout: o\nmethod: average\n", [], ["method", "average"]),
    ("adapters: [a]\nout: o\nweight: [1]\n", [], ["r.yaml:3: weight: not a key of the recipe", "did you mean 'weights'?", "its keys: adapters, base"]),
    ("adapters: [a\nout: o\n", [], ["not valid YAML"]),
    ("- a\n- b\n", [], ["YAML mapping"]),
    ("adapters: [a]\nout: o\n", ["density"], ["--set", "key=value"]),
    ("adapters: [a]\nout: o\nmethod: ties\n", ["density=2"], ["density", "not in (0, 1]"]),
    # a weight that is no number: YAML's true, a quoted "0.5" (read as 1.0 and 0.5 before)
    ("adapters: [a, b]\nout: o\nmethod: linear\nweights: [true, 0.5]\n", [], ["weights: true (adapter 1)"]),
    ("adapters: [a, b]\nout: o\nmethod: linear\n", ["weights=[1, '0.5']"], ['weights: "0.5" (adapter 2)']),
    ("adapters: [a]\nout: o\nmethod: linear\nweights: [{attention: [1, true]}]\n", [],
     ["weights: true (adapter 1, attention)", "not a number"]),
])
def test_bad_recipe_is_refused(tmp, body, overrides, needles):
    recipe = tmp / "pre" / "r.yaml"
    recipe.write_text(body)
    args = ["recipe", recipe] + [part for o in overrides for part in ("--set", o)]
    message = refused(tmp, args, *needles)
    assert str(recipe) in message or "--set" in message


def test_refusal_from_the_console_script(bad, tmp):
    """The installed `lf-wrap` prints one `Error:` line and exits 2."""
    proc = run_lf_wrap("merge", "adapters", bad["A"].parent / "nope", "--out", tmp / "out")
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: adapter {bad['A'].parent / 'nope'}: no such folder"]
    assert not (tmp / "out").exists()


def test_base_override_warns_about_the_adapters_own_base(bad, tmp, tiny_model):
    """--base wins over an adapter's recorded base, with a warning in the output and the manifest."""
    out = tmp / "out"
    result = CliRunner().invoke(cli, ["merge", "adapters", str(bad["other_base"]), str(bad["B"]), "--method", "linear",
                                      "--base", str(tiny_model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "someone/else" in result.output
    manifest = json.loads((out / "merge_manifest.json").read_text())
    assert manifest["base"]["path"] == str(tiny_model) and "someone/else" in manifest["warnings"][0]


def test_failed_llamafactory_export_leaves_no_output_but_keeps_its_log(bad, tmp):
    """An unknown template fails inside llamafactory-cli: its exit code, no output, the log kept."""
    out = tmp / "out"
    result = CliRunner().invoke(cli, ["merge", "adapters", str(bad["A"]), "--template", "no-such-template",
                                      "--out", str(out)])
    assert result.exit_code != 0 and "llamafactory-cli" in result.output
    kept = tmp / "out.llamafactory_export.failed.log"
    assert "no-such-template" in kept.read_text() and str(kept) in result.output
    assert sorted(p.name for p in tmp.iterdir()) == [kept.name, "pre"]


def test_the_same_adapter_twice_merges_with_a_warning(bad, tmp):
    """Allowed (a weight of 2 spelled twice), but said: more often a typo for another adapter."""
    result = CliRunner().invoke(cli, ["merge", "adapters", str(bad["A"]), str(bad["A"]), "--method", "linear",
                                      "--weights", "1,1", "--as", "adapter", "--out", str(tmp / "out")])
    assert result.exit_code == 0, result.output
    assert f"{bad['A']} is the same adapter as {bad['A']}" in result.output
