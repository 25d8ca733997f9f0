"""`lf-wrap merge`: several LoRA adapters -> one model folder or one adapter.

The study's 3-in-1 is `llamafactory-cli export` with three adapters: W + dW1 + dW2 + dW3.
`sum --as model` runs exactly that export. Every other method works here, in torch, on the
full deltas dW_i = scaling_i * B_i @ A_i one module at a time, never on A and B apart (PEFT's
add_weighted_adapter does that for linear/ties/dare and gets cross terms B_i @ A_j):
- `--as model` copies the base's safetensors files and rewrites only the LoRA-targeted
  tensors in place, so memory holds one module's deltas, never the model;
- `--as adapter` writes one LoRA: exact for sum/linear (ranks concatenated), a truncated SVD
  for the others (ties/dare, tsv/iso_c/iso_cts/knots/cart), with each module's relative
  reconstruction error in the manifest.
Settings live in lf_wrap.merge.config; everything is checked before any work
(lf_wrap.merge.checks). The output folder appears in one rename, with the recipe, the resolved
config and merge_manifest.json inside it."""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_directory, atomic_write_json, atomic_write_text, clean_stale_temporaries
from lf_wrap.core.locks import folder_lock
from lf_wrap.core.manifest import StageRecord, read_manifest_file
from lf_wrap.core.models import serving_fingerprint
from lf_wrap.core.process import terminate_as_interrupt
from lf_wrap.merge.card import write_card
from lf_wrap.merge.checks import CONFIG_FILE, MANIFEST, RECIPE_FILE, MergePlan, check_inputs, safetensors_header
from lf_wrap.merge.config import MergeConfig
from lf_wrap.merge.methods import METHODS
from lf_wrap.merge.spaces import Deltas, core_factors, merged_delta  # noqa: F401 (Deltas: the search's)

log = logging.getLogger(__name__)

EXPORT_SIZE_GB = 5            # LLaMA-Factory's default export_size (shard size of `sum --as model`)
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf", ".onnx", ".ckpt"}
SKIPPED_FILES = {"README.md", ".gitattributes"}   # the base's model card does not describe the merge


@dataclass
class MergeResult:
    out: Path
    skipped: bool
    manifest: dict = field(default_factory=dict)


def merge(config: MergeConfig, force: bool = False, recipe_text: str | None = None,
          card_extra: str | None = None) -> MergeResult:
    """Check everything, then write `config.out` (or skip: same inputs already merged there), its
    model card (README.md, lf_wrap.merge.card) included; `card_extra`: markdown the card ends with.
    SIGTERM and SIGHUP stop a merge as Ctrl-C does; the temporary folder goes with it, and one
    left by a kill -9 is removed by the next merge into the same place."""
    with terminate_as_interrupt():
        return _merge(config, force, recipe_text, card_extra)


def _merge(config: MergeConfig, force: bool, recipe_text: str | None, card_extra: str | None) -> MergeResult:
    record = StageRecord("merge")
    started = time.monotonic()
    plan = check_inputs(config, force)
    with folder_lock(plan.out):        # one writer: a second merge into the same --out waits for none
        return _merge_locked(config, force, recipe_text, card_extra, record, started, plan)


