"""Candidate merges written into a running vLLM engine's weights, one after another, and the
base restored bit for bit: many candidates scored in one engine start, at base-model speed.

A candidate is {base weight name (HF name, e.g. model.layers.0.self_attn.q_proj.weight):
float32 delta}. The patched weight is cast(float32(W0) + delta), with W0 and the cast taken
from the checkpoint, as `lf-wrap merge adapters --as model` writes it (merge.run.write_model);
vLLM then casts it to the engine's dtype as its loader would. So a patched engine serves what
the merged model folder served alone would, bit for bit (tests/test_search_patching.py).
`replace` serves another checkpoint's tensors as they are (`lf-wrap eval` with engine.serve:
patch serves a merged model folder that way: lf_wrap.serving.server).

How vLLM 0.32 holds those weights, and what that means here:
- q/k/v live in one `qkv_proj` (QKVParallelLinear) and gate/up in one `gate_up_proj`; the
  model's `packed_modules_mapping` names the parts, the layer's `output_partition_sizes` gives
  each part's rows. With LoRA enabled the layer is wrapped; the weights are its `base_layer`.
- On CPU, `UnquantizedLinearMethod.process_weights_after_loading` hands every linear weight to
  `dispatch_cpu_unquantized_gemm(remove_weight=True)`: the weight is packed into a oneDNN
  matmul handle (or sgl / zentorch), `layer.weight` becomes an empty tensor and
  `layer.cpu_linear` a closure over the packed copy. Writing into `.weight` would change
  nothing. So each patched layer gets its full fused weight back (W0 from the checkpoint, the
  candidate's rows written in), vLLM's own `process_weights_after_loading` packs it again,
  and restoring puts the original closure (the original packed copy) back: the same object.
  At start, W0 is checked by packing it and comparing with the engine's kernel on a random
  input, bitwise: a loader that transforms weights is refused, never silently mis-patched.
- Elsewhere (CUDA; a CPU without oneDNN) the weight stays live: the candidate's rows are
  copied into it in place (same storage, so CUDA graphs and compiled graphs see them), and the
  W0 rows, kept on CPU in the weight's dtype, are copied back to restore.
- KV blocks computed under one candidate must never serve the next: every change resets the
  prefix cache (`LLM.reset_prefix_cache`, which refuses while requests hold KV blocks: then
  this raises).

The engine must run in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, lf-wrap's CPU default)
with tensor_parallel_size = pipeline_parallel_size = 1: a sharded layer holds a slice of each
part, which this module does not compute; it refuses instead."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lf_wrap.core.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class _Part:
    """One checkpoint weight inside one vLLM layer: rows `rows` of the layer's weight."""

    name: str
    rows: slice
    w0: torch.Tensor                 # the checkpoint's tensor, its own dtype, on CPU


@dataclass
class _Layer:
    path: str                        # vLLM module name (qkv_proj, gate_up_proj, o_proj...)
    module: torch.nn.Module          # the linear layer itself (a LoRA wrapper's base_layer)
    dtype: torch.dtype               # the engine's dtype for this weight
    parts: dict[str, _Part] = field(default_factory=dict)          # targeted checkpoint names
    packed: bool = False             # CPU: vLLM packed the weight away; rebuild and re-pack
    fused_w0: torch.Tensor | None = None                           # packed: every part's W0
    original: tuple | None = None    # packed: (cpu_linear, weight) as vLLM left them
    saved: dict[str, torch.Tensor] = field(default_factory=dict)   # live: W0 rows, to restore


