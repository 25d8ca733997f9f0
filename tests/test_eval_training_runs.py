"""An adapter of an `lf-wrap train` run is scored on the run's own task and validation set
(`lf_wrap.task`, `lf_wrap.validation_dataset` in its manifest) unless the eval recipe says
otherwise. No engine starts: this is what the eval plans before it generates anything."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from helpers.adapters import make_adapter
from lf_wrap.core.errors import UserError
from lf_wrap.evaluation.models import resolve_models, tasks_from_training_runs
from lf_wrap.evaluation.recipe import load_eval_recipe


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    """A run folder as `lf-wrap train` leaves it: adapter/ and manifest.json (stage train)."""
    run = tmp_path_factory.mktemp("runs") / "qa-20260101-000000"
    make_adapter(tiny_model, run / "adapter", 4, 8, seed=3)
    (run / "manifest.json").write_text(json.dumps({
        "stage": "train", "status": "finished", "task": "qa", "validation_dataset": "tiny_qa_validation"}))
    link = run.parent / "qa-latest"
    link.symlink_to(run.name)
    return run


def plan(tmp_path, tiny_model, prepared, models, tasks=None):
    recipe = {"model_name_or_path": str(tiny_model), "dataset_dir": str(prepared), "models": models}
    if tasks is not None:
        recipe["tasks"] = tasks
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe))
    parsed, _ = load_eval_recipe(path)
    models = resolve_models(parsed)
    return (*tasks_from_training_runs(parsed, models), models)


def test_a_training_runs_adapter_brings_its_task_and_validation_set(tmp_path, tiny_model, prepared, run_dir):
    recipe, notes, models = plan(tmp_path, tiny_model, prepared,
                                 [{"name": "base"}, {"name": "tuned", "path": str(run_dir.parent / "qa-latest/adapter")}])
    assert models[1].task == "qa"                                   # bold in the table
    assert recipe.tasks["qa"].dataset == "tiny_qa_validation"
    assert notes == [f"tasks.qa: dataset tiny_qa_validation, from the training run of model 'tuned' "
                     f"({run_dir / 'manifest.json'})"]


def test_the_eval_recipe_wins_over_the_run(tmp_path, tiny_model, prepared, run_dir):
    recipe, notes, models = plan(tmp_path, tiny_model, prepared,
                                 [{"name": "tuned", "path": str(run_dir / "adapter"), "task": "qa"}],
                                 {"qa": {"dataset": "tiny_qa_train", "max_new_tokens": 4}})
    assert recipe.tasks["qa"].dataset == "tiny_qa_train" and notes == []


def test_no_task_anywhere_is_one_error(tmp_path, tiny_model, prepared, run_dir):
    adapter = tmp_path / "loose-adapter"
    shutil.copytree(run_dir / "adapter", adapter)                    # not inside a training run
    with pytest.raises(UserError, match="tasks: no task to score"):
        plan(tmp_path, tiny_model, prepared, [{"name": "loose", "path": str(adapter)}])


def test_a_joint_runs_adapter_is_scored_like_any_and_is_no_specialist(tmp_path, tiny_model, prepared, run_dir):
    """A joint run (several training sets, `lf_wrap.task` left out) records its sets' tasks and no
    task of its own: the eval scores it on the recipe's tasks, unmarked; the search refuses it as
    a specialist and says where it goes."""
    from lf_wrap.search.recipe import SearchRecipe
    from lf_wrap.search.splits import specialists

    joint = tmp_path / "runs" / "joint-20260101-000000"
    make_adapter(tiny_model, joint / "adapter", 4, 8, seed=5)
    (joint / "manifest.json").write_text(json.dumps({
        "stage": "train", "status": "finished", "task": None, "tasks": ["translate", "qa"],
        "validation_dataset": None}))
    tasks = {"qa": {"dataset": "tiny_qa_validation"}, "translate": {"dataset": "tiny_translate_validation"}}
    recipe, notes, models = plan(tmp_path, tiny_model, prepared,
                                 [{"name": "base"}, {"name": "joint", "path": str(joint / "adapter")}], tasks)
    assert models[1].kind == "adapter" and models[1].task is None and notes == []
    assert list(recipe.tasks) == ["qa", "translate"]
    search = SearchRecipe(eval=tmp_path / "eval.yaml", adapters=[{"path": str(joint / "adapter")},
                                                                 {"path": str(run_dir / "adapter")}])
    with pytest.raises(UserError, match=r"adapters.0: .* is a joint adapter \(its `lf-wrap train` run trained on "
                                        r"translate, qa at once\).*give it as `joint:`"):
        specialists(search, recipe)
