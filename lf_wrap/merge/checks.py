"""Everything `lf-wrap merge` checks before it writes a byte, and the plan it hands on.

A merge reads several adapters and a multi-gigabyte base; a mistake found after the copy has
started wastes minutes and leaves questions. So (after the settings, lf_wrap.merge.config):
every adapter (folder, config, weights, a plain LoRA),
the base (the one the adapters name, or --base), the shapes of every targeted weight in the
base, the same targeted modules everywhere, and the output folder. Any failure is one
UserError naming the file, key or module; nothing is written."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_wrap.core.adapters import CONFIG_FILE as ADAPTER_CONFIG, Adapter, read_adapter, read_weights
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import check_output_folder, check_replaceable
# base_shards and safetensors_header live in lf_wrap.core.models; imported from here by older callers too
from lf_wrap.core.models import base_shards, resolve_base, safetensors_header, same_base
from lf_wrap.merge.card import CARD_FILE, check_users_card
from lf_wrap.merge.blocks import block_count, block_ranges, count_layers, layered, module_weights
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS

MANIFEST = "merge_manifest.json"
CONFIG_FILE = "merge_config.yaml"   # the resolved config: `lf-wrap merge recipe` rebuilds from it
RECIPE_FILE = "merge_recipe.yaml"   # the recipe as written, when the merge came from one
WRITTEN_BESIDE = (CONFIG_FILE, RECIPE_FILE, CARD_FILE)   # beside the files the manifest lists
ADAPTER_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
FLOAT_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
# adapter_config.json keys that make an adapter more than W + scaling * B @ A on the targeted
# weights: merging them would silently drop or misplace part of the adapter.
UNSUPPORTED = {
    "use_dora": "DoRA adapters rescale the weight's norm",
    "modules_to_save": "it saves whole modules beside the LoRA",
    "fan_in_fan_out": "its weights are stored transposed (Conv1D models)",
    "rank_pattern": "ranks differ per module",
    "alpha_pattern": "lora_alpha differs per module",
    "lora_bias": "it trains a bias beside the LoRA",
    "layer_replication": "it duplicates layers",
    "trainable_token_indices": "it trains token embeddings",
    "target_parameters": "it targets raw parameters (MoE experts), not linear layers",
    "alora_invocation_tokens": "an activated LoRA applies only after its invocation tokens",
}
# Initialisations that change the base weights themselves: such a delta is relative to a
# modified base, unless PEFT converted it back (then the config says init_lora_weights: true).
BASE_CHANGING_INIT = ("pissa", "olora", "corda", "loftq")


# ---------------------------------------------------------------- the plan


@dataclass
class LoadedAdapter:
    given: str
    path: Path
    config: dict
    rank: int
    scaling: float                                   # lora_alpha / r, or lora_alpha / sqrt(r) (rsLoRA)
    factors: dict[str, tuple[Any, Any]] = field(default_factory=dict)   # base weight -> (A, B), float32
    adapter: Adapter | None = None                                       # what lf_wrap.core.adapters read


@dataclass
class MergePlan:
    config: MergeConfig
    out: Path
    adapters: list[LoadedAdapter]
    base_name: str
    base_dir: Path
    base_shards: list[Path]
    modules: list[str]            # targeted base weights, in the base's order
    dtype: str                    # the base's dtype (float32/bfloat16/float16)
    weights: list[float]
    seed: int | None
    rank: int | None              # SVD rank (ties/dare/tsv/iso/knots as adapter)
    warnings: list[str] = field(default_factory=list)
    layers: int | None = None     # the base's decoder layers (lf_wrap.merge.blocks.count_layers)
    per_module: dict[str, list[float]] | None = None   # layer-wise weights: module -> one per adapter

    def weights_of(self, name: str) -> list[float]:
        """The adapters' weights in module `name` (the same in every module unless layer-wise)."""
        return self.per_module[name] if self.per_module is not None else self.weights

    def used_adapters(self) -> list[bool]:
        """Whether each adapter has a non-zero weight in some module. `--as adapter` concatenates
        such an adapter into every module (at weight 0 where a block zeroes it): one rank throughout."""
        rows = list(self.per_module.values()) if self.per_module is not None else [self.weights]
        return [any(row[i] != 0 for row in rows) for i in range(len(self.adapters))]

    def blocks_record(self) -> dict:
        """Layer-wise weights for merge_manifest.json: the blocks' layers and each module's
        weights (nothing for one weight per adapter: earlier manifests keep their keys)."""
        if self.per_module is None:
            return {}
        ranges = block_ranges(self.layers, block_count(self.weights))
        return {"blocks": {"count": len(ranges), "layers": [list(r) for r in ranges],
                           "module_weights": self.per_module}}

    @property
    def output_form(self) -> str:
        return self.config.output_form