class WeightPatcher:
    """Write candidate deltas into a running engine and restore its base weights.

        patcher = WeightPatcher(engine, names)      # names: the weights candidates may touch
        patcher.apply(deltas)                       # W = cast(f32(W0) + delta); prefix cache reset
        patcher.replace(weights)                    # or W = another checkpoint's tensors (eval)
        ... engine.run(jobs) ...
        patcher.restore()                           # the base again, bitwise

    `apply` always starts from W0 (candidates do not accumulate); a targeted weight missing
    from `deltas` is served at W0. `engine`: an lf-wrap Engine or a vllm.LLM."""

    def __init__(self, engine, names: Iterable[str], checkpoint: str | Path | None = None):
        self.llm = getattr(engine, "llm", engine)
        self.model = _in_process_model(self.llm)
        self.names = list(dict.fromkeys(names))
        if not self.names:
            raise UserError("nothing to patch: no weight names given")
        folder = Path(checkpoint) if checkpoint else _checkpoint_dir(self.llm)
        self.layers = self._locate(folder)
        self.active: set[str] = set()
        self.changes = 0             # apply/restore calls that changed the engine (each resets the cache)
        for layer in self.layers.values():
            _check_w0(layer)

    # ------------------------------------------------------------ the two operations

    @torch.no_grad()
    def apply(self, deltas: Mapping[str, torch.Tensor]) -> None:
        """Serve W0 + delta for every name in `deltas` (a dict, or any mapping that computes
        each delta when asked: one module's delta in memory at a time)."""
        self._serve(deltas, _merged)

    @torch.no_grad()
    def replace(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Serve `weights` themselves (another checkpoint's tensors for these names, e.g. a merged
        model folder's: W, not W - W0, which float32 cannot always add back exactly), cast to the
        engine's dtype as vLLM's loader casts them. Like `apply`: every other name at W0."""
        self._serve(weights, _as_loaded)

    def _serve(self, values: Mapping[str, torch.Tensor], rows_of) -> None:
        unknown = [n for n in values if n not in self._part_index]
        if unknown:
            raise UserError(f"candidate patches {unknown[0]}, which is not among the {len(self.names)} weights "
                            "this patcher was set up for")
        touched = {self._part_index[n] for n in values} | {self._part_index[n] for n in self.active}
        for path in touched:
            layer = self.layers[path]
            rows = {name: rows_of(part, values[name], layer.dtype) for name, part in layer.parts.items()
                    if name in values}
            _write(layer, rows)
        self.active = set(values)
        self._reset_prefix_cache()

    @torch.no_grad()
    def restore(self) -> None:
        """The base weights again, bit for bit (a no-op when nothing is patched)."""
        if not self.active:
            return
        for path in {self._part_index[n] for n in self.active}:
            _write(self.layers[path], {})
        self.active = set()
        self._reset_prefix_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()

    # ------------------------------------------------------------ set-up

    def _locate(self, folder: Path) -> dict[str, _Layer]:
        from safetensors import safe_open

        from lf_wrap.merge.checks import base_shards

        modules = dict(self.model.named_modules())
        packed = getattr(self.model, "packed_modules_mapping", {}) or {}
        where = {}                                       # checkpoint name -> shard file
        for shard in base_shards(folder):
            with safe_open(str(shard), framework="pt") as handle:
                where.update({key: shard for key in handle.keys()})

        def read(name: str) -> torch.Tensor:
            if name not in where:
                raise UserError(f"{folder}: the checkpoint has no tensor {name}")
            with safe_open(str(where[name]), framework="pt") as handle:
                return handle.get_tensor(name)

        layers: dict[str, _Layer] = {}
        self._part_index: dict[str, str] = {}
        for name in self.names:
            path, index, siblings = _vllm_layer(name, modules, packed)
            if path not in layers:
                layers[path] = _new_layer(path, modules[path])
            layer = layers[path]
            sizes = list(layer.module.output_partition_sizes)
            if len(sizes) != len(siblings):
                raise UserError(f"{name}: vLLM's {path} has {len(sizes)} output parts, expected {len(siblings)} "
                                f"({', '.join(siblings)})")
            start = sum(sizes[:index])
            w0 = read(name)
            expected = (sizes[index], layer.module.input_size_per_partition)
            if tuple(w0.shape) != expected:
                raise UserError(f"{name}: {tuple(w0.shape)} in the checkpoint, {expected} in vLLM's {path}")
            layer.parts[name] = _Part(name, slice(start, start + sizes[index]), w0)
            self._part_index[name] = path
            if layer.packed and layer.fused_w0 is None:
                layer.fused_w0 = torch.cat([read(s).to(layer.dtype) for s in siblings]).contiguous()
        for layer in layers.values():
            if not layer.packed:
                layer.saved = {n: layer.module.weight.data[p.rows].detach().to("cpu", copy=True)
                               for n, p in layer.parts.items()}
        return layers

    def _reset_prefix_cache(self) -> None:
        self.changes += 1
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM kept its prefix cache (requests still hold KV blocks); KV computed under "
                               "the previous weights could serve the next candidate, so patching stops here")


# ---------------------------------------------------------------- the engine's model


def _in_process_model(llm) -> torch.nn.Module:
    config = llm.llm_engine.vllm_config
    parallel = config.parallel_config
    if parallel.tensor_parallel_size != 1 or parallel.pipeline_parallel_size != 1:
        raise UserError(f"weight patching needs tensor_parallel_size = pipeline_parallel_size = 1 (this engine: "
                        f"{parallel.tensor_parallel_size} and {parallel.pipeline_parallel_size}); score candidates "
                        "as LoRA adapters instead, or on one device per engine (data_parallel_size)")
    if type(llm.llm_engine.engine_core).__name__ != "InprocClient":
        raise UserError("weight patching needs the vLLM engine in this process: set VLLM_ENABLE_V1_MULTIPROCESSING=0 "
                        "before the engine starts (lf-wrap's default on CPU)")
    if config.model_config.quantization:
        raise UserError(f"weight patching works on unquantized weights; this engine runs "
                        f"{config.model_config.quantization}")
    return llm.apply_model(lambda model: model)[0]


def _checkpoint_dir(llm) -> Path:
    from lf_wrap.merge.checks import resolve_base

    return resolve_base(llm.llm_engine.vllm_config.model_config.model)


def _vllm_layer(name: str, modules: dict, packed: dict) -> tuple[str, int, list[str]]:
    """(vLLM layer name, index of this weight among the layer's parts, every part's checkpoint
    name) for one checkpoint weight name."""
    if not name.endswith(".weight"):
        raise UserError(f"{name}: expected a weight name ending in .weight")
    path = name.removesuffix(".weight")
    if path in modules and hasattr(_base(modules[path]), "output_partition_sizes"):
        return path, 0, [name]
    parent, _, leaf = path.rpartition(".")
    for fused, parts in packed.items():
        if leaf in parts and f"{parent}.{fused}" in modules:
            return f"{parent}.{fused}", parts.index(leaf), [f"{parent}.{p}.weight" for p in parts]
    raise UserError(f"{name}: no such linear layer in the vLLM model (nor a fused layer holding it: "
                    f"{', '.join(packed) or 'no packed modules'})")


def _base(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "base_layer", module)       # LoRA wrappers keep the layer as base_layer


def _new_layer(path: str, wrapper: torch.nn.Module) -> _Layer:
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    module = _base(wrapper)
    if not isinstance(getattr(module, "quant_method", None), UnquantizedLinearMethod):
        raise UserError(f"{path}: {type(getattr(module, 'quant_method', None)).__name__} weights; weight patching "
                        "works on unquantized linear layers only")
    if getattr(module, "tp_size", 1) != 1:
        raise UserError(f"{path}: sharded over {module.tp_size} devices; weight patching needs tensor_parallel_size 1")
    weight = module.weight
    full = (sum(module.output_partition_sizes), module.input_size_per_partition)
    if tuple(weight.shape) == full:
        return _Layer(path, module, weight.dtype)
    if weight.numel() == 0 and hasattr(module, "cpu_linear"):
        return _Layer(path, module, weight.dtype, packed=True, original=(module.cpu_linear, module.weight))
    raise UserError(f"{path}: weight of shape {tuple(weight.shape)} (expected {full} or packed away on CPU); "
                    "this vLLM build holds it in a form weight patching does not know")


# ---------------------------------------------------------------- writing weights


def _merged(part: _Part, delta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """cast(float32(W0) + delta) in the checkpoint's dtype (what write_model stores), then the
    engine's dtype (what vLLM's loader makes of that file)."""
    if tuple(delta.shape) != tuple(part.w0.shape):
        raise UserError(f"{part.name}: delta of shape {tuple(delta.shape)} for a weight of {tuple(part.w0.shape)}")
    return (part.w0.float() + delta.to(torch.float32)).to(part.w0.dtype).to(dtype)


def _as_loaded(part: _Part, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A checkpoint tensor as vLLM's loader makes it: the file's values cast to the engine's dtype."""
    if tuple(weight.shape) != tuple(part.w0.shape) or weight.dtype != part.w0.dtype:
        raise UserError(f"{part.name}: {weight.dtype} {tuple(weight.shape)} for a weight of "
                        f"{part.w0.dtype} {tuple(part.w0.shape)}")
    return weight.to(dtype)


def _write(layer: _Layer, rows: dict[str, torch.Tensor]) -> None:
    """Make `layer` serve `rows` for the named parts and W0 everywhere else ({}: restore)."""
    module = layer.module
    if not layer.packed:
        for name, part in layer.parts.items():
            module.weight.data[part.rows].copy_(rows.get(name, layer.saved[name]))
        return
    if not rows:
        module.cpu_linear, module.weight = layer.original
        return
    weight = layer.fused_w0.clone()
    for name, value in rows.items():
        weight[layer.parts[name].rows] = value
    _pack(module, weight)


def _pack(module: torch.nn.Module, weight: torch.Tensor) -> None:
    """Give the layer a full weight and let vLLM pack it as at load time (same kernel choice)."""
    module.weight = torch.nn.Parameter(weight, requires_grad=False)
    module.quant_method.process_weights_after_loading(module)


@torch.no_grad()
def _check_w0(layer: _Layer) -> None:
    """The W0 this patcher holds must be the engine's, bit for bit: live rows compared directly;
    a packed layer re-packed from W0 must compute exactly what the engine's kernel computes."""
    module = layer.module
    if not layer.packed:
        for name, part in layer.parts.items():
            if not torch.equal(layer.saved[name].to(layer.dtype), part.w0.to(layer.dtype)):
                raise UserError(f"{name}: the engine's weight differs from the checkpoint's (vLLM transforms it "
                                "when loading); patching it would serve something else than the merged model")
        return
    x = torch.randn(3, module.input_size_per_partition, generator=torch.Generator().manual_seed(0)).to(layer.dtype)
    original_linear, original_weight = layer.original
    expected = original_linear(x, original_weight, None)
    _pack(module, layer.fused_w0.clone())
    got = module.cpu_linear(x, module.weight, None)
    module.cpu_linear, module.weight = layer.original
    if not torch.equal(expected, got):
        raise UserError(f"{layer.path}: the checkpoint's weights, packed again, do not compute what the engine "
                        "computes (vLLM transforms them when loading); weight patching would be wrong here")
