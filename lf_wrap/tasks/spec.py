"""A task file: the one place a task is declared (YAML, read by the one recipe reader).

    name: sentiment                                   # letters, digits, . _ - (it names files)
    prompt: "Is this review positive or negative?\\n{review}"   # {field} slots of a source row
    response: label                                   # the reference: a field, a list of fields, or a list-valued field
    metric: exact_match                               # a shipped metric family, or path/to/file.py:function
    max_new_tokens: 4

and, where a task needs them: `fields` (names for nested or alternative paths, `translation.zh`),
`input` and `system` (more templates), `non_empty` (rows with an empty field are dropped),
`keyword_filter`, `no_answer_text` (the target of an unanswerable row, for a metric with the
no-answer rule), `source` (the Hub id and config it usually comes from) and `dataset_name`.
docs/tasks.md describes every key. Relative paths in a task file (a metric of your own, a
keyword list) are relative to the task file's folder.

This module only says what a valid declaration is; lf_wrap.tasks.rows turns a source row into an
instruction row with it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lf_wrap.core.errors import UserError

# A task or model name names files (predictions/<model>/<task>.jsonl). Matched whole with
# `fullmatch`: with `match`, a `$` also matches before a final newline, and "mytask\n" passed.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME = 100        # `.<name>.scores.jsonl.<8>.tmp` must fit a file system's 255 bytes, with room to spare
# Files a task keeps beside its predictions `<task>.jsonl`: `<task>.scores.jsonl`, `<task>.meta.json`.
# A task named `qa.scores` would have its predictions where task qa keeps its scores.
RESERVED_SUFFIXES = (".scores", ".meta")


def name_problem(name: str) -> str | None:
    """What is wrong with a task or model name (they name files and folders), or None. One rule
    for task files, eval recipe keys, `--task`/`--metric` names and model names."""
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        return (f"{name!r} is not a plain name: letters, digits, '.', '_' and '-', starting with a letter or digit "
                "(it names files)")
    if len(name) > MAX_NAME:
        return f"'{name[:20]}...' is {len(name)} characters long; a name has at most {MAX_NAME} (it names files)"
    suffix = next((s for s in RESERVED_SUFFIXES if name.endswith(s)), None)
    if suffix:
        return (f"{name!r} ends in '{suffix}': {name}.jsonl is where task '{name[:-len(suffix)]}' keeps its "
                f"{'per-row scores' if suffix == '.scores' else 'generation settings'}; choose another name")
    return None
DEFAULT_NO_ANSWER_TEXT = "unanswerable"
DATASET_NAME_SLOTS = ("name", "split", "rows")


# ---------------------------------------------------------------- templates


def parse_template(text: str) -> list[tuple[str, str | None]]:
    """`text` as (literal, None) and (None, field) parts: `{field}` is a slot, `{{` and `}}` are
    a literal brace. ValueError for an unmatched brace or an empty slot."""
    parts: list[tuple[str, str | None]] = []
    literal, i = [], 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i:i + 2] == char * 2:
            literal.append(char)
            i += 2
        elif char == "{":
            end = text.find("}", i)
            slot = text[i + 1:end] if end != -1 else ""
            if end == -1 or "{" in slot or not slot.strip():
                raise ValueError(f"bad slot at character {i + 1}: write {{field}} for a field, {{{{ and }}}} for a "
                                 "brace")
            if literal:
                parts.append(("".join(literal), None))
                literal = []
            parts.append(("", slot.strip()))
            i = end + 1
        elif char == "}":
            raise ValueError(f"unmatched '}}' at character {i + 1}: write }}}} for a brace")
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append(("".join(literal), None))
    return parts


def slots(text: str) -> list[str]:
    return [field for _, field in parse_template(text) if field is not None]


def check_path(path: str) -> str:
    """A dotted path into a row (`translation.zh`, `answers.text`, `answers.text.0`)."""
    if not isinstance(path, str) or not path or any(not part.strip() for part in path.split(".")):
        raise ValueError(f"{path!r} is not a field: a column name, or a dotted path into one (translation.zh)")
    return path


# ---------------------------------------------------------------- the schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class KeywordFilter(_Strict):
    fields: list[str] = Field(min_length=1)
    """The fields whose text is searched (case-insensitively)."""
    keywords: list[str] | str
    """The words, or a YAML file holding a `drop_keywords` list (relative to the task file)."""


class SourceHint(_Strict):
    hub_id: str | None = None
    """Where the task's data usually comes from; `data prepare` reads it when --source is left out."""
    config: str | None = None
    """The Hub config read when the source is a Hub id and --config is not given."""


