"""Validation rows -> the prompts, references and token ids an engine generates from.

The datasets are the prepared alpaca files named in dataset_info.json (as LLaMA-Factory reads
them); the prompt is the training prompt (lf_wrap.tasks.prompts, with the row's `system`
where its task file gives one); the task is the eval recipe's (TaskEntry: found from the task
file the set was prepared from); the references are what the row's `output` says, or its
`answers` list when the row carries one. For a no-answer task (qa, or a
task of your own scored with squad_v2), an `output` equal to the dataset's no-answer text
(manifest: filters.no_answer_text) means "unanswerable": references []."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lf_wrap.tasks import prompts
from lf_wrap.data.dataset_info import INFO_FILE, match_name, read_info, read_manifest, resolve_dataset
from lf_wrap.core.errors import UserError
from lf_wrap.evaluation.recipe import EvalRecipe, TaskEntry
from lf_wrap.core.files import sha256_file
from lf_wrap.tasks import DEFAULT_NO_ANSWER_TEXT, Task


@dataclass
class TaskData:
    task: str
    dataset: str              # the registered name (wildcards resolved)
    file: Path
    sha256: str
    rows: list[dict]
    no_answer_text: str | None = None
    definition: Task | None = None    # how the task is scored (the study's, or declared in the recipe)


@dataclass
class Request:
    """One row of one task, as every model of an engine group is asked it."""

    task: str
    row: int                  # index in the dataset file
    id: str
    prompt: str               # rendered text (hashed into prompt_sha256)
    prompt_sha256: str
    references: list[str]
    token_ids: list[int] = field(default_factory=list)
    truncated: bool = False


def resolve_name(dataset_dir: Path, pattern: str, task: str) -> str:
    info = read_info(dataset_dir)
    if not info:
        raise UserError(f"tasks.{task}.dataset: {Path(dataset_dir) / INFO_FILE} is missing or empty; "
                        "prepare the validation sets first (`make data` or `lf-wrap data prepare`)")
    name = match_name(dataset_dir, pattern, f"tasks.{task}.dataset")
    resolve_dataset(dataset_dir, name)   # clear error if unknown or its file is gone
    return name


def _no_answer_text(dataset_dir: Path, name: str, entry: TaskEntry) -> str:
    if entry.no_answer_text is not None:
        return entry.no_answer_text
    filters = (read_manifest(dataset_dir, name) or {}).get("filters")
    text = filters.get("no_answer_text") if isinstance(filters, dict) else None
    return text or DEFAULT_NO_ANSWER_TEXT


def load_task(recipe: EvalRecipe, task: str, limit: int | None = None) -> TaskData:
    entry = recipe.tasks[task]
    name = resolve_name(recipe.dataset_dir, entry.dataset, task)
    file = resolve_dataset(recipe.dataset_dir, name)
    try:
        rows = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{file}: cannot read dataset '{name}' ({err})") from None
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{file}: dataset '{name}' must be a non-empty JSON array of alpaca rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) \
                or not isinstance(row.get("output"), str):
            raise UserError(f"{file}: row {i}: an alpaca row needs string 'instruction' and 'output'")
    definition = recipe.task_definition(task)
    no_answer = _no_answer_text(recipe.dataset_dir, name, entry) if definition.no_answer else None
    rows = rows[:limit] if limit else rows
    if not definition.no_answer:    # refused here, not by the scorer after every row was generated
        for i, row in enumerate(rows):
            if not references_of(row, None):
                raise UserError(f"{file}: row {i}: task '{task}' (metric {definition.metric}) needs at least one "
                                "reference, and its 'answers' is [] ([] means unanswerable, for qa or a task "
                                "scored with squad_v2 only)")
    return TaskData(task, name, file, sha256_file(file), rows, no_answer, definition)


def references_of(row: dict, no_answer_text: str | None) -> list[str]:
    """The row's `answers` list, else [its `output`]; [] when the output is the no-answer text
    (given only for a no-answer task)."""
    answers = row.get("answers")
    if isinstance(answers, list) and all(isinstance(a, str) for a in answers):
        return list(answers)
    if no_answer_text is not None and row["output"] == no_answer_text:
        return []
    return [row["output"]]


def build_requests(data: TaskData, template: str) -> list[Request]:
    out = []
    for i, row in enumerate(data.rows):
        system = row.get("system") if isinstance(row.get("system"), str) else None   # a task file's `system`
        text = prompts.render_prompt(row, template, system)
        out.append(Request(task=data.task, row=i, id=str(row.get("id", i)), prompt=text,
                           prompt_sha256=prompts.prompt_hash(text),
                           references=references_of(row, data.no_answer_text)))
    return out


def tokenize_requests(requests: list[Request], tokenizer, template: str, max_model_len: int,
                      max_new_tokens: int, policy: str) -> list[Request]:
    """Fill token ids; return the requests that do not fit (skipped under policy "skip").

    A prompt fits when prompt + max_new_tokens <= max_model_len, so that every answer may use
    its whole token budget; under "truncate" the query is cut from its end instead."""
    budget = max_model_len - max_new_tokens
    if budget < 1:
        raise UserError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in "
                        f"engine.max_model_len {max_model_len}")
    suffix = prompts.encode_prompt(tokenizer, prompts.get_template(template).suffix())
    too_long = []
    for request in requests:
        ids = prompts.encode_prompt(tokenizer, request.prompt)
        if len(ids) > budget:
            if policy == "skip":
                too_long.append(request)
                continue
            ids = prompts.truncate_prompt(ids, suffix, budget)
            request.truncated = True
        request.token_ids = ids
    return too_long


def live_requests(data: TaskData, recipe: EvalRecipe, tokenizer,
                  max_new_tokens: int) -> tuple[list[Request], list[Request]]:
    """(the requests an engine generates, the prompts too long for it): rendered, tokenized and
    filtered under the recipe's template, max_model_len and long_prompts policy. What `lf-wrap
    eval` asks each model, and what `lf-wrap merge search` scores candidates on."""
    requests = build_requests(data, recipe.template)
    too_long = tokenize_requests(requests, tokenizer, recipe.template, recipe.engine.max_model_len,
                                 max_new_tokens, recipe.long_prompts)
    skipped = {r.row for r in too_long}
    return [r for r in requests if r.row not in skipped], too_long
