"""`lf-wrap validate FILE` for every kind of file: a training, eval, merge or search recipe, or a
task file, each told from its keys and checked as its own command checks it before any work."""

from __future__ import annotations

import pytest
import yaml

from conftest import run_lf_wrap
from helpers.search import write_planned_search


@pytest.fixture(scope="module")
def study(tiny_model, adapters, tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    path, base = write_planned_search(tiny_model, adapters, root)
    return root, path, base


def test_every_kind_is_recognised_and_checked(study, adapters, tmp_path):
    root, search, base = study
    merge = tmp_path / "merge.yaml"
    merge.write_text(yaml.safe_dump({"adapters": [str(adapters["A"]), str(adapters["C"])], "method": "linear",
                                     "weights": [0.5, 0.5], "out": str(tmp_path / "merged")}))
    task = tmp_path / "sentiment.yaml"
    task.write_text('name: sentiment\nprompt: "Is it good?\\n{review}"\nresponse: label\nmetric: exact_match\n'
                    "max_new_tokens: 4\n")
    expected = {search: "search recipe: 3 adapters", root / "eval.yaml": "eval recipe: 1 models (base)",
                merge: "merge recipe: 2 adapters", task: "task file: task 'sentiment', metric exact_match"}
    for path, said in expected.items():
        done = run_lf_wrap("validate", path, "--show", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"{path}: OK: {said}" in done.stdout
    assert not (tmp_path / "merged").exists() and not (root / "out").exists()     # nothing ran


def test_a_bad_file_of_each_kind_is_one_error_naming_the_key(study, tmp_path):
    root, search, _ = study
    cases = {"search recipe": (search, "budget=0", "budget"),
             "eval recipe": (root / "eval.yaml", "engine.extra_args={dtype: float16}", "engine.extra_args"),
             "task file": (None, "metric=nope", "metric")}
    task = tmp_path / "t.yaml"
    task.write_text('name: t\nprompt: "{x}"\nresponse: y\nmetric: exact_match\n')
    for kind, (path, override, key) in cases.items():
        done = run_lf_wrap("validate", path or task, "--set", override, cwd=tmp_path)
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert done.returncode == 2 and len(errors) == 1 and key in errors[0], (kind, done.stderr[-2000:])
    done = run_lf_wrap("validate", root / "eval.yaml", "--smoke", cwd=tmp_path)
    assert done.returncode == 2 and "only a training recipe has a smoke set" in done.stderr


@pytest.mark.parametrize("name, says", [
    ("qa.scores", "'qa.scores' ends in '.scores': qa.scores.jsonl is where task 'qa' keeps its per-row scores"),
    ("qa.meta", "'qa.meta' ends in '.meta'"),
    ("a" * 300, "is 300 characters long; a name has at most 100"),
])
def test_a_task_name_whose_files_would_collide_or_not_fit_is_refused_before_any_engine(tiny_model, prepared, tmp_path,
                                                                                      name, says):
    """T27: task `qa.scores` had its predictions overwritten by task qa's per-row scores, then the
    eval failed and refused every rerun; T25: a 300-character name failed after generating. Both
    are refused by validate, by eval before the engine, and in a task file."""
    recipe = {"model_name_or_path": str(tiny_model), "dataset_dir": str(prepared), "models": [{"name": "base"}],
              "tasks": {"qa": {"dataset": "tiny_qa_validation", "max_new_tokens": 4},
                        name: {"dataset": "tiny_qa_validation", "metric": "squad_v2", "max_new_tokens": 4}},
              "engine": {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True}}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for args in (("validate", path), ("eval", path, "--out", tmp_path / "ev")):
        done = run_lf_wrap(*args, cwd=tmp_path)
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert done.returncode == 2 and len(errors) == 1 and says in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "ev" / "predictions").exists()
    task = tmp_path / "t.yaml"
    task.write_text(f'name: {name}\nprompt: "{{x}}"\nresponse: y\nmetric: exact_match\n')
    done = run_lf_wrap("validate", task, cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr, done.stderr[-2000:]
    models = {**recipe, "tasks": {"qa": recipe["tasks"]["qa"]}, "models": [{"name": "m" * 300}]}
    path.write_text(yaml.safe_dump(models))
    done = run_lf_wrap("validate", path, cwd=tmp_path)
    assert done.returncode == 2 and "a name has at most 100" in done.stderr, done.stderr[-2000:]
