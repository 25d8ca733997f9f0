"""Task files: the study's three tasks as shipped task files (prepared byte for byte as before
task files existed), and bad task files, sets and study folders refused with one `Error:` line
naming the file, line and key, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import read_json, run_lf_wrap
from lf_wrap.data.prepare import PrepareOptions, prepare
from lf_wrap.tasks import TASKS, find_task

GOLDEN = Path(__file__).parent / "data" / "prepared_sets_306cf0e.json"
SOURCES = {"translate": "wmt19_zh-en", "summarize": "cnn_dailymail", "qa": "squad_v2"}


def test_the_study_sets_are_byte_identical_to_before_task_files(sample_sources, tmp_path):
    """tests/data/prepared_sets_306cf0e.json: sha256 of each set the code at 306cf0e (the study's
    tasks as Python functions) wrote from the sample sources: the `prepared` fixture's sets, the
    Makefile's data-sample sets, qa with its options, and translate from flat {zh, en} rows."""
    golden = read_json(GOLDEN)
    flat = tmp_path / "flat" / "train.jsonl"
    flat.parent.mkdir()
    lines = (sample_sources / "wmt19_zh-en" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    flat.write_text("".join(json.dumps(json.loads(line)["translation"], ensure_ascii=False) + "\n" for line in lines),
                    encoding="utf-8")
    dataset_dir = tmp_path / "ds"
    for name, expected in golden.items():
        if name == "dataset_info.json":
            continue
        folder = tmp_path if expected["source"].startswith("flat/") else sample_sources
        options = PrepareOptions(dataset_dir=dataset_dir, **expected["options"])
        result = prepare(expected["task"], str(folder / expected["source"]), expected["split"], expected["n"],
                         options=options)
        assert result.name == name
        assert hashlib.sha256(result.data_file.read_bytes()).hexdigest() == expected["sha256"], name
        assert result.manifest["rows_dropped"] == expected["rows_dropped"]
    assert hashlib.sha256((dataset_dir / "dataset_info.json").read_bytes()).hexdigest() == golden["dataset_info.json"]


def test_shipped_tasks_are_task_files_read_like_a_users(tmp_path):
    for name, task in TASKS.items():
        assert Path(task.origin).name == f"{name}.yaml" and task.spec.name == name
        again = find_task(Path(task.origin))
        assert again.recorded() == task.recorded()
    assert (TASKS["translate"].metric, TASKS["summarize"].metric, TASKS["qa"].metric) == ("bleu", "rouge", "squad_v2")
    assert [TASKS[t].max_new_tokens for t in TASKS] == [256, 256, 64]
    assert TASKS["qa"].no_answer_text == "unanswerable" and "共产党" in TASKS["translate"].keywords
    # no task-specific Python is left: the package holds no prompt text
    package = Path(TASKS["qa"].origin).parents[2]
    for module in package.rglob("*.py"):
        assert "translate the" not in module.read_text(encoding="utf-8") and \
            "翻译为英文" not in module.read_text(encoding="utf-8"), module


def test_data_prepare_takes_a_task_file_and_set(tmp_path, sample_sources):
    source = sample_sources / "cnn_dailymail" / "validation.jsonl"
    shipped = Path(TASKS["summarize"].origin)
    done = run_lf_wrap("data", "prepare", shipped, "--source", source, "--split", "validation", "-n", "5",
                       "--dataset-dir", tmp_path / "ds", "--set", "max_new_tokens=32")
    assert done.returncode == 0, done.stderr
    manifest = read_json(tmp_path / "ds" / "alpaca_cnn_dailymail_validation_5.manifest.json")
    assert manifest["task"] == "summarize" and manifest["task_declaration"]["max_new_tokens"] == 32
    assert manifest["task_file"] == str(shipped)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != ".dataset_info.json.lock"} if folder.exists() else {}


def refused(done, *needles: str) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


GOOD_TASK = 'name: sentiment\nprompt: "Is this review positive or negative?\\n{review}"\nresponse: label\n' \
            'metric: exact_match\nmax_new_tokens: 4\n'