def check_inputs(config: MergeConfig, force: bool = False) -> MergePlan:
    out = Path(config.out)
    if out.exists() and not force and not (out / MANIFEST).is_file():
        raise UserError(f"{out} already exists; pass --force to replace it")
    adapters = [load_adapter(given) for given in config.adapters]
    warnings: list[str] = []
    base_name = config.base or _common_base(adapters)
    for adapter in adapters:
        named = adapter.config.get("base_model_name_or_path")
        if config.base and not (named and same_base(named, config.base)):
            warnings.append(f"{adapter.given} was trained on {named!r}; merging onto --base {config.base!r} "
                            "(shapes checked; the weights must be the same model)")
    warnings += _same_adapter_twice(adapters)
    base_dir = resolve_base(base_name)
    check_output_folder(out, "--out", {**{f"input adapter {a.given}": a.path for a in adapters},
                                       f"the base model {base_name}": base_dir})
    if force:
        check_users_card(out)
        check_replaceable(out, MANIFEST, "merge", also=WRITTEN_BESIDE)
    shards = base_shards(base_dir)
    headers = {}
    for shard in shards:
        headers.update({k: v for k, v in safetensors_header(shard)[0].items() if k != "__metadata__"})
    reference = adapters[0]
    for adapter in adapters[1:]:
        if set(adapter.factors) != set(reference.factors):
            only = sorted(set(adapter.factors) ^ set(reference.factors))
            where = "space: core builds one basis from every adapter's factors of a module, so " \
                if config.space == "core" else ""
            raise UserError(f"{where}{adapter.given} and {reference.given} target different modules "
                            f"(e.g. {only[0]}); merge adapters trained with the same lora_target")
    for adapter in adapters:
        for name, (a_mat, b_mat) in adapter.factors.items():
            info = headers.get(name)
            if info is None:
                raise UserError(f"{adapter.given}: targets {name}, which base {base_name} does not have")
            if list(info["shape"]) != [b_mat.shape[0], a_mat.shape[1]]:
                raise UserError(f"{adapter.given}: {name} is {b_mat.shape[0]}x{a_mat.shape[1]} in the adapter "
                                f"but {info['shape'][0]}x{info['shape'][1]} in base {base_name}: wrong base model")
            if info["dtype"] not in FLOAT_DTYPES:
                raise UserError(f"base {base_name}: {name} is {info['dtype']}; merging needs float weights")
    modules = [name for name in headers if name in reference.factors]
    layers = count_layers(base_dir, headers)
    weights, per_module = resolve_weights(config.weights, len(adapters), modules, layers)
    if config.output_form == "adapter" and not any(
            any(row) for row in (per_module.values() if per_module is not None else [weights])):
        raise UserError("weights: all weights are 0; the merged adapter would be empty")
    method = METHODS[config.method]
    check_rank_needs(config.method, config.params, [a.rank for a in adapters],
                     [min(headers[n]["shape"]) for n in modules], config.space)
    seed = (config.seed if config.seed is not None else 0) if method.seeded else None
    rank = None
    if config.output_form == "adapter" and not method.exact_adapter and config.space != "core":
        cap = max(min(headers[n]["shape"]) for n in modules)   # full rank of the largest module
        rank = config.rank or min(cap, sum(a.rank for a in adapters))
        if rank > cap:
            raise UserError(f"rank: {rank} is more than any targeted weight has (at most {cap})")
    if config.output_form == "model" and method.export_with_llamafactory:
        from lf_wrap.core.environments import llamafactory_cli

        llamafactory_cli()   # raises a UserError naming the setting when it is missing
        commas = [a.given for a in adapters if "," in str(a.path)] + ([str(base_dir)] if "," in str(base_dir) else [])
        if commas:
            raise UserError(f"{commas[0]}: LLaMA-Factory splits adapter paths on commas; rename or link it")
    return MergePlan(config=config, out=out, adapters=adapters, base_name=base_name, base_dir=base_dir,
                     base_shards=shards, modules=modules, dtype=FLOAT_DTYPES[headers[modules[0]]["dtype"]],
                     weights=weights, seed=seed, rank=rank, warnings=warnings, layers=layers, per_module=per_module)


def resolve_weights(given: list | None, adapters: int, modules: list[str],
                    layers: int | None) -> tuple[list, dict | None]:
    """(weights as recorded, per-module weights or None): numbers stay one weight per adapter;
    a layer-wise form (lf_wrap.merge.blocks) is placed on the base's modules, or refused naming
    `weights` when it does not fit (more blocks than layers, a module outside the layers)."""
    if not layered(given):
        return [float(w) for w in (given or [1.0] * adapters)], None
    try:
        return list(given), module_weights(given, modules, layers)
    except ValueError as err:
        raise UserError(f"weights: {err}") from None


