"""The shipped training recipes, and the checks `lf-wrap validate` runs before anything launches.

Checks run in-process against the real LLaMA-Factory in .venv-lf (asked once per process for
its argument fields), on the tiny model and the `prepared` datasets. Nothing here launches
training; the tests that do are in test_train.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_lf_wrap

from lf_wrap.core.errors import UserError
from lf_wrap.train.run import plan_training

RECIPES = REPO / "recipes"
TASK_RECIPES = ["translate", "summarize", "qa"]

# SPEC §3, shared by all three recipes.
STUDY_SHARED = {
    "stage": "sft", "do_train": True, "model_name_or_path": "Qwen/Qwen2.5-3B-Instruct", "template": "qwen",
    "finetuning_type": "lora", "lora_target": "q_proj,v_proj", "warmup_steps": 20, "weight_decay": 0.1,
    "learning_rate": 5e-6, "lr_scheduler_type": "cosine", "logging_steps": 1, "cutoff_len": 4096,
    "plot_loss": True, "num_train_epochs": 10, "bf16": True, "ddp_timeout": 9000,
    "overwrite_output_dir": True, "overwrite_cache": True, "use_fast_tokenizer": True,
}
STUDY_PER_RECIPE = {
    "translate": {"per_device_train_batch_size": 5, "gradient_accumulation_steps": 5, "save_steps": 500},
    "summarize": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "save_steps": 50},
    "qa": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "save_steps": 500},
}


def tiny_sets(task: str, tiny_model: Path, prepared: Path) -> list[str]:
    """What a CPU run changes: the model and the prepared datasets."""
    return [f"model_name_or_path={tiny_model}", f"lf_wrap.dataset=tiny_{task}_train",
            f"lf_wrap.dataset_dir={prepared}"]


def as_options(sets: list[str]) -> list[str]:
    return [arg for pair in sets for arg in ("--set", pair)]


def write_recipe(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- shipped recipes


@pytest.mark.parametrize("task", TASK_RECIPES)
def test_recipe_carries_the_study_hyper_parameters(task):
    path = RECIPES / f"{task}.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#") and f"lf-wrap train recipes/{task}.yaml" in text.split("\n\n")[0]
    data = yaml.safe_load(text)
    section = data.pop("lf_wrap")
    assert data == {**STUDY_SHARED, **STUDY_PER_RECIPE[task]}
    assert section["task"] == task
    smoke = section["smoke"]
    assert smoke["bf16"] is False and smoke["max_steps"] <= 20 and smoke["cutoff_len"] <= 256


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
@pytest.mark.parametrize("task", TASK_RECIPES)
def test_every_shipped_recipe_validates(task, smoke, tiny_model, prepared):
    plan = plan_training(RECIPES / f"{task}.yaml", tiny_sets(task, tiny_model, prepared), smoke=smoke)
    assert plan.args["learning_rate"] == (1e-2 if smoke else 5e-6)   # PyYAML's "5.0e-6" is a float
    assert plan.args["bf16"] is (not smoke)
    assert list(plan.datasets) == [f"tiny_{task}_train"]
    assert plan.args["report_to"] == "none"                          # lf-wrap's default
    assert not {"dataset", "dataset_dir", "output_dir"} & set(plan.args)


def test_shipped_dataset_names_match_what_make_data_writes(tmp_path, tiny_model, prepared):
    """`make data` names sets alpaca_<source>_<split>_<rows kept>; translate's count depends on
    the keyword filter, so its recipe names it with a pattern that must match exactly one."""
    from lf_wrap.data.dataset_info import alpaca_entry

    written = {"translate": "alpaca_wmt19_zh-en_train_5901", "summarize": "alpaca_cnn_dailymail_train_5679",
               "qa": "alpaca_squad_v2_train_6000"}
    for task, name in written.items():
        shutil.copy(prepared / f"tiny_{task}_train.json", tmp_path / f"{name}.json")
    (tmp_path / "dataset_info.json").write_text(json.dumps({n: alpaca_entry(f"{n}.json") for n in written.values()}))
    for task, name in written.items():
        plan = plan_training(RECIPES / f"{task}.yaml", [f"model_name_or_path={tiny_model}",
                                                        f"lf_wrap.dataset_dir={tmp_path}"])
        assert plan.train_args(tmp_path)["dataset"] == name


def test_dataset_pattern_must_match_exactly_one(tiny_model, prepared):
    sets = [f"model_name_or_path={tiny_model}", f"lf_wrap.dataset_dir={prepared}"]
    plan = plan_training(RECIPES / "qa.yaml", sets + ["lf_wrap.dataset=tiny_qa_tr*"])
    assert plan.train_datasets == ["tiny_qa_train"]
    with pytest.raises(UserError, match=r"dataset pattern 'tiny_\*_train' matches 3 names .*it must match exactly one"):
        plan_training(RECIPES / "qa.yaml", sets + ["lf_wrap.dataset=tiny_*_train"])


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_are_llamafactorys(stage):
    config = json.loads((RECIPES / "deepspeed" / f"ds_z{stage}_config.json").read_text())
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_micro_batch_size_per_gpu"] == "auto" and config["bf16"]["enabled"] == "auto"


# ---------------------------------------------------------------- overrides


def test_set_wins_over_smoke_over_recipe(tiny_model, prepared):
    sets = tiny_sets("qa", tiny_model, prepared) + [
        "learning_rate=2e-4",            # YAML 1.1 reads 2e-4 as a string; LLaMA-Factory's type decides
        "train.max_steps=3",             # train.KEY is an alias of KEY
        "lora_target=q_proj,k_proj,v_proj",
        "lf_wrap.dataset=tiny_qa_train,tiny_translate_train",
    ]
    plan = plan_training(RECIPES / "qa.yaml", sets, smoke=True)
    assert plan.args["learning_rate"] == 2e-4 and isinstance(plan.args["learning_rate"], float)
    assert plan.args["max_steps"] == 3
    assert plan.args["cutoff_len"] == 128                     # from the smoke set
    assert plan.args["per_device_train_batch_size"] == 2      # smoke over the recipe's 4
    assert plan.args["weight_decay"] == 0.1                   # the recipe's
    args = plan.train_args(Path("runs/x"))
    assert args["dataset"] == "tiny_qa_train,tiny_translate_train"
    assert args["lora_target"] == "q_proj,k_proj,v_proj"
    assert args["output_dir"] == str(Path("runs/x/adapter").resolve())
    assert args["dataset_dir"] == str(prepared.resolve())


# ---------------------------------------------------------------- bad recipes


BAD = {
    "unknown key": ("learnig_rate: 1.0e-4\n",
                    "'learnig_rate' is not a LLaMA-Factory training argument (did you mean 'learning_rate'?)"),
    "number as text": ("learning_rate: abc\n", "learning_rate (TrainingArguments) expects float, got str 'abc'"),
    "epochs as a word": ("num_train_epochs: ten\n", "num_train_epochs (TrainingArguments) expects float"),
    "scheduler typo": ("lr_scheduler_type: cosin\n", "'cosin' is not an accepted value (did you mean 'cosine'"),
    "bool as text": ("bf16: maybe\n", "bf16 (TrainingArguments) expects bool"),
    "owned key": ("output_dir: saves/x\n", "`output_dir` is filled by lf-wrap; the adapter always goes to"),
    "lf_wrap typo": ("lf_wrap:\n  datset: x\n",
                     "lf_wrap.datset: not a key of the lf_wrap section (did you mean 'dataset'"),
}


def edited_recipe(task: str, line: str) -> str:
    """The shipped recipe with one line replaced (same key) or added (new key)."""
    text = (RECIPES / f"{task}.yaml").read_text(encoding="utf-8")
    if line.startswith("lf_wrap:"):
        return text.replace("lf_wrap:\n", line, 1)
    key = line.split(":")[0]
    lines = text.splitlines(keepends=True)
    for i, old in enumerate(lines):
        if old.startswith(key + ":"):
            lines[i] = line
            return "".join(lines)
    return line + text


@pytest.mark.parametrize("case", list(BAD))
def test_bad_recipe_fails_with_its_message(case, tmp_path, tiny_model, prepared):
    line, message = BAD[case]
    recipe = write_recipe(tmp_path, edited_recipe("translate", line))
    with pytest.raises(UserError) as err:
        plan_training(recipe, tiny_sets("translate", tiny_model, prepared))
    assert message in err.value.message
    assert str(recipe) in err.value.message                   # names the file to fix


def test_key_written_twice(tmp_path, tiny_model, prepared):
    recipe = write_recipe(tmp_path, "learning_rate: 1.0e-4\n" + (RECIPES / "qa.yaml").read_text(encoding="utf-8"))
    with pytest.raises(UserError, match=r"bad.yaml:\d+: key 'learning_rate' appears twice \(lines 1 and \d+\)"):
        plan_training(recipe, tiny_sets("qa", tiny_model, prepared))


def test_bad_set_value_names_the_override(tiny_model, prepared):
    with pytest.raises(UserError, match=r"--set learning_rate=abc: learning_rate .* expects float"):
        plan_training(RECIPES / "qa.yaml", tiny_sets("qa", tiny_model, prepared) + ["learning_rate=abc"])
    with pytest.raises(UserError, match="expected key=value"):
        plan_training(RECIPES / "qa.yaml", ["learning_rate"])


def test_several_problems_are_reported_together(tmp_path, tiny_model, prepared):
    recipe = write_recipe(tmp_path, "learnig_rate: 1\n" + edited_recipe("qa", "num_train_epochs: ten\n"))
    with pytest.raises(UserError, match=r"2 problems:\n  .*learnig_rate.*\n  .*num_train_epochs"):
        plan_training(recipe, tiny_sets("qa", tiny_model, prepared))


def test_missing_dataset_name(tiny_model, prepared):
    sets = tiny_sets("qa", tiny_model, prepared) + ["lf_wrap.dataset=tiny_qa_trian"]
    with pytest.raises(UserError, match=r"dataset 'tiny_qa_trian' is not in .*dataset_info.json "
                                        r"\(did you mean 'tiny_qa_train'"):
        plan_training(RECIPES / "qa.yaml", sets)


def test_missing_dataset_file(tmp_path, tiny_model):
    folder = tmp_path / "data"
    folder.mkdir()
    info = {"lost": {"file_name": "lost.json", "formatting": "alpaca"}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    sets = [f"model_name_or_path={tiny_model}", "lf_wrap.dataset=lost", f"lf_wrap.dataset_dir={folder}"]
    with pytest.raises(UserError, match=r"dataset 'lost' points to .*lost.json, which does not exist"):
        plan_training(RECIPES / "qa.yaml", sets)


def test_missing_dataset_folder(tmp_path, tiny_model):
    sets = [f"model_name_or_path={tiny_model}", f"lf_wrap.dataset_dir={tmp_path / 'nowhere'}"]
    with pytest.raises(UserError, match=r"dataset_info.json does not exist; prepare data first"):
        plan_training(RECIPES / "qa.yaml", sets)


def test_missing_local_model(tmp_path, prepared):
    sets = tiny_sets("qa", tmp_path / "no-model", prepared)
    with pytest.raises(UserError, match=r"model_name_or_path .*no-model: no such folder"):
        plan_training(RECIPES / "qa.yaml", sets)


def test_hub_model_not_cached_when_offline(tiny_model, prepared, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sets = tiny_sets("qa", tiny_model, prepared)[1:]          # keep the recipe's Qwen/Qwen2.5-3B-Instruct
    with pytest.raises(UserError, match=r"model Qwen/Qwen2.5-3B-Instruct is not in the local Hugging Face "
                                        r"cache and HF_HUB_OFFLINE=1"):
        plan_training(RECIPES / "qa.yaml", sets)


def test_missing_checkpoint_and_deepspeed_config(tiny_model, prepared, tmp_path):
    sets = tiny_sets("qa", tiny_model, prepared)
    with pytest.raises(UserError, match="resume_from_checkpoint .*: no such checkpoint folder"):
        plan_training(RECIPES / "qa.yaml", sets + [f"resume_from_checkpoint={tmp_path}/checkpoint-5"])
    with pytest.raises(UserError, match="deepspeed config .*ds_z9.json does not exist"):
        plan_training(RECIPES / "qa.yaml", sets + [f"deepspeed={tmp_path}/ds_z9.json"])


def test_deepspeed_needs_deepspeed_in_the_training_env():
    from lf_wrap.train.checks import check_paths

    args = {"deepspeed": str(RECIPES / "deepspeed" / "ds_z3_config.json")}
    check_paths(args, {}, {"deepspeed": "0.16.9"})
    with pytest.raises(UserError, match="deepspeed is not installed in the training environment"):
        check_paths(args, {}, {"deepspeed": None})


def test_smoke_needs_a_smoke_set(tmp_path, tiny_model, prepared):
    text = (RECIPES / "qa.yaml").read_text(encoding="utf-8").split("  # --smoke")[0]
    recipe = write_recipe(tmp_path, text)
    with pytest.raises(UserError, match="--smoke given but the recipe has no `lf_wrap: smoke:` set"):
        plan_training(recipe, tiny_sets("qa", tiny_model, prepared), smoke=True)


def test_cli_bad_recipe_exits_before_launch(tmp_path, tiny_model, prepared):
    recipe = write_recipe(tmp_path, "learnig_rate: 1.0e-4\n" + (RECIPES / "qa.yaml").read_text(encoding="utf-8"))
    done = run_lf_wrap("train", recipe, "--smoke", *as_options(tiny_sets("qa", tiny_model, prepared)), cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean 'learning_rate'?" in done.stderr
    assert not (tmp_path / "runs").exists()                   # nothing launched, nothing written


def test_cli_validate_ok(tmp_path, tiny_model, prepared):
    done = run_lf_wrap("validate", RECIPES / "summarize.yaml", "--smoke", "--show",
                       *as_options(tiny_sets("summarize", tiny_model, prepared)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "OK: " in done.stdout and "checked against llamafactory " in done.stdout
    shown = yaml.safe_load(done.stdout.split("\n", 1)[1])
    assert shown["dataset"] == "tiny_summarize_train" and shown["bf16"] is False
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the joint recipe

JOINT_SETS = "lf_wrap.dataset=tiny_translate_train,tiny_summarize_train,tiny_qa_train"


def joint_sets(tiny_model: Path, prepared: Path, *extra: str) -> list[str]:
    return [f"model_name_or_path={tiny_model}", JOINT_SETS, f"lf_wrap.dataset_dir={prepared}", *extra]


def test_joint_recipe_hands_every_set_to_llamafactorys_own_mixing(tiny_model, prepared, tmp_path):
    text = (RECIPES / "joint.yaml").read_text(encoding="utf-8")
    assert "lf-wrap train recipes/joint.yaml" in text.split("\n\n")[0]
    data = yaml.safe_load(text)
    section = data.pop("lf_wrap")
    # The specialists' hyper-parameters (the summarize recipe's batch), every set once per epoch.
    assert data == {**STUDY_SHARED, **STUDY_PER_RECIPE["summarize"], "save_steps": 500, "mix_strategy": "concat"}
    assert "task" not in section and len(section["dataset"]) == 3
    plan = plan_training(RECIPES / "joint.yaml", joint_sets(tiny_model, prepared), smoke=True)
    args = plan.train_args(tmp_path)
    assert args["dataset"] == "tiny_translate_train,tiny_summarize_train,tiny_qa_train"
    assert args["mix_strategy"] == "concat" and "interleave_probs" not in args
    assert plan.tasks == TASK_RECIPES and plan.recipe.lf_wrap.task is None     # no specialist of one task
    done = run_lf_wrap("validate", RECIPES / "joint.yaml", *as_options(joint_sets(tiny_model, prepared)),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 training sets mixed by LLaMA-Factory (mix_strategy concat; tasks: translate, summarize, qa)" \
        in done.stdout


@pytest.mark.parametrize("command, extra, says", [
    ("validate", ["lf_wrap.dataset=tiny_translate_train,tiny_sumarize_train"],
     "(--set lf_wrap.dataset): dataset 'tiny_sumarize_train' is not in"),
    ("train", ["lf_wrap.dataset=tiny_translate_train,tiny_sumarize_train"],
     "(--set lf_wrap.dataset): dataset 'tiny_sumarize_train' is not in"),
    ("validate", ["interleave_probs=0.5,0.3,0.2"], "interleave_probs is only for an interleaved mix_strategy"),
    ("validate", ["mix_strategy=interleave_under", "interleave_probs=0.5,0.5"],
     "interleave_probs has 2 probabilities for 3 training sets"),
    ("train", ["mix_strategy=interleave_over", "interleave_probs=0.5,0.3,0.3"], "summing to 1 (they sum to 1.1)"),
    ("validate", ["mix_strategy=interleave_over", "interleave_probs=0.5,x,0.5"],
     "is not a comma-separated list of numbers"),
    ("validate", ["mix_strategy=mixed"], "mix_strategy"),
])
def test_a_bad_joint_recipe_is_one_error_before_any_work(tiny_model, prepared, tmp_path, command, extra, says):
    """Each refused by `lf-wrap validate` and, before it launches anything, by `lf-wrap train`."""
    done = run_lf_wrap(command, RECIPES / "joint.yaml", "--smoke",
                       *as_options(joint_sets(tiny_model, prepared, *extra)), cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 2 and len(errors) == 1 and says in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