@pytest.mark.parametrize("edit, needles", [
    (("max_new_tokens: 4", "max_new_tokens: 4\nmax_new_token: 5"), (":6: max_new_token: not a key", "did you mean 'max_new_tokens'")),
    (("{review}", "{revew}"), (":2: prompt:", "slot '{revew}'", "no column 'revew'", "did you mean 'review'")),
    (("response: label", "response: verdict"), (":3: response:", "no column 'verdict'")),
    (("metric: exact_match", "metric: exact_mach"), (":4: metric: unknown metric 'exact_mach'", "did you mean 'exact_match'")),
    (("metric: exact_match", "metric: nowhere.py:score"), (":4: metric:", "nowhere.py")),
    (("name: sentiment", "name: my task"), (":1: name:", "not a plain name")),
    (("name: sentiment", "name: ../x"), (":1: name:",)),
    (("{review}", "{review"), (":2: prompt:", "bad slot")),
    (("metric: exact_match", "metric: exact_match\nno_answer_text: none"), (":5: no_answer_text:",)),
    (("max_new_tokens: 4", 'max_new_tokens: "4"'), (":5: max_new_tokens:", "valid integer")),    # probe T5
    (("max_new_tokens: 4", "max_new_tokens: true"), (":5: max_new_tokens:", "valid integer")),
])
def test_a_bad_task_file_is_one_error_naming_file_line_and_key(tmp_path, edit, needles):
    task = tmp_path / "sentiment.yaml"
    task.write_text(GOOD_TASK.replace(*edit), encoding="utf-8")
    source = tmp_path / "reviews.jsonl"
    source.write_text('{"review": "Great film.", "label": "positive"}\n', encoding="utf-8")
    before = snapshot(tmp_path)
    done = run_lf_wrap("data", "prepare", task, "--source", source, "--split", "train", "-n", "1",
                       "--dataset-dir", tmp_path / "ds")
    refused(done, str(task), *needles)
    assert snapshot(tmp_path) == before


def test_a_row_without_the_response_field_names_row_and_key(tmp_path):
    task = tmp_path / "sentiment.yaml"
    task.write_text(GOOD_TASK, encoding="utf-8")
    source = tmp_path / "reviews.jsonl"
    source.write_text('{"review": "Great film.", "label": "positive"}\n{"review": "Dull."}\n', encoding="utf-8")
    done = run_lf_wrap("data", "prepare", task, "--source", source, "--split", "train", "-n", "2",
                       "--dataset-dir", tmp_path / "ds")
    refused(done, f"{source}:2:", "'label'")
    assert not (tmp_path / "ds").exists()


def test_response_lists_and_number_labels(tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text('name: t\nprompt: "Q: {q}"\nresponse: [a, b]\nmetric: squad_v2\nno_answer_text: none\n',
                    encoding="utf-8")
    source = tmp_path / "s.jsonl"
    source.write_text('{"q": 7, "a": "x", "b": "y"}\n', encoding="utf-8")
    result = prepare(str(task), str(source), "train", 1, options=PrepareOptions(dataset_dir=tmp_path / "ds"))
    assert read_json(result.data_file) == [{"instruction": "Q: 7", "input": "", "output": "x", "answers": ["x", "y"]}]
    assert result.name == "alpaca_t_train_1"


@pytest.mark.parametrize("rows, needles", [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": 3}\n', (":2:", "key 'output'")),
    ('[{"instruction": "a"}]', ("row 0", "key 'output'")),
    ('{"conversations": [{"from": "human", "value": "hi"}, {"from": "human", "value": "x"}]}\n',
     (":1:", "conversations.1.from")),
])
def test_data_add_checks_each_row(tmp_path, rows, needles):
    path = tmp_path / "mine.jsonl"
    path.write_text(rows, encoding="utf-8")
    refused(run_lf_wrap("data", "add", path, "--name", "mine", "--dataset-dir", tmp_path / "ds"), *needles)
    assert not (tmp_path / "ds").exists()


def test_data_add_registers_alpaca_and_sharegpt(tmp_path):
    alpaca = tmp_path / "a.jsonl"
    alpaca.write_text('{"instruction": "a", "output": "b", "system": "s"}\n', encoding="utf-8")
    chat = tmp_path / "c.json"
    chat.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]),
                    encoding="utf-8")
    ds = tmp_path / "ds"
    for path, name in ((alpaca, "mine_a"), (chat, "mine_c")):
        done = run_lf_wrap("data", "add", path, "--name", name, "--dataset-dir", ds, "--task", "qa")
        assert done.returncode == 0, done.stderr
    info = read_json(ds / "dataset_info.json")
    assert info["mine_a"]["columns"]["system"] == "system" and info["mine_c"]["formatting"] == "sharegpt"
    assert read_json(ds / "mine_a.manifest.json")["task_declaration"]["metric"] == "squad_v2"
    again = run_lf_wrap("data", "add", alpaca, "--name", "mine_a", "--dataset-dir", ds)
    assert again.returncode == 0   # another task (none): rewritten, still ours


