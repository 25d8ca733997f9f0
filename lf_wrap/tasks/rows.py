"""A source row -> an instruction row (alpaca: `instruction`, `input`, `output`), as a task
file declares it. Everything here is generic: the study's three tasks are three task files.

A field is a column name or a dotted path into one (`translation.zh`, `answers.text`; a number
indexes a list); a name under the task's `fields` stands for its paths, the first of which a
row has (non-null first key) being read. A slot's value must be text (a number is written as
it reads, `3`); a reference may also be a list of texts (several references). What is wrong
with a row is a RowError naming the key; the caller says which row."""

from __future__ import annotations

from dataclasses import dataclass

from lf_wrap.tasks.spec import TaskFile, parse_template


class RowError(ValueError):
    """A source row lacks a field or has the wrong shape; the message names the key."""


def _walk(row: dict, path: str):
    node = row
    parts = path.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth + 1])
        if isinstance(node, dict):
            if part not in node:
                raise RowError(f"missing key '{here}'")
            node = node[part]
        elif isinstance(node, list) and part.isdigit():
            if int(part) >= len(node):
                raise RowError(f"key '{here}': the list has {len(node)} items")
            node = node[int(part)]
        else:
            above = ".".join(parts[:depth])
            raise RowError(f"key '{above}' must be an object holding '{part}', got {type(node).__name__}")
        if node is None:
            raise RowError(f"key '{here}' is null")
    return node


def field_value(spec: TaskFile, row: dict, field: str):
    """The value of `field` in `row`: the first of its paths whose first key the row has."""
    paths = spec.paths(field)
    for path in paths:
        if row.get(path.split(".")[0]) is not None:
            return _walk(row, path)
    first = paths[0].split(".")[0]
    if first in row and len(paths) == 1:
        raise RowError(f"key '{first}' is null")
    others = f" (or {', '.join(repr(p) for p in paths[1:])})" if len(paths) > 1 else ""
    raise RowError(f"missing key '{paths[0]}'{others}")


def as_text(value, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"key '{field}' must be a string, got {type(value).__name__}")


def render(template: str, spec: TaskFile, row: dict) -> str:
    return "".join(literal if field is None else as_text(field_value(spec, row, field), field)
                   for literal, field in parse_template(template))


def references(spec: TaskFile, row: dict) -> tuple[list[str], bool]:
    """(the row's references, whether they are a list: several references, or none)."""
    out: list[str] = []
    several = isinstance(spec.response, list)
    for field in spec.references():
        value = field_value(spec, row, field)
        if isinstance(value, list):
            several = True
            out += [as_text(item, f"{field} item") for item in value]
        else:
            out.append(as_text(value, field))
    return out, several


def is_empty(value) -> bool:
    if isinstance(value, list):
        return not any(isinstance(v, str) and v.strip() for v in value)
    return isinstance(value, str) and not value.strip()


@dataclass
class Rendered:
    """One source row as an instruction row, and what the filters need to know about it."""

    alpaca: dict
    empty: bool              # a `non_empty` field, or the reference, is empty
    unanswerable: bool       # no reference, in a task with the no-answer rule
    keyword_texts: tuple[str, ...]


def render_row(spec: TaskFile, row: dict, no_answer: bool, no_answer_text: str | None) -> Rendered:
    """The alpaca row: instruction (the prompt), input, output (the first reference, or the
    no-answer text), `answers` (every reference) when the response is a list, `system` when the
    task has one. `no_answer`: the task's metric has the no-answer rule ([] = unanswerable)."""
    empty = any(is_empty(field_value(spec, row, field)) for field in spec.non_empty)
    refs, several = references(spec, row)
    unanswerable = no_answer and several and not refs
    if not unanswerable and is_empty(refs):
        empty = True
    alpaca = {"instruction": render(spec.prompt, spec, row), "input": render(spec.input, spec, row)}
    if spec.system is not None:
        alpaca["system"] = render(spec.system, spec, row)
    alpaca["output"] = refs[0] if refs else (no_answer_text or "")
    if several:
        alpaca["answers"] = refs
    keywords = spec.keyword_filter.fields if spec.keyword_filter is not None else []
    texts = tuple(as_text(field_value(spec, row, field), field) for field in keywords)
    return Rendered(alpaca, empty, unanswerable, texts)
