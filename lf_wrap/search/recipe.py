"""The merge search's settings (`recipes/search.yaml`, or the options of the direct form
`lf-wrap merge search ADAPTER... --eval ...`): one pydantic model, read and overridden by the
one recipe reader (lf_wrap.core.recipes), validated before anything is loaded.

What a search needs that an eval recipe already says (the base, the template, the datasets,
max_new_tokens, the engine, the bootstrap) is read from the eval recipe named under `eval`,
never repeated here: the numbers a search reports are the numbers `lf-wrap eval` would."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StrictInt, field_validator, model_validator

from lf_wrap.core.recipes import read_recipe, validate
from lf_wrap.merge.methods import METHODS


# A field of SearchRecipe marked SPACE is part of what the optimiser searches (the manifest's
# `space`): a folder holding a search of another space is refused, naming the field. LAYOUT_SPACE:
# the same, but only when not at its default, so that searches from before the field keep theirs.
SPACE = {"space": "always"}
LAYOUT_SPACE = {"space": "unless_default"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)


class AdapterEntry(_Strict):
    path: str
    """A LoRA adapter folder (a specialist), trained on the eval recipe's base."""
    task: str | None = None
    """Its own task (a task of the eval recipe). Default: the task of its `lf-wrap train` run."""


class Range(_Strict):
    """Finite numbers only: an infinite bound or a NaN would pass a check and fail inside Optuna
    after the engine started."""

    low: FiniteFloat
    high: FiniteFloat
    step: FiniteFloat | None = Field(None, gt=0)
    """Values are low + k * step (readable candidates; a repeat is found and never scored twice)."""

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.step is not None and self.step > self.high - self.low + 1e-9:
            raise ValueError(f"step ({self.step}) is larger than the range {self.low}..{self.high}: only low would "
                             "ever be tried; lower step")
        return self


class WeightRange(Range):
    low: FiniteFloat = 0.0
    high: FiniteFloat = 1.5
    step: FiniteFloat | None = Field(0.05, gt=0)


class DensityRange(Range):
    low: FiniteFloat = 0.1
    high: FiniteFloat = 1.0
    step: FiniteFloat | None = Field(0.1, gt=0)


class Rows(_Strict):
    """Which rows of each task the search scores candidates on, and which rows the final figures
    come from: never the same rows (a candidate chosen on rows is flattered by them)."""

    search: int = Field(100, ge=1)
    """Rows per task the candidates are scored on: a seeded draw from the eval recipe's dataset
    (or all of `search_datasets`' set, where one is named)."""
    report: int | None = Field(None, ge=1)
    """At most this many of the remaining rows are the report rows (default: all of them)."""
    seed: int = 0
    """Seed of the draw, and of the folds."""
    held: int = Field(5, ge=1, strict=True)
    """The leaderboard's first `held` candidates are scored on the report rows too, to say whether
    the winner held there (lf_wrap.search.report.held); each is one more candidate generated on every
    report row. 1: the best alone."""
    folds: int | None = Field(None, ge=2, strict=True)
    """Split each task's search rows into this many folds (a seeded deal of whole prompts): a
    candidate's objective is computed on each fold and ranked by its worst fold (uncertainty.rank_by
    worst_fold, the default when folds are given), so a merge that wins on a few rows does not win.
    The per-row scores on record give every fold: changing folds re-ranks, nothing is generated again."""
    search_datasets: dict[str, str] = {}
    """task -> a dataset in the eval recipe's dataset_dir to search on instead of a draw; the report
    rows are then the eval dataset's. A row in both (same id or same prompt) is refused."""

    @field_validator("folds")
    @classmethod
    def _folds_fit(cls, value: int | None, info) -> int | None:
        search = info.data.get("search")
        if value is not None and search is not None and value > search:
            raise ValueError(f"{value} folds of {search} search rows per task would leave a fold empty; give at most "
                             f"{search} folds, or more search rows")
        return value


class Uncertainty(_Strict):
    """How the search ranks candidates given that the search rows are a sample: by a lower
    bound of the objective (a bootstrap quantile over the rows), or by its point value."""

    rank_by: Literal["lower_bound", "point", "worst_fold"] = "lower_bound"
    """lower_bound: the merge whose gains hold on most resamples of the rows wins (a merge
    lifted to the top by a few lucky rows of a noisy task does not); point: the plain value;
    worst_fold: the objective on the candidate's worst fold of the search rows (needs rows.folds,
    and is the default when rows.folds is given)."""
    quantile: float = Field(0.1, gt=0, lt=1)
    """The lower bound is this quantile of the objective's bootstrap distribution."""
    resamples: int = Field(200, ge=20)
    seed: int = 12345