class TaskFile(_Strict):
    """One task, as declared in its file."""

    name: str
    """Letters, digits, '.', '_' and '-' (it names files: predictions/<model>/<name>.jsonl)."""
    prompt: str
    """The instruction, with `{field}` slots filled from each source row."""
    response: str | list[str]
    """The reference: a field; a list of fields, or a list-valued field (several references:
    the first is the training target, all are scored)."""
    metric: str
    """bleu, chrf, rouge, exact_match, squad_v2, or a function of your own as path/to/file.py:function."""
    max_new_tokens: int = Field(256, ge=1, strict=True)
    """Greedy decoding stops at the template's stop word or after this many tokens (eval, search)."""
    system: str | None = None
    """A system prompt (LLaMA-Factory's `system` column); default: the template's own."""
    input: str = ""
    """The alpaca `input` column, a template like `prompt` (LLaMA-Factory joins it to the
    instruction with a newline)."""
    fields: dict[str, str | list[str]] = {}
    """Names for fields: a dotted path, or a list of paths of which the first one a source has is read."""
    non_empty: list[str] = []
    """Fields that must hold text: a row where one is empty (or only spaces) is dropped and counted."""
    keyword_filter: KeywordFilter | None = None
    """Drop a row whose fields contain any of the keywords."""
    no_answer_text: str | None = None
    """The target of a row with no reference (a list-valued response that is []): only for a
    metric with the no-answer rule (squad_v2), whose default is 'unanswerable'."""
    source: SourceHint = SourceHint()
    dataset_name: str = "alpaca_{name}_{split}_{rows}"
    """The default dataset name (`data prepare` without --name); slots {name}, {split}, {rows} (rows written)."""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not slots(value):
            raise ValueError("no {field} slot: the prompt must take at least one field of a source row")
        return value

    @field_validator("input", "system")
    @classmethod
    def _template(cls, value):
        if value is not None:
            parse_template(value)
        return value

    @field_validator("response")
    @classmethod
    def _response(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("name at least one field")
        for path in value if isinstance(value, list) else [value]:
            check_path(path)
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict) -> dict:
        for name, paths in value.items():
            if "." in name or not name.strip():
                raise ValueError(f"{name!r}: a field's name is one word (its paths may be dotted)")
            if isinstance(paths, list) and not paths:
                raise ValueError(f"{name}: give at least one path")
            for path in paths if isinstance(paths, list) else [paths]:
                check_path(path)
        return value

    @field_validator("non_empty")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [check_path(path) for path in value]

    @field_validator("dataset_name")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        unknown = [s for s in slots(value) if s not in DATASET_NAME_SLOTS]
        if unknown:
            raise ValueError(f"unknown slot {{{unknown[0]}}}; the slots are {{name}}, {{split}} and {{rows}}")
        return value

    @model_validator(mode="after")
    def _keyword_fields(self):
        if self.keyword_filter is not None:
            for path in self.keyword_filter.fields:
                check_path(path)
        return self

    def references(self) -> list[str]:
        return self.response if isinstance(self.response, list) else [self.response]

    def used(self) -> list[tuple[tuple, str]]:
        """Every field the declaration reads, with the key it is named under: (key, field)."""
        out = [(("prompt",), f) for f in slots(self.prompt)]
        out += [(("input",), f) for f in slots(self.input)]
        out += [(("system",), f) for f in slots(self.system or "")]
        out += [(("response",) if isinstance(self.response, str) else ("response", i), f)
                for i, f in enumerate(self.references())]
        out += [(("non_empty", i), f) for i, f in enumerate(self.non_empty)]
        if self.keyword_filter is not None:
            out += [(("keyword_filter", "fields", i), f) for i, f in enumerate(self.keyword_filter.fields)]
        return out

    def paths(self, field: str) -> list[str]:
        """The paths a field stands for: its `fields` entry, else the field itself."""
        paths = self.fields.get(field, field)
        return paths if isinstance(paths, list) else [paths]


def load_keywords(path: Path) -> list[str]:
    """A keyword list file: a YAML mapping with a `drop_keywords` list of non-empty strings."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read keyword list ({err})") from None
    words = data.get("drop_keywords") if isinstance(data, dict) else None
    if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
        raise UserError(f"{path}: key 'drop_keywords' must be a list of non-empty strings")
    return words