def _merge_locked(config: MergeConfig, force: bool, recipe_text: str | None, card_extra: str | None,
                  record: StageRecord, started: float, plan: MergePlan) -> MergeResult:
    for line in clean_stale_temporaries(plan.out):
        log.info(line)
    checked = time.monotonic()
    inputs = [{"path": a.given, "resolved": str(a.path), "digest": a.adapter.fingerprint(), "r": a.rank,
               "lora_alpha": a.config.get("lora_alpha"), "use_rslora": bool(a.config.get("use_rslora")),
               "scaling": a.scaling} for a in plan.adapters]
    base = {"name": plan.base_name, "path": str(plan.base_dir), "digest": serving_fingerprint(plan.base_dir)[0]}
    fingerprint = _fingerprint(plan, inputs, base)
    hashed = time.monotonic()
    if plan.out.exists() and not force:
        previous = read_manifest_file(plan.out / MANIFEST)
        if previous.get("fingerprint") == fingerprint:
            log.info(f"{plan.out} already holds this merge (same inputs and settings); skipping. "
                     "Pass --force to redo it.")
            return MergeResult(plan.out, skipped=True, manifest=previous)
        raise UserError(f"{plan.out} already exists and holds another merge; pass --force to replace it")
    for warning in plan.warnings:
        log.warning(warning)

    with atomic_directory(plan.out, force=force) as tmp:
        export_record, errors, rank = None, {}, None
        if plan.output_form == "model" and METHODS[config.method].export_with_llamafactory:
            export_record = export_with_llamafactory(plan, tmp)
        elif plan.output_form == "model":
            write_model(plan, tmp)
        else:
            errors, rank = write_adapter(plan, tmp)
        merged = time.monotonic()
        record.finish()
        manifest = record.manifest({
            "method": config.method, **({"space": config.space} if config.space != "full" else {}),
            **({"isotropize": True} if config.isotropize else {}), "as": plan.output_form, "weights": plan.weights,
            "density": config.density, "seed": plan.seed, "rank": rank, **plan.blocks_record(),
            **({"params": config.params} if config.params else {}),
            "base": base, "inputs": inputs, "dtype": plan.dtype,
            "files": sorted(p.name for p in tmp.iterdir()),
            "errors": _error_summary(errors) if errors else None,
            "llamafactory_export": export_record,
            "warnings": plan.warnings,
            "timings_s": {"checks": round(checked - started, 3), "hashing": round(hashed - checked, 3),
                          "merge": round(merged - hashed, 3), "total": round(time.monotonic() - started, 3)},
            "peak_rss_mib": _peak_rss_mib(),
            "fingerprint": fingerprint,
        })
        atomic_write_text(tmp / CONFIG_FILE, yaml.safe_dump(_settings(config), sort_keys=False, allow_unicode=True))
        if recipe_text is not None:
            atomic_write_text(tmp / RECIPE_FILE, recipe_text)
        atomic_write_json(tmp / MANIFEST, manifest)
        write_card(tmp, manifest, card_extra)
    return MergeResult(plan.out, skipped=False, manifest=manifest)


# ---------------------------------------------------------------- the three writers


def export_with_llamafactory(plan: MergePlan, tmp: Path) -> dict:
    """`sum --as model`: the study's own export, run by LLaMA-Factory (PEFT merge_and_unload,
    one adapter after another), with the arg file and the log kept in the output folder."""
    from lf_wrap.core.environments import llamafactory_cli
    from lf_wrap.core.process import ProcessFailed, run_logged

    args = {
        "model_name_or_path": str(plan.base_dir),
        "adapter_name_or_path": ",".join(str(a.path) for a in plan.adapters),
        "template": plan.config.template,
        "finetuning_type": "lora",
        "infer_dtype": plan.dtype,          # the base's own dtype, not LF's device-dependent "auto"
        "export_dir": str(tmp),
        "export_size": EXPORT_SIZE_GB,
        "export_device": "cpu",
        "export_legacy_format": False,
    }
    arg_file = tmp / "llamafactory_export.yaml"
    atomic_write_text(arg_file, yaml.safe_dump(args, sort_keys=False, allow_unicode=True))
    log = tmp / "llamafactory_export.log"
    try:
        record = run_logged([llamafactory_cli(), "export", arg_file], log)
    except ProcessFailed as err:   # the temporary folder goes away: keep the log beside --out
        kept = plan.out.with_name(f"{plan.out.name}.llamafactory_export.failed.log")
        shutil.copyfile(log, kept)
        err.message += f"\n(full log kept at {kept})"
        raise
    return record.to_dict()


def write_model(plan: MergePlan, tmp: Path) -> None:
    """Base files copied; in each safetensors shard, only the targeted tensors are rewritten:
    W' = cast(float32(W) + merged delta). Shapes and dtype do not change, so neither do the
    shard headers nor the index, and memory holds one module at a time."""
    import torch

    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    for item in sorted(plan.base_dir.iterdir()):
        if item.is_file() and item.suffix not in WEIGHT_SUFFIXES and item.name not in SKIPPED_FILES \
                and not item.name.startswith("."):
            shutil.copyfile(item, tmp / item.name)
    for shard in plan.base_shards:
        target = tmp / shard.name
        shutil.copyfile(shard, target)
        header, start = safetensors_header(shard)
        with open(target, "r+b") as handle:
            for name in (n for n in plan.modules if n in header):
                info = header[name]
                begin, end = info["data_offsets"]
                handle.seek(start + begin)
                dtype = dtypes[info["dtype"]]
                weight = torch.frombuffer(bytearray(handle.read(end - begin)), dtype=dtype).reshape(info["shape"])
                merged = (weight.float() + merged_delta(plan, name)).to(dtype).contiguous()
                handle.seek(start + begin)
                handle.write(merged.view(torch.uint8).numpy().tobytes())


