"""Command-line options generated from a recipe model's fields, as mergekit's `add_merge_options`
generates its options from MergeOptions: a key added to the schema, with its docstring, is an
option of the command with no edit here.

The rules, from each field's annotation:
- a number, a string or a path: `--key VALUE` of that type; a Literal: a choice;
- a list of numbers: `--key 0.3,0.3,0.4` (comma-separated);
- a mapping: `--key KEY=VALUE`, repeatable (the value read as YAML: 0.5 is a number);
- a boolean: a flag.
The option is the field's alias (or name) with dashes; its help, the field's docstring; a field
whose json_schema_extra has `option` is spelled so (MergeConfig.params: `--param`). A value not
given is the schema's default (shown in --help) or left out: the command and the recipe agree
by construction. A command may add choices (the merge methods) or text to a help where the schema
validates a plain string."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel

from lf_wrap.core.errors import UserError


def _plain(annotation):
    """The annotation without `| None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _numbers(flag: str):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return [float(part) for part in value.split(",")]
        except ValueError:
            raise UserError(f"{flag} {value!r}: expected numbers separated by commas, e.g. 0.3,0.3,0.4") from None
    return parse


def _pairs(flag: str):
    def parse(ctx, param, value):
        import yaml

        pairs = {}
        for pair in value:
            key, sep, text = pair.partition("=")
            if not sep or not key.strip() or not text.strip():
                raise UserError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} alpha=0.5")
            try:
                pairs[key.strip()] = yaml.safe_load(text)
            except yaml.YAMLError:
                pairs[key.strip()] = text
        return pairs or None
    return parse


def field_option(name: str, field, choices=None, help_text: str | None = None):
    """The click option of one pydantic field."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = "--" + str(extra.get("option") or field.alias or name).replace("_", "-")
    annotation = _plain(field.annotation)
    origin = typing.get_origin(annotation)
    text = help_text or " ".join((field.description or "").split())
    default = None if field.is_required() else field.default
    kwargs: dict[str, Any] = {"help": text, "default": None}
    if isinstance(default, (str, int, float)) and not isinstance(default, bool):
        kwargs.update(default=default, show_default=True)     # the schema's default, shown as click shows one
    if field.is_required():
        kwargs["required"] = True
    if choices is not None:
        kwargs["type"] = click.Choice(list(choices))
    elif origin is Literal:
        kwargs["type"] = click.Choice([str(c) for c in typing.get_args(annotation)])
    elif annotation is bool:
        return click.option(flag, name, is_flag=True, default=None, help=text)
    elif origin is list:
        kwargs["callback"] = _numbers(flag)
    elif origin is dict:
        kwargs.update(multiple=True, metavar="KEY=VALUE", callback=_pairs(flag), default=())
    elif annotation in (int, float):
        kwargs["type"] = annotation
    elif annotation is Path:
        kwargs["type"] = click.Path(path_type=Path)
    return click.option(flag, name, **kwargs)


def recipe_options(model: type[BaseModel], skip=(), choices: dict | None = None, helps: dict | None = None):
    """A decorator adding one option per field of `model` (in the schema's order), but `skip`."""
    def decorate(command):
        for name, field in reversed(list(model.model_fields.items())):
            if name not in skip:
                command = field_option(name, field, (choices or {}).get(name), (helps or {}).get(name))(command)
        return command
    return decorate


def given(model: type[BaseModel], values: dict) -> dict:
    """The options given, keyed as the recipe spells them (aliases: `as`); the others left to the
    schema's defaults."""
    out = {}
    for name, value in values.items():
        if value is None or name not in model.model_fields:
            continue
        field = model.model_fields[name]
        out[field.alias or name] = str(value) if isinstance(value, Path) else value
    return out
