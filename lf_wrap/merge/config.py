"""The settings of one merge: one pydantic model for `lf-wrap merge adapters` and for a merge
recipe (recipes/merge.yaml), validated before anything is read.

Like mergekit's config.py: the recipe is plain YAML (yaml.safe_load), keys named as on the
command line (`as` is the output form), `--set key=value` overrides applied on top, and the
first problem reported as one line naming the file and the key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lf_wrap.core.errors import UserError
from lf_wrap.core.recipes import read_yaml_mapping
from lf_wrap.merge.methods import METHODS


class MergeConfig(BaseModel):
    """One merge: the keys of recipes/merge.yaml, and the options of `lf-wrap merge adapters`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    adapters: list[str] = Field(min_length=1)
    base: str | None = None
    method: str = "sum"
    weights: list[float] | None = None
    density: float | None = None
    seed: int | None = None
    rank: int | None = None
    output_form: Literal["model", "adapter"] = Field("model", alias="as")
    out: str
    template: str = "qwen"

    @model_validator(mode="after")
    def _method_parameters(self):
        if self.method not in METHODS:
            raise ValueError(f"method: unknown merge method {self.method!r}; choose one of: {', '.join(METHODS)}")
        method, name = METHODS[self.method], self.method
        if self.weights is not None:
            if not method.weighted:
                raise ValueError("weights: `sum` adds every adapter at weight 1; use method linear to weight them")
            if len(self.weights) != len(self.adapters):
                raise ValueError(f"weights: {len(self.weights)} weights for {len(self.adapters)} adapters")
            if not all(math.isfinite(w) for w in self.weights):
                raise ValueError("weights: every weight must be a finite number")
        if method.density and self.density is None:
            raise ValueError(f"density: method {name} needs a density (fraction of each delta kept) in (0, 1]")
        if not method.density and self.density is not None:
            raise ValueError(f"density: method {name} keeps every entry; only ties and dare_* take a density")
        if self.density is not None and not 0 < self.density <= 1:
            raise ValueError(f"density: {self.density} is not in (0, 1]")
        if self.seed is not None and not method.seeded:
            raise ValueError(f"seed: method {name} draws nothing at random; only dare_* take a seed")
        if self.rank is not None:
            if self.output_form != "adapter" or method.exact_adapter:
                raise ValueError("rank: only for ties/dare_* with `as: adapter` (sum and linear adapters are exact)")
            if self.rank < 1:
                raise ValueError(f"rank: {self.rank} is not a positive integer")
        return self


def parse_config(data: dict[str, Any], source: str) -> MergeConfig:
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{source}: {where + ': ' if where else ''}{message}") from None


def load_recipe(path: Path, overrides: tuple[str, ...] = ()) -> tuple[MergeConfig, str]:
    """A merge recipe (yaml.safe_load) with `--set key=value` applied; and its text, verbatim."""
    path = Path(path)
    data, text = read_yaml_mapping(path, "recipe", "a merge recipe is a YAML mapping (adapters:, method:, out: ...)")
    for pair in overrides:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: expected key=value (e.g. --set method=linear)")
        try:
            data[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            data[key.strip()] = value
    return parse_config(data, str(path)), text
