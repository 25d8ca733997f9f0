"""`lf-wrap validate FILE` for every kind of file: a training, eval, merge or search recipe, or a
task file, each told from its keys and checked as its own command checks it before any work."""

from __future__ import annotations

import pytest
import yaml

from conftest import run_lf_wrap
from test_trust import _study, adapters  # noqa: F401 - the adapters fixture, shared


@pytest.fixture(scope="module")
def study(tiny_model, adapters, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("validate")
    path, base = _study(tiny_model, adapters, root)
    return root, path, base


def test_every_kind_is_recognised_and_checked(study, adapters, tmp_path):  # noqa: F811
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