class Verdict(_Strict):
    """When the search recommends a merge (lf_wrap.search.report.verdict): `confirmed` only when the winner
    held on the report rows and beats the sum merge there beyond resampling noise."""

    level: float | None = Field(None, gt=0, lt=1)
    """A paired test's difference is beyond resampling noise when its p-value is below this level;
    the interval beside it is shown at confidence 1 - level. Default: 1 - the eval recipe's
    bootstrap.confidence (0.05); above 0.1 or so it confirms what is likely noise (the tests use a
    lenient level to exercise a confirmed search on a handful of rows)."""
    without_signal: Literal["stop", "rank_the_others"] = "stop"
    """A task whose specialist does not beat the base beyond noise on the search rows has no gain to
    keep (a retained gain there is noise over noise). stop: the search ends with verdict no_signal
    before any candidate is scored; rank_the_others: it ranks on the other tasks, and every output
    says which task was left out and why."""


class SearchRecipe(_Strict):
    eval: Path
    """The eval recipe: base model, template, dataset_dir, tasks (datasets, max_new_tokens), engine,
    bootstrap. Its `models` list is not used."""
    eval_overrides: list[str] = []
    """`--set` overrides applied to the eval recipe, e.g. [engine.dtype=float32]."""
    reuse_eval: bool = True
    """Take the base's and each specialist's answers from the eval's results folder where the eval
    served the same files, with the same engine arguments, on the same rows (search.from_eval)."""
    eval_results: Path | None = None
    """That folder, when it is not the eval recipe's default (eval/results/<recipe name>)."""
    adapters: list[AdapterEntry] = Field(min_length=2)
    """The specialists to merge, one per task."""
    joint: str | None = None
    """A LoRA adapter trained on every task at once (recipes/joint.yaml), on the same base: scored on
    the report rows beside the sum, linear 0.5 and best merges (retained gain per task, best vs joint),
    never searched or merged. It is one of the search's inputs: adding or changing it starts a new search."""
    methods: list[str] = Field(["linear"], json_schema_extra=SPACE)
    """Merge methods the search may pick (lf_wrap.merge.methods): linear, ties, dare_linear, dare_ties,
    tsv, iso_c, iso_cts, knots, cart (these five at their default hyper-parameters, the weights acting
    as per-task scalings; docs/merge-methods.md)."""
    spaces: list[Literal["full", "knots", "core"]] = Field(["full"], json_schema_extra=LAYOUT_SPACE)
    """Where the methods may run (lf_wrap.merge.spaces): full, knots, core. A method runs in those
    of these spaces it can (knots only in full); with more than one, the space is searched too."""
    weights: WeightRange = Field(WeightRange(), json_schema_extra=SPACE)
    """One weight per adapter (per block and kind, with `blocks` / `per_kind`), in this range."""
    blocks: int = Field(1, ge=1, strict=True, json_schema_extra=LAYOUT_SPACE)
    """Layer-wise weights (AdaMerging's idea, scored by the generation metrics): each adapter gets
    one weight per block of consecutive decoder layers, N blocks as even as possible, the first
    ones one layer larger (lf_wrap.merge.blocks). At most the base's num_hidden_layers. 1: one
    weight per adapter."""
    per_kind: bool = Field(False, strict=True, json_schema_extra=LAYOUT_SPACE)
    """Each block's weight split in two: one for its attention modules, one for its MLP modules."""
    density: DensityRange = Field(DensityRange(), json_schema_extra=SPACE)
    """ties, dare_* and knots: the fraction of each delta kept."""
    sampler: Literal["tpe", "cmaes", "random", "grid"] = Field("tpe", json_schema_extra=SPACE)
    """Optuna's sampler: tpe (default), cmaes (continuous weights; the method is then sampled at
    random), random, or grid (every combination of `grid`, a baseline)."""
    grid: list[FiniteFloat] = Field([0.0, 0.5, 1.0, 1.5], json_schema_extra=SPACE)
    """sampler grid: the weight values tried for each adapter."""
    budget: int = Field(32, ge=1, strict=True)
    """Candidates to score (Optuna trials, the reference merges enqueued first included). Strict: `true` is no count."""
    round_size: int = Field(4, ge=1, strict=True)
    """Candidates asked of the optimiser at once (one progress line per round)."""
    seed: int = Field(0, json_schema_extra=SPACE)
    """Seed of the sampler, and of dare_*'s random drop."""
    seeds: list[StrictInt] | None = Field(None, min_length=1)
    """The same search once per seed (each in `out`/seed-<s>/, one score ledger shared in `out`, so a
    candidate scored for one seed is reused by the others); `out`/final.md: each seed's winner, its
    report-row worst task and mean kept, and the spread (lf_wrap.search.seeds). Replaces `seed`."""
    objective: Literal["worst", "mean", "pareto"] = Field("worst", json_schema_extra=SPACE)
    """Maximise the worst task's retained gain (ties: the mean, then the simpler merge), or the mean;
    pareto: one objective per task (Optuna's multi-objective study), the Pareto front in the
    leaderboard and pareto.png, and the winner the front's candidate with the best worst task."""
    uncertainty: Uncertainty = Field(Uncertainty(), json_schema_extra=SPACE)
    prune: bool | None = Field(None, strict=True)
    """Stop scoring a candidate once its running bound (the ranked value over the parts scored so far:
    one fold of one task at a time with rank_by worst_fold, else one task at a time) is below the
    value it would need to enter the top rows.held (lf_wrap.search.pruning). Exact only for objective
    worst (a minimum can only go down as parts are added), so the default is true there and false for
    mean and pareto, where true is refused."""
    rows: Rows = Rows()
    verdict: Verdict = Verdict()
    output: Literal["adapter", "model"] = Field("adapter", alias="as")
    """The best merge, when the verdict confirms it, is written as one LoRA adapter (exact for linear;
    ties/dare via SVD) or a model."""
    out: Path = Path("runs/search")
    """The search folder: its Optuna journal, every score, the leaderboard, the best merge."""
    workers: Literal["single", "shared"] = "single"
    """single: one run at a time writes `out` (a second is refused). shared: every run of this
    recipe is one worker of the same search, on this machine or another whose `out` is the same
    shared folder; each scores other candidates (docs/search-workers.md)."""
    storage: str | None = None
    """Where the optimiser's study lives: by default `out`/optuna.journal; or an RDB URL for many
    workers on a cluster (postgresql://user@host/db, mysql+pymysql://user@host/db, sqlite:///path;
    needs SQLAlchemy and the database's driver). The scores stay in `out`/scores.jsonl."""

    @field_validator("storage")
    @classmethod
    def _rdb_url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not an RDB URL (dialect://...: postgresql://user@host/db, "
                             "sqlite:///path); leave storage out to keep the study in the search folder's journal")
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one merge method")
        for name in value:
            if name not in METHODS:
                raise ValueError(f"unknown merge method {name!r}; choose from {', '.join(METHODS)}")
            if not METHODS[name].weighted:
                raise ValueError(f"{name} takes no weights (it is scored as a reference row anyway); "
                                 "search `linear` instead")
        return list(dict.fromkeys(value))

    @field_validator("spaces")
    @classmethod
    def _some_space(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one merge space (full, knots, core)")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self):
        for name in self.methods:
            if not set(self.spaces) & set(METHODS[name].spaces):
                raise ValueError(f"spaces: method {name} runs only in {' and '.join(METHODS[name].spaces)} space, "
                                 f"and the search's spaces are {', '.join(self.spaces)}")
        if not 0 < self.density.low <= self.density.high <= 1:
            raise ValueError("density: low and high must lie in (0, 1]")
        if self.sampler == "grid" and len(self.grid) < 2:
            raise ValueError("grid: give at least two weight values for sampler grid")
        for value in self.grid:
            if self.grid.count(value) > 1:
                raise ValueError(f"grid: {value} is given twice; give each weight value once (the grid's size is "
                                 "the candidates it has)")
        if "rank_by" not in self.uncertainty.model_fields_set and self.rows.folds:
            self.uncertainty.rank_by = "worst_fold"        # folds given: ranked by them unless told otherwise
        if self.uncertainty.rank_by == "worst_fold" and not self.rows.folds:
            raise ValueError("uncertainty.rank_by: worst_fold needs rows.folds (the number of folds, 2 or more)")
        if self.objective == "pareto" and self.sampler == "cmaes":
            raise ValueError("objective: pareto needs a sampler that optimises several objectives (tpe, random or "
                             "grid); cmaes optimises one")
        if self.seeds is not None and len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds: {self.seeds} names a seed twice; give each seed once")
        if self.seeds is not None and self.workers == "shared":
            raise ValueError("seeds: not with workers: shared (each seed is its own search); run one shared "
                             "search per seed instead")
        if self.prune and self.objective != "worst":
            raise ValueError(f"prune: true needs objective worst; with objective {self.objective} a candidate's value "
                             "on the parts scored so far bounds nothing (a mean or a front can still rise), so pruning "
                             "would not be exact: leave prune out or set it false")
        return self

    @property
    def pruning(self) -> bool:
        """Whether candidates are scored in stages and pruned (default: where exact, objective worst)."""
        return self.objective == "worst" if self.prune is None else self.prune


def load_search_recipe(path: Path, overrides=()) -> tuple[SearchRecipe, str]:
    """The validated recipe and its verbatim text (copied into the search folder)."""
    recipe, read = read_recipe(path, SearchRecipe, overrides, what="search recipe",
                               shape="a search recipe is a YAML mapping (eval:, adapters:, methods:, budget:, out:)")
    return recipe, read.text


def direct_recipe(data: dict) -> SearchRecipe:
    """The direct form's options, checked like a recipe's."""
    return validate(SearchRecipe, data, "lf-wrap merge search")