def test_init_writes_a_study_and_never_overwrites(tmp_path):
    task = tmp_path / "sentiment.yaml"
    task.write_text(GOOD_TASK, encoding="utf-8")
    done = run_lf_wrap("init", "study", "--task", task, "--task", "qa", "--model", "Qwen/Qwen2.5-3B-Instruct", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    recipe = (tmp_path / "study" / "train" / "sentiment.yaml").read_text(encoding="utf-8")
    assert recipe.startswith("# lf-wrap train train/sentiment.yaml\n") and f"task: {task}" in recipe
    assert "task: qa\n" in (tmp_path / "study" / "train" / "qa.yaml").read_text(encoding="utf-8")
    before = snapshot(tmp_path)
    refused(run_lf_wrap("init", "study", "--task", task, "--model", "m", cwd=tmp_path), "exists already")
    refused(run_lf_wrap("init", "other", "--task", task, "--task", task, "--model", "m", cwd=tmp_path), "'sentiment'")
    assert snapshot(tmp_path) == before


def test_init_writes_a_joint_recipe_that_validates_as_written(tmp_path, tiny_model, sample_sources):
    """For several tasks, train/joint.yaml: every task's training set, mixed by LLaMA-Factory
    (concat), no task of its own; with the sets prepared under the names the recipes give, it
    validates as written (only the model swapped for the tiny one)."""
    done = run_lf_wrap("init", "study", "--task", "translate", "--task", "qa", "--model", "Qwen/Qwen2.5-3B-Instruct",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "lf-wrap train train/joint.yaml" in done.stdout
    study = tmp_path / "study"
    text = (study / "train" / "joint.yaml").read_text(encoding="utf-8")
    assert text.startswith("# lf-wrap train train/joint.yaml\n")
    joint, qa = (yaml.safe_load((study / "train" / f"{n}.yaml").read_text(encoding="utf-8")) for n in ("joint", "qa"))
    assert joint.pop("mix_strategy") == "concat" and joint["lf_wrap"].pop("dataset") == ["translate_train", "qa_train"]
    for key in ("task", "dataset", "validation_dataset"):
        qa["lf_wrap"].pop(key)
    assert joint == qa                                   # the task recipes' hyper-parameters
    sources = {"translate": "wmt19_zh-en", "qa": "squad_v2"}
    for task, source in sources.items():
        prepare(task, str(sample_sources / source / "train.jsonl"), "train", 20,
                options=PrepareOptions(name=f"{task}_train", dataset_dir=study / "dataset_info"))
    checked = run_lf_wrap("validate", "train/joint.yaml", "--smoke", "--set", f"model_name_or_path={tiny_model}",
                          cwd=study)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "2 training sets mixed by LLaMA-Factory (mix_strategy concat; tasks: translate, qa)" in checked.stdout
    one = run_lf_wrap("init", "one", "--task", "qa", "--model", "m", cwd=tmp_path)
    assert one.returncode == 0 and not (tmp_path / "one" / "train" / "joint.yaml").exists()
    named_joint = tmp_path / "joint.yaml"
    named_joint.write_text(GOOD_TASK.replace("name: sentiment", "name: joint"), encoding="utf-8")
    refused(run_lf_wrap("init", "two", "--task", named_joint, "--task", "qa", "--model", "m", cwd=tmp_path),
            "a task named 'joint' would share train/joint.yaml")
    assert not (tmp_path / "two").exists()


@pytest.mark.parametrize("model", ["my models #2/tiny", "org/model: v2", "yes", "1e3", "*anchor", "[x]"])
def test_init_writes_every_value_so_that_yaml_reads_it_back_as_given(tmp_path, model):
    """I5-I8: the model and the task file's path were written unquoted: ` #` cut the path, `: `
    made a file that is not YAML (init said OK), `yes` became a boolean."""
    folder = tmp_path / "tk dir #1"
    folder.mkdir()
    task = folder / "ok: task.yaml"
    task.write_text(GOOD_TASK, encoding="utf-8")
    done = run_lf_wrap("init", "st", "--task", task, "--task", "qa", "--model", model, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    train = yaml.safe_load((tmp_path / "st" / "train" / "sentiment.yaml").read_text(encoding="utf-8"))
    assert train["model_name_or_path"] == model and train["lf_wrap"]["task"] == str(task)
    evaluation = yaml.safe_load((tmp_path / "st" / "eval.yaml").read_text(encoding="utf-8"))
    assert evaluation["model_name_or_path"] == model


@pytest.mark.parametrize("study, args, says", [
    ("st10\nmodel_name_or_path: /evil", (), "holds a line break"),
    ("ok", ("--template", "nosuch"), "--template: template 'nosuch' is not supported"),
    ("blocked", (), "is a file where lf-wrap init writes a folder"),
])
def test_init_refuses_what_it_cannot_write_safely_and_writes_nothing(tmp_path, study, args, says):
    """I10 (a newline in the study folder split a comment into a key), I9, I11 (a file where the
    train/ folder goes was a FileExistsError traceback)."""
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "train").write_text("not a folder")
    before = snapshot(tmp_path)
    refused(run_lf_wrap("init", study, "--task", "qa", "--model", "m", *args, cwd=tmp_path), says)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("place", ["train_is_a_file", "read_only_parent"])
def test_init_where_the_study_cannot_be_written_is_one_error(tmp_path, place):
    """`<study>/train` a file (probe I11), or the study in a read-only folder (PA11): one Error
    naming the path, exit 2, nothing written (it was a FileExistsError / OSError traceback).
    A file where a folder goes is found before anything is written."""
    import os

    if place == "read_only_parent" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder; train_is_a_file takes the same path")
    parent = tmp_path / "ro"
    parent.mkdir()
    study = parent / "study"
    if place == "train_is_a_file":
        study.mkdir()
        (study / "train").write_text("mine", encoding="utf-8")
    before = snapshot(tmp_path)
    os.chmod(parent, 0o555 if place == "read_only_parent" else 0o755)
    try:
        done = run_lf_wrap("init", study, "--task", "qa", "--model", "m", cwd=tmp_path)
    finally:
        os.chmod(parent, 0o755)
    if place == "train_is_a_file":
        refused(done, f"{study / 'train'} is a file where lf-wrap init writes a folder")
    else:
        refused(done, f"cannot write the study into {study}: {study}", "nothing was written")
    assert snapshot(tmp_path) == before


def test_score_reads_a_shipped_task_by_name_or_file(tmp_path):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("".join(json.dumps({"row": i, "id": str(i), "prediction": p, "references": r}) + "\n"
                                   for i, (p, r) in enumerate([("Oslo", ["Oslo"]), ("", []), ("Rome", ["Paris"])])),
                           encoding="utf-8")
    by_name = run_lf_wrap("score", predictions, "--task", "qa", "--json")
    by_file = run_lf_wrap("score", predictions, "--task", TASKS["qa"].origin, "--json")
    assert by_name.returncode == 0 and by_name.stdout == by_file.stdout
    assert json.loads(by_name.stdout)["exact_match"] == pytest.approx(2 / 3)
