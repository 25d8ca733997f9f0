"""`lf-wrap init`: a study of your own tasks, as recipes written to be edited (like `tune cp`).

For the tasks named (task files, or shipped tasks by name) it writes into the study folder one
training recipe per task (the study's hyper-parameters as the starting point), a merge recipe,
an eval recipe and, for two tasks or more, a joint training recipe (train/joint.yaml: one adapter
on every task's set, the reference a merge is held to) and a merge search recipe. Each file opens with the
command that runs it. Paths in the recipes are relative to the study folder, and the commands
run from there (`cd STUDY`); the task files are named by absolute path and never copied: a task
stays declared in one place. Nothing is written when any of the files exists already.

The recipes are templates with comments, so the values put into them (the model, the template,
task file paths) are written as YAML scalars by PyYAML (`yaml_scalar`): a path holding ` #` or
`: `, or a model named `yes`, reads back as written. Each file is read back with the YAML reader
before init says it is done. A value that cannot sit on one line (a newline in the study folder,
the model or a task file's path) is refused: it would split a comment into a key."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_text
from lf_wrap.tasks.prompts import get_template
from lf_wrap.tasks import TASKS, Task, find_task

# The study's training keys (its qa recipe's batch sizes); `mixing` and `section` differ between a
# task's recipe and the joint one.
TRAIN_KEYS = """\
### model
model_name_or_path: {model}
use_fast_tokenizer: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_target: q_proj,v_proj

### dataset (lf-wrap fills dataset and dataset_dir from the lf_wrap: section)
template: {template}
cutoff_len: 4096
overwrite_cache: true
{mixing}
### train
per_device_train_batch_size: 4
gradient_accumulation_steps: 4
learning_rate: 5.0e-6
num_train_epochs: 10
lr_scheduler_type: cosine
warmup_steps: 20
weight_decay: 0.1
bf16: true
ddp_timeout: 9000

### output (lf-wrap fills output_dir: <run_dir>/adapter)
logging_steps: 1
save_steps: 500
plot_loss: true
overwrite_output_dir: true

# lf-wrap's own keys: never handed to llamafactory-cli.
lf_wrap:
{section}  dataset_dir: dataset_info
  # --smoke: a few CPU steps on a tiny model, to check the whole path in a minute.
  smoke:
    bf16: false
    max_steps: 10
    per_device_train_batch_size: 2
    gradient_accumulation_steps: 1
    cutoff_len: 128
    warmup_steps: 0
    learning_rate: 1.0e-2
    save_steps: 5
"""


@dataclass
class Scaffold:
    folder: Path
    files: dict[str, str]          # path relative to the folder -> text

    def steps(self) -> list[str]:
        """What to run, in order, from the study folder."""
        return [self.files[p].splitlines()[0].removeprefix("# ") for p in self.files]


def yaml_scalar(value: str) -> str:
    """`value` as one YAML scalar that reads back as the same string (quoted where YAML would read
    it otherwise: ` #`, `: `, `yes`, `1e3`, a leading `*`...)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    if "\n" in text or yaml.safe_load(text) != value:
        raise UserError(f"{value!r} cannot be written as one YAML value")
    return text


def _one_line(value: str, what: str) -> str:
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise UserError(f"{what} {value!r} holds a line break or a control character; it would split a line of "
                        "the recipes lf-wrap init writes: rename it")
    return value


def _task_ref(task: Task, given: str) -> str:
    return task.name if given in TASKS else str(Path(task.origin).resolve())


def _prepare_lines(task: Task, ref: str) -> str:
    source = task.spec.source.hub_id or "FILE"
    return "".join(f"#   lf-wrap data prepare {shlex.quote(ref)} --source {shlex.quote(source)} --split {split} -n N "
                   f"--name {task.name}_{split}\n" for split in ("train", "validation"))


