"""The one recipe reader (lf_wrap.core.recipes): the same `--set` grammar, the same refusal of a
key written twice and the same error format in training, merge and eval recipes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lf_wrap.core.errors import UserError
from lf_wrap.evaluation.recipe import load_eval_recipe
from lf_wrap.merge.config import load_recipe as load_merge_recipe
from lf_wrap.train.recipe import load_recipe as load_train_recipe, parse_overrides

TRAIN = """\
model_name_or_path: some/model
learning_rate: 1.0e-4
lf_wrap:
  task: qa
  dataset: [set_a, set_b]
  smoke:
    max_steps: 10
"""
MERGE = """\
adapters: [a, b]
method: linear
weights: [0.5, 0.5]
out: merged
"""
EVAL = """\
model_name_or_path: base
models:
  - name: base
  - name: tuned
    path: runs/old/adapter
tasks:
  qa:
    dataset: qa_validation
engine:
  dtype: bfloat16
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_train(path, sets=()):
    return load_train_recipe(path, parse_overrides(list(sets)))


def test_dotted_keys_and_list_indices_work_in_every_stage(tmp_path):
    train = load_train(write(tmp_path, TRAIN), ["lf_wrap.smoke.max_steps=3", "lf_wrap.dataset.1=set_c",
                                                "train.learning_rate=0.0002"])
    assert train.lf_wrap.smoke == {"max_steps": 3} and train.lf_wrap.dataset == ["set_a", "set_c"]
    assert parse_overrides(["train.learning_rate=0.0002"]).train == {"learning_rate": 0.0002}

    merge, _ = load_merge_recipe(write(tmp_path, MERGE), ("weights.1=0.7", "method=ties", "density=0.5"))
    assert merge.weights == [0.5, 0.7] and merge.method == "ties" and merge.density == 0.5

    evaluation, _ = load_eval_recipe(write(tmp_path, EVAL), ["engine.dtype=float32", "models.1.path=runs/new/adapter",
                                                             "tasks.qa.max_new_tokens=8"])
    assert evaluation.engine.dtype == "float32" and evaluation.models[1].path == "runs/new/adapter"
    assert evaluation.tasks["qa"].max_new_tokens == 8


@pytest.mark.parametrize("stage, body, key, lines", [
    ("train", TRAIN.replace("  task: qa\n", "  task: qa\n  task: translate\n"), "lf_wrap.task", (4, 5)),
    ("train", TRAIN.replace("    max_steps: 10\n", "    max_steps: 10\n    max_steps: 20\n"),
     "lf_wrap.smoke.max_steps", (7, 8)),
    ("merge", MERGE + "method: ties\n", "method", (2, 5)),
    ("eval", EVAL + "  dtype: float32\n", "engine.dtype", (10, 11)),
    ("eval", EVAL.replace("    path: runs/old/adapter\n", "    path: runs/old/adapter\n    path: x\n"),
     "models.1.path", (5, 6)),
])
def test_a_key_written_twice_is_refused_at_any_depth(tmp_path, stage, body, key, lines):
    path = write(tmp_path, body)
    load = {"train": load_train, "merge": load_merge_recipe, "eval": load_eval_recipe}[stage]
    with pytest.raises(UserError) as err:
        load(path)
    assert err.value.message == (f"{path}:{lines[1]}: key '{key}' appears twice (lines {lines[0]} and {lines[1]}); "
                                 "keep one")


def test_errors_name_file_line_and_key_without_library_prefixes(tmp_path):
    path = write(tmp_path, EVAL.replace("  dtype: bfloat16\n", "  dtype: bfloat16\n  max_model_length: 10\n"))
    with pytest.raises(UserError) as err:
        load_eval_recipe(path)
    assert err.value.message.startswith(f"{path}:11: engine.max_model_length: not a key of the engine section "
                                        "(did you mean 'max_model_len'?)")

    path = write(tmp_path, MERGE.replace("method: linear", "method: average"))
    with pytest.raises(UserError) as err:
        load_merge_recipe(path)
    assert err.value.message.startswith(f"{path}:2: method: unknown merge method 'average'")
    assert "Value error" not in err.value.message

    path = write(tmp_path, EVAL)
    with pytest.raises(UserError) as err:
        load_eval_recipe(path, ["tasks.qa.max_new_tokens=0"])
    assert err.value.message.startswith(f"{path} (--set tasks.qa.max_new_tokens=0): tasks.qa.max_new_tokens: ")


@pytest.mark.parametrize("pair, message", [
    ("models.7.path=x", "'7' is not an index of the 2-item list 'models'"),
    ("engine.dtype.x=1", "'engine.dtype' is a value, not a section"),
    ("engine..dtype=1", "expected key=value"),
    ("noequals", "expected key=value"),
])
def test_bad_overrides_are_refused_naming_the_override(tmp_path, pair, message):
    with pytest.raises(UserError) as err:
        load_eval_recipe(write(tmp_path, EVAL), [pair])
    assert f"--set {pair}" in err.value.message or repr(pair) in err.value.message
    assert message in err.value.message


def test_a_file_that_is_not_utf8_is_one_error(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"adapters: [a]\nout: \xff\xfe\n")
    with pytest.raises(UserError, match=r"recipe.yaml: not UTF-8 text"):
        load_merge_recipe(path)


@pytest.mark.parametrize("body", [
    EVAL.replace("  qa:\n    dataset: qa_validation\n",
                 '  "mytask\\n":\n    dataset: qa_validation\n    metric: exact_match\n'),
    EVAL.replace("  - name: tuned\n", '  - name: "tuned\\n"\n'),
])
def test_a_name_ending_in_a_newline_is_refused(tmp_path, body):
    """SEC10: a task or model name names files (predictions/<model>/<task>.jsonl); a final
    newline must not slip past the name rule (`$` in Python's re matches before it)."""
    path = write(tmp_path, body)
    with pytest.raises(UserError) as err:
        load_eval_recipe(path)
    assert "\n" not in err.value.message and ("mytask" in err.value.message or "models.1.name" in err.value.message)
