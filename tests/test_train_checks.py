"""Checks `lf-wrap train` and `lf-wrap validate` run before anything launches: every layer of
the recipe is type-checked (not only the values that win), every data file parses as
LLaMA-Factory will read it, and a run directory never is, contains or lies inside an input.

Nothing here trains: the checks raise first, and `run_logged` is replaced by a tripwire so
that a check that fails to fire cannot launch llamafactory-cli into a copy of an input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_lf_wrap

from lf_wrap.core.errors import UserError
from lf_wrap.train import run as train_run
from lf_wrap.train.run import plan_training, train

RECIPES = REPO / "recipes"


def tiny_sets(task: str, model: Path, dataset_dir: Path) -> list[str]:
    return [f"model_name_or_path={model}", f"lf_wrap.dataset=tiny_{task}_train", f"lf_wrap.dataset_dir={dataset_dir}"]


def recipe_with(tmp_path: Path, old: str, new: str, task: str = "translate") -> Path:
    text = (RECIPES / f"{task}.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / f"{task}.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.fixture
def no_launch(monkeypatch):
    def launched(*args, **kwargs):
        raise AssertionError("llamafactory-cli was launched; a pre-launch check should have refused")

    monkeypatch.setattr(train_run, "run_logged", launched)


# ---------------------------------------------------------------- every layer's values


def test_smoke_does_not_hide_a_bad_recipe_value(tmp_path, tiny_model, prepared):
    """The smoke set overrides learning_rate, but the recipe's own value is still wrong."""
    recipe = recipe_with(tmp_path, "learning_rate: 5.0e-6", 'learning_rate: "fast"')
    with pytest.raises(UserError, match=rf"{recipe}: learning_rate \(TrainingArguments\) expects float, "
                                        r"got str 'fast'"):
        plan_training(recipe, tiny_sets("translate", tiny_model, prepared), smoke=True)
    # Overridden by --set too: still the recipe's value to fix.
    with pytest.raises(UserError, match=rf"{recipe}: learning_rate .*'fast'"):
        plan_training(recipe, tiny_sets("translate", tiny_model, prepared) + ["learning_rate=1e-4"])


def test_a_bad_smoke_value_is_found_without_smoke(tmp_path, tiny_model, prepared):
    recipe = recipe_with(tmp_path, "    cutoff_len: 128", "    cutoff_len: short")
    with pytest.raises(UserError, match=rf"{recipe} \(lf_wrap.smoke\): cutoff_len .* expects int, got str 'short'"):
        plan_training(recipe, tiny_sets("translate", tiny_model, prepared))