def training_recipe(task: Task, ref: str, model: str, template: str, study: str) -> str:
    head = (f"# lf-wrap train train/{task.name}.yaml\n"
            f"#\n"
            f"# Run from {study}/ (CPU check on a tiny model: add --smoke --set model_name_or_path=PATH).\n"
            f"# LoRA SFT of {model} for task '{task.name}', declared in {task.origin}.\n"
            f"# Written by `lf-wrap init` with the study's hyper-parameters: edit freely. Top-level keys are\n"
            f"# LLaMA-Factory's own. Its data first:\n"
            f"{_prepare_lines(task, ref)}\n")
    section = (f"  task: {yaml_scalar(ref)}\n"
               f"  dataset: {task.name}_train                 # in dataset_dir/dataset_info.json (lf-wrap data "
               "prepare ... --name)\n"
               f"  validation_dataset: {task.name}_validation # what `lf-wrap eval` scores this adapter on\n")
    return head + TRAIN_KEYS.format(model=yaml_scalar(model), template=yaml_scalar(template), mixing="",
                                    section=section)


JOINT = "joint"       # train/joint.yaml, runs/joint-latest: no task may take the name


def joint_recipe(names: list[str], model: str, template: str, study: str) -> str:
    """One adapter trained on every task's set at once: the reference a merge of the specialists
    is held to (a merge that keeps less than joint training would is no saving)."""
    head = (f"# lf-wrap train train/{JOINT}.yaml\n"
            f"#\n"
            f"# Run from {study}/ after preparing every task's sets (CPU check: add --smoke --set\n"
            f"# model_name_or_path=PATH). One LoRA SFT of {model} on {', '.join(names)} at once: the joint\n"
            f"# reference for the merges (`joint:` in search.yaml). Same hyper-parameters as the task recipes.\n\n")
    mixing = ("# LLaMA-Factory mixes the sets itself. concat: every row of every set once per epoch, the same\n"
              "# epochs per task as each task's own recipe (interleave_* draw rows by interleave_probs instead).\n"
              "mix_strategy: concat\n")
    section = ("  # No task: the sets were prepared for several; the run records them all (manifest `tasks`).\n"
               "  dataset:\n" + "".join(f"    - {n}_train\n" for n in names))
    return head + TRAIN_KEYS.format(model=yaml_scalar(model), template=yaml_scalar(template), mixing=mixing,
                                    section=section)


def merge_recipe(names: list[str], template: str, study: str) -> str:
    adapters = "".join(f"  - runs/{n}-latest/adapter\n" for n in names)
    return (f"# lf-wrap merge recipe merge.yaml\n#\n"
            f"# Run from {study}/ after training. Every task adapter at full weight (W + sum of dW), as the\n"
            f"# study's 3-in-1, written as one LoRA adapter (exact); `lf-wrap merge search search.yaml` looks\n"
            f"# for a better merge. Methods and keys: docs/merge-methods.md.\n"
            f"adapters:\n{adapters}method: sum\nas: adapter\nout: runs/merge\ntemplate: {yaml_scalar(template)}\n")


def eval_recipe(names: list[str], model: str, template: str, study: str) -> str:
    models = "".join(f"  - name: lora_{n}\n    path: runs/{n}-latest/adapter\n    task: {n}\n" for n in names)
    tasks = "".join(f"  {n}:\n    dataset: {n}_validation\n" for n in names)
    return (f"# lf-wrap eval eval.yaml\n#\n"
            f"# Run from {study}/ after training and merging: every model on every task, one table.\n"
            f"# Each task's metric, headline and max_new_tokens come from the task file its dataset was\n"
            f"# prepared from; set them under tasks.<name> only to override (docs/tasks.md).\n"
            f"model_name_or_path: {yaml_scalar(model)}\ntemplate: {yaml_scalar(template)}\n"
            "dataset_dir: dataset_info\n\n"
            f"models:\n  - name: base\n{models}  - name: merge\n    path: runs/merge\n\n"
            f"tasks:\n{tasks}\n"
            f"engine:\n  dtype: auto\n  max_model_len: 4096\n  gpu_memory_utilization: 0.9\n\n"
            f"long_prompts: skip\nbatch_size: 256\n")


