"""The one recipe reader: every stage's YAML (training, merge, eval, search) goes through here.

- YAML through a safe loader; a key written twice, at any depth, is an error naming both lines
  (PyYAML would silently keep the last one).
- `--set KEY=VALUE` overrides, one grammar everywhere: dotted keys reach into sections
  (`--set engine.dtype=float32`), numbers index lists (`--set models.1.path=runs/x/adapter`),
  values are YAML scalars or flow collections (`--set weights=[0.5,0.5,0.5]`).
- Validation against the stage's pydantic schema, and one error format: `file:line: key:
  message` (the line where the key is written; `(--set KEY=VALUE)` when an override put it
  there), with pydantic's own prefixes removed and a "did you mean" for a near-miss key.

Precedence, lowest first: the schema's defaults < the recipe < `--set`."""

from __future__ import annotations

import copy
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lf_wrap.core.errors import UserError

Schema = TypeVar("Schema", bound=BaseModel)
KeyPath = tuple  # of str (mapping keys) and int (list indices)


# ---------------------------------------------------------------- near misses


def near(word: str, candidates, n: int = 3) -> list[str]:
    return difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=0.6)


def did_you_mean(word: str, candidates) -> str:
    """` (did you mean 'x'?)` for a near-miss of one of `candidates`, else ``."""
    matches = near(word, candidates)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


# ---------------------------------------------------------------- reading YAML


@dataclass
class RecipeText:
    """A recipe file as read: the mapping, the text verbatim, and the line of every key."""

    path: Path
    data: dict
    text: str
    lines: dict[KeyPath, int]

    def where(self, key: KeyPath) -> str:
        """`file:line` of a key (or of its closest written parent), else the file."""
        for end in range(len(key), 0, -1):
            if key[:end] in self.lines:
                return f"{self.path}:{self.lines[key[:end]]}"
        return str(self.path)


def _walk(node, prefix: KeyPath, lines: dict, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*prefix, key))
                raise UserError(f"{path}:{line}: key '{dotted}' appears twice (lines {seen[key]} and {line}); "
                                "keep one")
            seen[key] = line
            lines[(*prefix, key)] = line
            _walk(value_node, (*prefix, key), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*prefix, index)] = item.start_mark.line + 1
            _walk(item, (*prefix, index), lines, path)


def read_yaml(path: Path, what: str, shape: str) -> RecipeText:
    """Read a recipe file: a YAML mapping with no key written twice. `what` names the file in
    errors ("eval recipe"); `shape` says what the mapping should hold."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); a {what} is a YAML file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} ({err.strerror})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[KeyPath, int] = {}
        _walk(node, (), lines, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"{path}{at}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {shape}")
    return RecipeText(path=path, data=data, text=text, lines=lines)


# ---------------------------------------------------------------- --set KEY=VALUE


@dataclass(frozen=True)
class Override:
    """One `--set KEY=VALUE`, parsed: the key as a path, the value as YAML read it."""

    given: str          # as typed
    key: KeyPath        # ("engine", "dtype"), ("models", 1, "path")
    value: Any

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.key)


def parse_override(pair: str, example: str = "engine.dtype=float32") -> Override:
    key, sep, text = pair.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {pair!r}: expected key=value, dotted keys into sections (e.g. --set {example})")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    return Override(given=pair, key=parts, value=value)


def parse_overrides(pairs, example: str = "engine.dtype=float32") -> list[Override]:
    return [parse_override(p, example) for p in pairs]


def apply_override(data: dict, override: Override) -> None:
    """Set `override.key` in `data`: a missing section is created, a list is indexed in place."""
    node: Any = data
    for depth, part in enumerate(override.key):
        last = depth == len(override.key) - 1
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise UserError(f"--set {override.given}: '{part}' is not an index of the {len(node)}-item list "
                                f"'{'.'.join(str(p) for p in override.key[:depth])}'")
            if last:
                node[part] = override.value
            else:
                node = node[part]
        elif isinstance(node, dict):
            key = str(part)
            if last:
                node[key] = override.value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            parent = ".".join(str(p) for p in override.key[:depth])
            raise UserError(f"--set {override.given}: '{parent}' is a value, not a section")


# ---------------------------------------------------------------- validating


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_at(schema: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of `loc` (for "did you mean" and its keys)."""
    current: Any = schema
    for part in loc:
        if _is_model(current):
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        else:
            current = _unwrap(current)
        if current is None:
            return None
    return current if _is_model(current) else _unwrap(current)


def _unwrap(annotation: Any) -> Any:
    """Step into list[X] / dict[str, X] / X | None to reach the model X (None if there is none)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return next((found for found in (_unwrap(a) if typing.get_origin(a) else a for a in args)
                     if _is_model(found)), None)
    if origin in (list, tuple) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return annotation if _is_model(annotation) else None


def format_validation_error(err: ValidationError, schema: type[BaseModel], recipe: RecipeText | None,
                            source: str, overrides: list[Override] = ()) -> str:
    """The first problem as `file:line: key: message`, no library prefixes."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    dotted = ".".join(str(p) for p in loc)
    message = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    head, sep, rest = message.partition(": ")
    if not loc and sep and head in schema.model_fields:   # a model validator naming its key
        loc, message = (head,), rest
        dotted = head
    if first["type"] == "extra_forbidden":
        owner = _model_at(schema, loc[:-1]) or schema
        section = ".".join(str(p) for p in loc[:-1])
        keys = [info.alias or name for name, info in owner.model_fields.items()]
        message = (f"not a key of {f'the {section} section' if section else 'the recipe'}"
                   f"{did_you_mean(str(loc[-1]), keys)}; its keys: {', '.join(keys)}")
    elif first["type"] == "missing":
        message = "required, and not given"
    setter = next((o for o in reversed(overrides) if loc[:len(o.key)] == o.key or o.key[:len(loc)] == loc), None)
    if setter is not None:
        where = f"{source} (--set {setter.given})"
    elif recipe is not None:
        where = recipe.where(loc)
    else:
        where = source
    return f"{where}: {dotted + ': ' if dotted else ''}{message}"


def validate(schema: type[Schema], data: dict, source: str, recipe: RecipeText | None = None,
             overrides: list[Override] = ()) -> Schema:
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, schema, recipe, source, overrides)) from None


def read_recipe(path: Path, schema: type[Schema], overrides=(), what: str = "recipe",
                shape: str = "a recipe is a YAML mapping") -> tuple[Schema, RecipeText]:
    """Read, override and validate one recipe: (the typed config, the file as read)."""
    recipe = read_yaml(path, what, shape)
    parsed = [o if isinstance(o, Override) else parse_override(o) for o in overrides]
    data = copy.deepcopy(recipe.data)
    for override in parsed:
        apply_override(data, override)
    return validate(schema, data, str(recipe.path), recipe, parsed), recipe