def check_methods_fit(methods: list[str], plan: MergePlan, spaces: list[str] = ("full",)) -> None:
    """The search's check of its methods: one whose default hyper-parameters need more rank than
    the adapters have (iso_cts's split, tsv's fraction) in a space it runs in is refused before
    the engine starts, as `merge adapters` refuses it."""
    from lf_wrap.merge.methods import METHODS

    checked = [m for m in methods if METHODS[m].rank_check is not None]
    if not checked:
        return
    shapes = {}
    for shard in plan.base_shards:
        shapes.update({k: v["shape"] for k, v in safetensors_header(shard)[0].items() if k != "__metadata__"})
    sizes = [min(shapes[name]) for name in plan.modules]
    for method in checked:
        for space in (s for s in spaces if s in METHODS[method].spaces):
            try:
                check_rank_needs(method, METHODS[method].resolve({}, len(plan.adapters)),
                                 [a.rank for a in plan.adapters], sizes, space)
            except UserError as err:
                where = f" in {space} space" if space != "full" else ""
                raise UserError(f"methods: {method}{where} at its default hyper-parameters: {err}") from None


def check_rank_needs(method: str, params: dict, ranks: list[int], sizes: list[int], space: str = "full") -> None:
    """Hyper-parameters that ask for more singular directions than the adapters have: refused
    here, before any merge or engine, naming the key (each method's own `rank_check`). `ranks`:
    each adapter's r; `sizes`: min(m, n) of each targeted module. The SVD methods are rank-aware
    (lf_wrap.merge.methods.spectrum): they split the summed rank, at most sum(r_i), not min(m, n).
    In knots and core space a method sees matrices of at most sum(r_i) rows or columns."""
    if space != "full":
        sizes = [min(size, sum(ranks)) for size in sizes]
    try:
        METHODS[method].check_rank(params, ranks, sizes)
    except ValueError as err:
        raise UserError(str(err)) from None


def load_adapter(given: str) -> LoadedAdapter:
    """Read one PEFT LoRA adapter folder (lf_wrap.core.adapters) and check it is plain LoRA,
    which merging needs: W + scaling * B @ A on the targeted weights and nothing else."""
    import torch

    adapter = read_adapter(given)
    config, config_file = adapter.config, adapter.path / ADAPTER_CONFIG
    for key, why in UNSUPPORTED.items():
        if config.get(key):
            raise UserError(f"{config_file}: {key} is set; lf-wrap cannot merge this adapter ({why})")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INIT):
        raise UserError(f"{config_file}: init_lora_weights is {init!r}; that adapter is relative to a modified "
                        "base (convert it to plain LoRA first, e.g. LLaMA-Factory's pissa_convert)")
    if config.get("bias", "none") != "none":
        raise UserError(f"{config_file}: bias is {config['bias']!r}; lf-wrap merges LoRA without trained biases")
    r = adapter.rank
    tensors = read_weights(adapter.weights)
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        match = ADAPTER_KEY.match(key)
        if match is None and ("embed_tokens" in key or "lm_head" in key or "lora_embedding_" in key):
            raise UserError(f"adapter {given}: an embedding LoRA (tensor {key}: a LoRA on embed_tokens or lm_head, "
                            "saved with the embedding weights); lf-wrap merges LoRA on linear layers only")
        if match is None:
            raise UserError(f"adapter {given}: unexpected tensor {key} (only lora_A/lora_B weights merge)")
        pairs.setdefault(match["module"] + ".weight", {})[match["part"]] = tensor.to(torch.float32)
    factors = {}
    for name, pair in pairs.items():
        if set(pair) != {"A", "B"} or pair["A"].shape[0] != r or pair["B"].shape[1] != r:
            raise UserError(f"adapter {given}: {name} lacks lora_A or lora_B, or its rank is not r={r}")
        factors[name] = (pair["A"], pair["B"])
    if not factors:
        raise UserError(f"adapter {given}: the weights file holds no LoRA tensors")
    return LoadedAdapter(given=given, path=adapter.path, config=config, rank=r, scaling=adapter.scaling,
                         factors=factors, adapter=adapter)


def _same_adapter_twice(adapters: list[LoadedAdapter]) -> list[str]:
    """A warning for each adapter given again (the same folder, or a copy: the same content):
    allowed (a weight of 2 spelled twice), but more often a typo for another adapter."""
    seen: dict[str, str] = {}
    warnings = []
    for adapter in adapters:
        key = adapter.adapter.fingerprint()
        if key in seen:
            warnings.append(f"{adapter.given} is the same adapter as {seen[key]} (same config and weights); "
                            "it is merged twice")
        seen.setdefault(key, adapter.given)
    return warnings


def _common_base(adapters: list[LoadedAdapter]) -> str:
    named = {a.given: a.config.get("base_model_name_or_path") for a in adapters}
    if not all(named.values()):
        missing = next(k for k, v in named.items() if not v)
        raise UserError(f"adapter {missing}: adapter_config.json names no base_model_name_or_path; pass --base")
    first = next(iter(named.values()))
    if not all(same_base(name, first) for name in named.values()):
        listing = "; ".join(f"{k} -> {v}" for k, v in named.items())
        raise UserError(f"the adapters name different base models ({listing}); pass --base if they are the same "
                        "model (the rule for the same base: lf_wrap.core.models)")
    return first