def search_recipe(names: list[str], study: str) -> str:
    adapters = "".join(f"  - path: runs/{n}-latest/adapter\n" for n in names)
    return (f"# lf-wrap merge search search.yaml\n#\n"
            f"# Run from {study}/ after training: which merge keeps every task's gain? Rows, tasks and the\n"
            f"# engine come from eval.yaml; each adapter's task from its training run. The summary opens\n"
            f"# with the verdict; runs/search/best holds a merge only when it is confirmed (docs/search.md).\n"
            f"eval: eval.yaml\nadapters:\n{adapters}"
            f"# joint: runs/{JOINT}-latest/adapter  # after `lf-wrap train train/{JOINT}.yaml`: scored beside merges\n"
            f"methods: [linear, ties, dare_ties]\nbudget: 32\nobjective: worst\n"
            f"# Ranked by the worst of 4 folds of the search rows: on two real tasks (docs/real-text.md) the\n"
            f"# winner by the bootstrap's lower bound fell from 66% to -11% on the report rows; by the worst\n"
            f"# fold it held (0% ranked, 7% there).\n"
            f"rows:\n  search: 100\n  folds: 4\n  seed: 0\nas: adapter\nout: runs/search\n")


def scaffold(folder: Path, task_refs: list[str], model: str, template: str = "qwen") -> Scaffold:
    """The study's files, checked (every task readable, names unique), not yet written."""
    if not task_refs:
        raise UserError("--task: name at least one task (a task file or a shipped task)")
    _one_line(str(folder), "the study folder")
    _one_line(model, "--model")
    try:
        get_template(template)           # the eval and search recipes written here render prompts with it
    except UserError as err:
        raise UserError(f"--template: {err}") from None
    tasks = [(find_task(ref, what="--task"), ref) for ref in task_refs]
    for task, _ in tasks:
        _one_line(str(task.origin), f"task '{task.name}': its file")
    names = [t.name for t, _ in tasks]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise UserError(f"--task: two tasks are named '{twice}'; each task of a study needs its own name")
    study = str(folder)
    files = {f"train/{t.name}.yaml": training_recipe(t, _task_ref(t, ref), model, template, study) for t, ref in tasks}
    if len(names) > 1:
        if JOINT in names:
            raise UserError(f"--task: a task named '{JOINT}' would share train/{JOINT}.yaml (and runs/{JOINT}-latest) "
                            "with the joint recipe of a study of several tasks; rename the task")
        files[f"train/{JOINT}.yaml"] = joint_recipe(names, model, template, study)
    files["merge.yaml"] = merge_recipe(names, template, study)
    files["eval.yaml"] = eval_recipe(names, model, template, study)
    if len(names) > 1:
        files["search.yaml"] = search_recipe(names, study)
    return Scaffold(Path(folder), files)


def write(plan: Scaffold) -> list[Path]:
    """Write every file, or none when one of them exists already."""
    if plan.folder.exists() and not plan.folder.is_dir():
        raise UserError(f"{plan.folder} is a file, not a study folder")
    taken = [p for p in plan.files if (plan.folder / p).exists()]
    if taken:
        raise UserError(f"{plan.folder / taken[0]} exists already; lf-wrap init never overwrites a recipe: "
                        "choose another study folder, or move it away")
    blocked = next((p for p in plan.files if _blocked_by_file(plan.folder / p)), None)
    if blocked:
        raise UserError(f"{_blocked_by_file(plan.folder / blocked)} is a file where lf-wrap init writes a folder "
                        f"(for {plan.folder / blocked}); move it away, or choose another study folder")
    written = []
    for relative, text in plan.files.items():       # an OSError: lf_wrap.commands.init names what was written
        atomic_write_text(plan.folder / relative, text)
        written.append(plan.folder / relative)
    for path in written:                  # read back: what the next command will read
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise UserError(f"{path}: lf-wrap init wrote a file that does not read back as YAML ({err}); "
                            "please report this") from None
    return written


def _blocked_by_file(path: Path) -> Path | None:
    """A file standing where a folder of `path` must be."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None