def test_cli_validate_smoke_refuses_the_overridden_value(tmp_path, tiny_model, prepared):
    recipe = recipe_with(tmp_path, "learning_rate: 5.0e-6", 'learning_rate: "fast"')
    sets = [arg for pair in tiny_sets("translate", tiny_model, prepared) for arg in ("--set", pair)]
    done = run_lf_wrap("validate", recipe, "--smoke", *sets, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Error: {recipe}: learning_rate (TrainingArguments) expects float, got str 'fast'" in done.stderr


# ---------------------------------------------------------------- data files


def dataset_copy(tmp_path: Path, prepared: Path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(prepared, folder)
    return folder


def test_a_data_file_that_is_not_json_is_refused(tmp_path, tiny_model, prepared, no_launch):
    folder = dataset_copy(tmp_path, prepared)
    data = folder / "tiny_translate_train.json"
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0].startswith("[") and lines[4].lstrip().startswith('"output": ')
    lines[4] = '    "output": She met a red car,\n'             # a hand edit that forgot the quotes
    data.write_text("".join(lines), encoding="utf-8")
    sets = tiny_sets("translate", tiny_model, folder)
    with pytest.raises(UserError, match=rf"dataset 'tiny_translate_train': {data}:5: not valid JSON"):
        plan_training(RECIPES / "translate.yaml", sets, smoke=True)
    with pytest.raises(UserError, match=rf"{data}:5: not valid JSON"):
        train(RECIPES / "translate.yaml", sets, run_dir=tmp_path / "run", smoke=True)
    assert not (tmp_path / "run").exists()
    done = run_lf_wrap("validate", RECIPES / "translate.yaml", "--smoke",
                       *[arg for pair in sets for arg in ("--set", pair)], cwd=tmp_path)
    assert done.returncode == 2 and f"Error: {RECIPES / 'translate.yaml'} (--set lf_wrap.dataset): " \
                                   f"dataset 'tiny_translate_train': {data}:5: not valid JSON" in done.stderr


def test_jsonl_data_files_are_read_line_by_line(tmp_path, tiny_model, prepared):
    """JSON Lines (one object per line) is what datasets' json loader tries first; a bad line
    is named by its number, and an eval_dataset's file is checked the same way."""
    folder = dataset_copy(tmp_path, prepared)
    rows = json.loads((prepared / "tiny_translate_train.json").read_text(encoding="utf-8"))
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    info["lines"] = {**info["tiny_translate_train"], "file_name": "lines.jsonl"}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    (folder / "lines.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sets = tiny_sets("translate", tiny_model, folder)[:1] + ["lf_wrap.dataset=lines", f"lf_wrap.dataset_dir={folder}"]
    assert list(plan_training(RECIPES / "translate.yaml", sets, smoke=True).datasets) == ["lines"]

    lines[2] = lines[2][:-1]                                     # a truncated row on line 3
    (folder / "lines.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"{folder / 'lines.jsonl'}:3: not valid JSON"):
        plan_training(RECIPES / "translate.yaml", sets, smoke=True)
    eval_sets = tiny_sets("translate", tiny_model, folder) + ["eval_dataset=lines"]
    with pytest.raises(UserError, match=rf"{folder / 'lines.jsonl'}:3: not valid JSON"):
        plan_training(RECIPES / "translate.yaml", eval_sets, smoke=True)

    (folder / "lines.jsonl").write_text("\n".join(lines[:2] + ['["not", "an object"]']) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"{folder / 'lines.jsonl'}:3: a row must be a JSON object"):
        plan_training(RECIPES / "translate.yaml", sets, smoke=True)


# ---------------------------------------------------------------- the run directory and the inputs


def test_run_dir_inside_the_model_is_refused_even_with_force(tmp_path, tiny_model, prepared, no_launch):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    run_dir = model / "runs" / "x"
    with pytest.raises(UserError, match=rf"run directory {run_dir} lies inside the model "
                                        rf"\(model_name_or_path\) {model}"):
        train(RECIPES / "translate.yaml", tiny_sets("translate", model, prepared), run_dir=run_dir, smoke=True,
              force=True)
    assert not (model / "runs").exists()


def test_run_dir_that_is_or_contains_the_dataset_folder_is_refused(tmp_path, tiny_model, prepared, no_launch):
    folder = dataset_copy(tmp_path, prepared)
    sets = tiny_sets("translate", tiny_model, folder)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(UserError, match=rf"run directory {folder} is the dataset folder "
                                        rf"\(lf_wrap.dataset_dir\) {folder}"):
        train(RECIPES / "translate.yaml", sets, run_dir=folder, smoke=True, force=True)
    with pytest.raises(UserError, match=rf"run directory {tmp_path} contains the dataset folder "
                                        rf"\(lf_wrap.dataset_dir\) {folder}"):
        train(RECIPES / "translate.yaml", sets, run_dir=tmp_path, smoke=True, force=True)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_run_dir_that_holds_an_adapter_named_in_the_args_is_refused(tmp_path, tiny_model, prepared, no_launch,
                                                                     monkeypatch):
    """Any existing path an argument names is an input (here a reference model's adapters),
    whichever key names it; a relative --run-dir is compared by its resolved path."""
    monkeypatch.chdir(tmp_path)
    adapters = [tmp_path / "adapters" / "a", tmp_path / "adapters" / "b"]
    for folder in adapters:
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
    sets = tiny_sets("translate", tiny_model, prepared) + [f"ref_model_adapters={adapters[0]},{adapters[1]}"]
    with pytest.raises(UserError, match=r"run directory adapters contains `ref_model_adapters` "
                                        rf"{adapters[0]}"):
        train(RECIPES / "translate.yaml", sets, run_dir=Path("adapters"), smoke=True, force=True)
    with pytest.raises(UserError, match=rf"run directory adapters/b is `ref_model_adapters` {adapters[1]}"):
        train(RECIPES / "translate.yaml", sets, run_dir=Path("adapters/b"), smoke=True)
    assert sorted(p.name for p in adapters[1].iterdir()) == ["adapter_config.json"]