def write_adapter(plan: MergePlan, tmp: Path) -> tuple[dict[str, float], int]:
    """One LoRA adapter with scaling 1 (lora_alpha = r): exact concatenation for sum/linear in
    full space, Core Space's own factors (rank R = the summed ranks) for every method in core
    space, a truncated SVD otherwise. Returns each module's relative error ||dW - B A|| / ||dW||,
    and the adapter's rank."""
    import torch

    from safetensors.torch import save_file

    from lf_wrap.merge.methods import lowrank

    tensors, errors = {}, {}
    core = plan.config.space == "core"
    exact = METHODS[plan.config.method].exact_adapter and not core
    used_adapters = plan.used_adapters()
    for name in plan.modules:
        if core:       # B @ A is the merge itself: `--as model` writes the same product
            a_mat, b_mat = core_factors(plan, name, rank=sum(a.rank for a in plan.adapters))
            a_mat, b_mat = a_mat.to(torch.float32), b_mat.to(torch.float32)
            target = b_mat @ a_mat
        elif exact:
            target = merged_delta(plan, name)
            kept = [(a, w) for a, w, used in zip(plan.adapters, plan.weights_of(name), used_adapters) if used]
            a_mat, b_mat = lowrank.concat([a.factors[name] for a, _ in kept], [w * a.scaling for a, w in kept])
        else:
            target = merged_delta(plan, name)
            a_mat, b_mat = lowrank.truncated_svd(target, plan.rank)
        errors[name] = lowrank.relative_error(target, a_mat, b_mat)
        prefix = "base_model.model." + name.removesuffix(".weight")
        tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = a_mat, b_mat
    save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    rank = next(iter(tensors.values())).shape[0]
    adapter_config = dict(plan.adapters[0].config)
    adapter_config.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={},
                          base_model_name_or_path=plan.base_name, inference_mode=True)
    atomic_write_json(tmp / "adapter_config.json", adapter_config)
    return errors, rank


# ---------------------------------------------------------------- manifest helpers


def _fingerprint(plan: MergePlan, inputs: list[dict], base: dict) -> str:
    """What makes two merges the same: the resolved settings and the inputs' contents."""
    settings = _settings(plan.config, exclude={"out", "adapters", "base"})
    settings.update(weights=plan.weights, seed=plan.seed, rank=plan.rank, dtype=plan.dtype)
    blob = json.dumps({"settings": settings, "inputs": [i["digest"] for i in inputs], "base": base["digest"]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _settings(config: MergeConfig, exclude: set[str] = frozenset()) -> dict:
    """The config as written to merge_config.yaml and hashed; `params` only for the methods
    that have hyper-parameters, `space` only when not full, `isotropize` only when set, so
    earlier merges keep their fingerprint."""
    quiet = {key for key, default in (("params", {}), ("space", "full"), ("isotropize", False))
             if getattr(config, key) == default}
    return config.model_dump(by_alias=True, exclude=set(exclude) | quiet)


def _error_summary(errors: dict[str, float]) -> dict:
    values = list(errors.values())
    return {"relative_frobenius": {k: float(f"{v:.4g}") for k, v in errors.items()},
            "max": float(f"{max(values):.4g}"), "mean": float(f"{sum(values) / len(values):.4g}")}


def _peak_rss_mib() -> dict:
    """Peak resident memory of this process and of the children it waited for (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"lf_wrap": round(own / 1024, 1), "children": round(children / 1024, 1)}


def summary(result: MergeResult) -> str:
    m = result.manifest
    if result.skipped:
        return f"{result.out}: unchanged (already merged)"
    lines = [f"wrote {result.out} ({m['method']}, as {m['as']}, {len(m['inputs'])} adapters, "
             f"{m['timings_s']['total']:.1f}s)"]
    if m.get("errors"):
        lines.append(f"  relative reconstruction error per module: max {m['errors']['max']:.3g}, "
                     f"mean {m['errors']['mean']:.3g} (all in {MANIFEST})")
    return "\n".join(lines)
