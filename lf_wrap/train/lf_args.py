"""What LLaMA-Factory's `train` command accepts, asked of the installed LLaMA-Factory itself.

`llamafactory-cli train` parses its YAML with HfArgumentParser over five dataclasses (model,
data, training, fine-tuning, generation arguments) and rejects any other key, but only after
it has spent a minute importing and loading. lf-wrap checks a recipe before launching, so it
needs the same field list, and a copied list would drift with every LLaMA-Factory release.
The two environments cannot share a process, so a small script runs in the training
environment's Python and prints every field with a simplified type; the answer is cached for
the life of the lf-wrap process (one import of LLaMA-Factory costs about ten seconds)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lf_wrap.core.environments import training_python
from lf_wrap.core.errors import UserError
from lf_wrap.core.recipes import did_you_mean

# Runs in the training environment. Types are reduced to the YAML kinds a value may take
# (bool, int, float, str, list, dict, null, any) plus, where LLaMA-Factory or transformers
# accept only some strings (Literal, Enum, transformers' `Enum | str` idiom), those strings.
MARKER = "LF_WRAP_ARGS_JSON "   # LLaMA-Factory logs to stdout too: our answer is the marked line
INTROSPECT = f"MARKER = {MARKER!r}\n" + r'''
import dataclasses, enum, json, pathlib, sys, types, typing
from importlib import metadata
from llamafactory.hparams import parser
from llamafactory.hparams import (DataArguments, FinetuningArguments, GeneratingArguments,
                                  ModelArguments, TrainingArguments)

classes = getattr(parser, "_TRAIN_ARGS", None) or [
    ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments]
SCALARS = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null"}

def describe(tp):
    """(kinds, choices or None, free_str): choices restrict strings unless a bare str is allowed."""
    origin = typing.get_origin(tp)
    if tp in SCALARS:
        return {SCALARS[tp]}, [], tp is str
    if origin in (typing.Union, types.UnionType):
        kinds, choices, free, has_enum = set(), [], False, False
        for arg in typing.get_args(tp):
            k, c, f = describe(arg)
            kinds |= k; choices += c; free = free or f
            has_enum = has_enum or (isinstance(arg, type) and issubclass(arg, enum.Enum))
        return kinds, choices, free and not has_enum
    if origin is typing.Literal:
        values = list(typing.get_args(tp))
        return {SCALARS.get(type(v), "any") for v in values}, [v for v in values if isinstance(v, str)], False
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"str"}, [str(m.value) for m in tp], False
    if tp in (list, tuple, set) or origin in (list, tuple, set):
        return {"list"}, [], False
    if tp is dict or origin is dict:
        return {"dict"}, [], False
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        return {"str"}, [], True
    return {"any"}, [], True

fields = {}
for cls in classes:
    resolved = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in fields:
            continue
        kinds, choices, free = describe(resolved.get(f.name, f.type))
        fields[f.name] = {"group": cls.__name__, "kinds": sorted(kinds),
                          "choices": None if free or not choices else choices}

versions = {}
for name in ("llamafactory", "transformers", "peft", "torch", "trl", "accelerate", "datasets", "deepspeed"):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
print("\n" + MARKER + json.dumps({"fields": fields, "versions": versions, "python": sys.executable}))
'''


@dataclass(frozen=True)
class FieldSpec:
    name: str
    group: str                 # the LLaMA-Factory dataclass that owns the key
    kinds: tuple[str, ...]     # YAML kinds accepted: bool int float str list dict null any
    choices: tuple[str, ...] | None  # the only strings accepted, where LF restricts them


@dataclass(frozen=True)
class LfSchema:
    fields: dict[str, FieldSpec]
    versions: dict[str, str | None]
    python: str


@lru_cache(maxsize=4)
def _ask(python: str) -> LfSchema:
    try:
        done = subprocess.run([python, "-c", INTROSPECT], check=False, capture_output=True, text=True,
                              timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"could not ask LLaMA-Factory for its arguments with {python}: {err}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise UserError(f"could not ask LLaMA-Factory for its arguments ({python} exited with code "
                        f"{done.returncode}); is llamafactory installed there?\n{tail}")
    answer = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if not answer:
        raise UserError(f"{python} gave no list of LLaMA-Factory arguments; its output ends with:\n"
                        + "\n".join(done.stdout.splitlines()[-10:]))
    data = json.loads(answer[-1][len(MARKER):])
    fields = {name: FieldSpec(name=name, group=f["group"], kinds=tuple(f["kinds"]),
                              choices=tuple(f["choices"]) if f["choices"] else None)
              for name, f in data["fields"].items()}
    return LfSchema(fields=fields, versions=data["versions"], python=data["python"])


def lf_schema() -> LfSchema:
    """The argument fields and package versions of the installed LLaMA-Factory (cached)."""
    return _ask(str(training_python()))


def _as_number(value: str) -> int | float | None:
    """YAML 1.1 (PyYAML) reads `5e-6` as a string; LLaMA-Factory's OmegaConf reads it as a float."""
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            continue
    return None


def _kind(value: Any) -> str:
    for python_type, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"),
                              (list, "list"), (dict, "dict"), (type(None), "null")):
        if isinstance(value, python_type):
            return kind
    return type(value).__name__


def check_value(spec: FieldSpec, value: Any) -> tuple[Any, str | None]:
    """(value as LLaMA-Factory should get it, problem or None)."""
    kinds = set(spec.kinds)
    if "any" in kinds:
        return value, None
    kind = _kind(value)
    if kind == "str" and "str" not in kinds and kinds & {"int", "float"}:
        number = _as_number(value.strip())
        if number is not None and _kind(number) in kinds | ({"int"} if "float" in kinds else set()):
            return number, None
    if kind == "int" and "float" in kinds:
        return value, None      # an integer is a valid float (save_steps: 500)
    if kind not in kinds:
        wanted = " or ".join(k if k != "null" else "null (empty)" for k in spec.kinds)
        return value, f"expects {wanted}, got {kind} {value!r}"
    if kind == "str" and spec.choices is not None and value not in spec.choices:
        hint = did_you_mean(value, spec.choices) or f" (one of: {', '.join(spec.choices)})"
        return value, f"{value!r} is not an accepted value{hint}"
    return value, None


def check_args(args: dict[str, Any], origin: dict[str, str], schema: LfSchema) -> dict[str, Any]:
    """Check every key and value against LLaMA-Factory's dataclasses; return the coerced args.

    `origin` names where each key came from (the recipe file, `--smoke`, `--set`) so that the
    message points at the line to fix. All problems are reported together, in one message."""
    problems, checked = [], {}
    for key, value in args.items():
        where = origin.get(key, "recipe")
        spec = schema.fields.get(key)
        if spec is None:
            problems.append(f"{where}: '{key}' is not a LLaMA-Factory training argument"
                            f"{did_you_mean(key, schema.fields)}")
            continue
        checked[key], problem = check_value(spec, value)
        if problem:
            problems.append(f"{where}: {key} ({spec.group}) {problem}")
    if problems:
        raise UserError(problems[0] if len(problems) == 1
                        else f"{len(problems)} problems:\n  " + "\n  ".join(problems))
    return checked
