"""The settings of one merge: one pydantic model for `lf-wrap merge adapters` and for a merge
recipe (recipes/merge.yaml), validated before anything is read.

Like mergekit's config.py: the recipe is plain YAML, keys named as on the command line (`as` is
the output form); read, overridden and checked by the one recipe reader (lf_wrap.core.recipes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

from lf_wrap.core.recipes import read_recipe, validate
from lf_wrap.merge import blocks
from lf_wrap.merge.methods import METHODS

# One adapter's weight: a number, one number per block of layers, or per kind (lf_wrap.merge.blocks).
# Strict numbers: YAML's `true` or a quoted "0.5" is a typo to show, not a weight of 1.0 or 0.5.
Weight = StrictFloat | list[StrictFloat] | dict[str, StrictFloat | list[StrictFloat]]


class MergeConfig(BaseModel):
    """One merge: the keys of recipes/merge.yaml, and the options of `lf-wrap merge adapters`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)

    adapters: list[str] = Field(min_length=1)
    """LoRA adapter folders, merged in this order."""
    base: str | None = None
    """Base model folder or Hub id (default: the adapters' base_model_name_or_path)."""
    method: str = "sum"
    """The merge method (lf_wrap.merge.methods)."""
    space: Literal["full", "knots", "core"] = "full"
    """Where the method runs (lf_wrap.merge.spaces): full (the m x n deltas), knots (the deltas
    aligned in one SVD basis) or core (R x R core matrices of the LoRA factors, R the summed rank:
    the fastest, and `as: adapter` is exact for every method). Recorded only when not full."""
    isotropize: bool = False
    """Core space only: the merged core matrix's singular values replaced by their mean (the Core
    Space paper's optional step, Iso-C's flat spectrum after any method)."""
    weights: list[Weight] | None = None
    """One weight per adapter, comma-separated (not for sum). In a recipe, each may also be
    layer-wise: a list of block weights, or per kind {attention: ..., mlp: ...} (lf_wrap.merge.blocks)."""
    density: float | None = None
    """ties/dare_*/knots: fraction of each delta kept, in (0, 1]."""
    seed: int | None = None
    """dare_*: seed of the random drop (default 0)."""
    params: dict[str, float | str] = Field({}, json_schema_extra={"option": "param"})
    """Named hyper-parameters of the method (alpha, task_fraction, common_fraction, merge); resolved
    here, defaults filled in, so merge_config.yaml records every value used."""
    rank: int | None = None
    """Full or knots space, methods other than sum/linear, --as adapter: SVD rank (default: sum of the
    adapters' ranks)."""
    output_form: Literal["model", "adapter"] = Field("model", alias="as")
    """Write a full model folder, or one LoRA adapter (vLLM, PEFT, LLaMA-Factory)."""
    template: str = "qwen"
    """LLaMA-Factory template for `sum --as model` (the export writes its chat template)."""
    out: str
    """Output folder."""

    @field_validator("weights", mode="before")
    @classmethod
    def _numbers_only(cls, weights):
        """A boolean or a string among the weights is named, with its place (pydantic would read
        YAML's `true` as 1.0 and "0.5" as 0.5)."""
        if isinstance(weights, list):
            for i, weight in enumerate(weights):
                places = weight.items() if isinstance(weight, dict) else [(None, weight)]
                for kind, value in places:
                    for value in value if isinstance(value, list) else [value]:
                        if isinstance(value, (bool, str)):
                            where = f"adapter {i + 1}" + (f", {kind}" if kind is not None else "")
                            raise ValueError(f"{json.dumps(value)} ({where}) is not a number; write the weight as "
                                             "a number (e.g. 1.0 or 0.5, unquoted)")
        return weights

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
            if not all(math.isfinite(v) for v in _numbers(self.weights)):
                raise ValueError("weights: every weight must be a finite number")
            try:
                blocks.check_form(self.weights)
            except ValueError as err:
                raise ValueError(f"weights: {err}") from None
        if self.space not in method.spaces:
            raise ValueError(f"space: method {name} runs only in {' and '.join(method.spaces)} space, not in "
                             f"{self.space}" + (f" ({method.spaces_note})" if method.spaces_note else ""))
        if self.isotropize and self.space != "core":
            raise ValueError(f"isotropize: only in core space (space: core); this merge runs in {self.space} space "
                             "(in full space, method iso_c flattens the spectrum)")
        if self.params and not method.params:
            raise ValueError(f"params: method {name} takes no hyper-parameters; "
                             f"{', '.join(n for n, m in METHODS.items() if m.params)} do")
        self.params = method.resolve(self.params, len(self.adapters))
        takes_density = method.takes_density(self.params)
        if takes_density and self.density is None:
            raise ValueError(f"density: method {name} needs a density (fraction of each delta kept) in (0, 1]")
        if not takes_density and self.density is not None:
            if method.density:
                raise ValueError(f"density: method {name} with merge {self.params['merge']} keeps every entry; "
                                 "only its merge ties takes a density")
            raise ValueError(f"density: method {name} keeps every entry; only ties, dare_* and knots take a density")
        if self.density is not None and not 0 < self.density <= 1:
            raise ValueError(f"density: {self.density} is not in (0, 1]")
        if self.seed is not None and not method.seeded:
            raise ValueError(f"seed: method {name} draws nothing at random; only dare_* take a seed")
        if self.rank is not None:
            if self.space == "core":
                raise ValueError("rank: core space writes its exact adapter, of rank the sum of the adapters' ranks; "
                                 "leave rank out")
            if self.output_form != "adapter" or method.exact_adapter:
                raise ValueError("rank: only for non-linear methods with `as: adapter` (sum and linear adapters "
                                 "are exact)")
            if self.rank < 1:
                raise ValueError(f"rank: {self.rank} is not a positive integer")
        return self


def _numbers(weights) -> list[float]:
    """Every number in a `weights` list, whatever its form."""
    out = []
    for weight in weights:
        for value in (weight.values() if isinstance(weight, dict) else [weight]):
            out += value if isinstance(value, list) else [value]
    return out


def parse_config(data: dict[str, Any], source: str) -> MergeConfig:
    """Settings given on the command line (`lf-wrap merge adapters`), checked like a recipe's."""
    return validate(MergeConfig, data, source)


def load_recipe(path: Path, overrides: tuple[str, ...] = ()) -> tuple[MergeConfig, str]:
    """A merge recipe with `--set KEY=VALUE` applied (lf_wrap.core.recipes); and its text, verbatim."""
    config, read = read_recipe(path, MergeConfig, overrides, what="merge recipe",
                               shape="a merge recipe is a YAML mapping (adapters:, method:, out: ...)")
    return config, read.text
