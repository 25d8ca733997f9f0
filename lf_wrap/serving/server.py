"""One patched engine for every stage (PatchServer), and `engine.serve`: how one engine serves the
base, the adapters and the merged models of an eval.

- `lora`: base + adapters in one engine, each adapter a vLLM LoRA request;
  each full model in an engine of its own.
- `patch`: the base is loaded once and every model is patched into its weights in turn
  (lf_wrap.serving.patching, the merge search's WeightPatcher): an adapter as W0 + scaling * B @ A
  (the adapter merged into the base, as `lf-wrap merge adapters --as model` writes it), a
  merged full model as its own tensors. Rows are generated model by model (rows of two models
  never share a batch), and the prefix cache is reset at each change. On CPU a patched model
  runs at base speed, a LoRA request costs about 1.5x a base request (bench/bench_search_paths.py
  --lora-study), and an engine start costs about a minute compiled: one start instead of one
  per merged model (bench/bench_eval_serving.py, docs/serving.md).
- `auto` (the default): `patch` on the CPU backend; `lora` elsewhere. On a GPU the trade is unmeasured (no
  GPU was at hand to measure it), so the default stays the one known to work there.

Which models can be patched, decided before any engine starts (else they are served as in
`lora` mode, with a log line saying why):
- an adapter `lf-wrap merge` can merge (plain LoRA: no DoRA, no modules_to_save, ...);
- a full model whose config and tokenizer files are the base's (byte for byte, but for the keys
  of NO_SERVING_EFFECT: who wrote the file, the padding side, ...), and whose
  weights are the base's except for 2-D linear weights inside decoder layers (what the patcher
  can write). A merge written by `lf-wrap merge adapters --as model` is one.

A merged full model patched in serves its own tensors, exactly what its own engine loads, so
its predictions are reused across modes. An adapter is another matter: W0 + s*B@A summed into
the weights and a LoRA request computing x@W0 + s*(x@A)@B round differently (token for token
equal on the tiny model in float32, tests/test_eval_patched.py, but not promised, and bfloat16
drifts), so how an adapter was served (`adapter_served_as`: patch or lora) is part of its
predictions' identity: switching modes regenerates them. The manifest's `engines` entries
record the mode."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lf_wrap.core.errors import UserError

log = logging.getLogger(__name__)

UNUSED_OUT = ".lf-wrap-eval-serve-never-written"   # check_inputs wants an output path; nothing is written


def resolve_serve(settings) -> tuple[str, str]:
    """(`patch` or `lora`, why) for the recipe's engine settings; `patch` asked where it cannot
    work is a UserError before any engine starts."""
    blocked = _patch_blocked(settings)
    if settings.serve == "patch":
        if blocked:
            raise UserError(f"engine.serve: patch {blocked}; use engine.serve: lora")
        return "patch", "engine.serve: patch"
    if settings.serve == "lora":
        return "lora", "engine.serve: lora"
    if blocked:
        return "lora", f"engine.serve: auto, and patching {blocked}"
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return "patch", ("engine.serve: auto on CPU (a patched model runs at base speed, a LoRA request costs "
                         "about 1.5x; one engine start for every model)")
    return "lora", ("engine.serve: auto on a GPU keeps LoRA: patching against LoRA is unmeasured on a GPU; "
                    "set engine.serve: patch to use it")


def _patch_blocked(settings) -> str | None:
    if settings.tensor_parallel_size != 1 or settings.pipeline_parallel_size != 1:
        return "needs tensor_parallel_size = pipeline_parallel_size = 1 (a sharded layer holds a slice of each weight)"
    if settings.extra_args.get("quantization"):
        return "works on unquantized weights (engine.extra_args.quantization is set)"
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "1":
        return "needs the engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=1 is set)"
    return None


# ---------------------------------------------------------------- which models qualify


def adapter_plan(path: str, base_folder: Path):
    """The adapter alone at weight 1 as a merge plan (read and checked by lf_wrap.merge.checks):
    its deltas are lf_wrap.merge.run.merged_delta's, the merge search's specialist."""
    from lf_wrap.merge.checks import check_inputs
    from lf_wrap.merge.config import MergeConfig

    config = MergeConfig(adapters=[path], base=str(base_folder), method="linear", weights=[1.0],
                         out=str(base_folder.parent / UNUSED_OUT))
    return check_inputs(config)


def full_model_patch(path: str, base_folder: Path) -> tuple[list[str] | None, str]:
    """(the weights where the model differs from the base, "") when it can be patched into the
    base's engine; (None, why not) otherwise."""
    from lf_wrap.core.models import SERVING_PATTERNS, matches, serving_fingerprint

    folder = Path(path)
    mine, base = serving_fingerprint(folder)[1], serving_fingerprint(base_folder)[1]
    own_tokenizer = any(matches(n, SERVING_PATTERNS) and n not in NOT_TOKENIZER for n in mine)
    for name in sorted({n for n in (*mine, *base) if matches(n, SERVING_PATTERNS)}):
        if name not in mine and not own_tokenizer and name not in NOT_TOKENIZER:
            continue                              # no tokenizer of its own: served with the base's anyway
        if mine.get(name) != base.get(name) and not _same_json(folder / name, base_folder / name):
            return None, f"its {name} is not the base's"
    try:
        tensors, base_tensors = _tensors(folder), _tensors(base_folder)
    except UserError as err:
        return None, str(err)
    if set(tensors) != set(base_tensors):
        other = sorted(set(tensors) ^ set(base_tensors))[0]
        return None, f"its tensors are not the base's ({other} is in one of them only)"
    differ = []
    for name, (shard, info, start) in tensors.items():
        base_shard, base_info, base_start = base_tensors[name]
        if (info["dtype"], info["shape"]) != (base_info["dtype"], base_info["shape"]):
            return None, (f"{name} is {info['dtype']} {info['shape']} there, {base_info['dtype']} "
                          f"{base_info['shape']} in the base")
        if shard.name == base_shard.name and mine.get(shard.name) is not None \
                and mine.get(shard.name) == base.get(base_shard.name):
            continue                              # the same file, by content
        if _raw(shard, info, start) != _raw(base_shard, base_info, base_start):
            if not _patchable(name, info):
                return None, f"{name} differs from the base's, and only linear weights of decoder layers are patched"
            differ.append(name)
    return differ, ""


NOT_TOKENIZER = ("config.json", "generation_config.json", "preprocessor_config.json")
# Keys of a settings file that change nothing vLLM serves, as {file: {key: the value that means
# "not set", or ANY}}: who wrote the file (a base from the Hub against a merge written today); the
# padding side (vLLM never pads a prompt) and split_special_tokens at its default, which
# LLaMA-Factory's export adds to tokenizer_config.json.
ANY = object()
NO_SERVING_EFFECT = {"config.json": {"transformers_version": ANY},
                     "generation_config.json": {"transformers_version": ANY},
                     "tokenizer_config.json": {"padding_side": ANY, "split_special_tokens": False}}


def _same_json(path: Path, base_path: Path) -> bool:
    """Two JSON settings files that differ only in keys vLLM's answers do not depend on."""
    ignored = NO_SERVING_EFFECT.get(path.name)
    if ignored is None or not path.is_file() or not base_path.is_file():
        return False
    try:
        mine, base = (json.loads(p.read_text(encoding="utf-8")) for p in (path, base_path))
    except (OSError, ValueError):
        return False
    if not isinstance(mine, dict) or not isinstance(base, dict):
        return False

    def kept(settings: dict) -> dict:
        return {k: v for k, v in settings.items()
                if k not in ignored or (ignored[k] is not ANY and v != ignored[k])}

    return kept(mine) == kept(base)


def _patchable(name: str, info: dict) -> bool:
    """What WeightPatcher writes: 2-D linear weights inside decoder layers (it checks each one
    against vLLM's layers when the engine starts)."""
    return (name.endswith(".weight") and len(info["shape"]) == 2 and ".layers." in name
            and not any(word in name for word in ("embed", "lm_head", "norm")))


def _tensors(folder: Path) -> dict[str, tuple[Path, dict, int]]:
    from lf_wrap.merge.checks import base_shards, safetensors_header

    out = {}
    for shard in base_shards(folder):
        header, start = safetensors_header(shard)
        out.update({name: (shard, info, start) for name, info in header.items() if name != "__metadata__"})
    return out


def _raw(shard: Path, info: dict, start: int) -> bytes:
    begin, end = info["data_offsets"]
    with open(shard, "rb") as handle:
        handle.seek(start + begin)
        return handle.read(end - begin)


class FullWeights(Mapping):
    """{weight name: tensor} of a model folder, each read when asked (one in memory at a time)."""

    def __init__(self, folder: str, names: list[str]):
        self.names = list(names)
        self.shards = {name: shard for name, (shard, _, _) in _tensors(Path(folder)).items()}

    def __getitem__(self, name: str):
        from safetensors import safe_open

        if name not in self.names:
            raise KeyError(name)
        with safe_open(str(self.shards[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    def __contains__(self, name) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


# ---------------------------------------------------------------- serving


class PatchServer:
    """The one patched engine: `switch(key, patch)` puts a model or a candidate merge into the
    engine's weights (unless `key` is the one in already), `restore()` puts the base back bit for
    bit. The eval (ModelServer: a model per batch) and the merge search (lf_wrap.search.scorer: a
    candidate per request set) both serve through it. Counts the changes and their seconds."""

    def __init__(self, engine, modules: list[str], checkpoint: Path | str):
        from lf_wrap.serving.patching import WeightPatcher

        started = time.monotonic()
        self.engine = engine
        self.patcher = WeightPatcher(engine, list(dict.fromkeys(modules)), checkpoint=checkpoint) if modules else None
        self.setup_seconds = time.monotonic() - started
        self.current: str | None = None
        self.changes, self.patch_seconds = 0, 0.0

    def switch(self, key: str | None, patch: Callable | None = None) -> None:
        """Serve `key` next: `patch(patcher)` writes it in (WeightPatcher.apply for deltas,
        .replace for a model's own tensors); key None, the base's own weights."""
        if key == self.current:
            return
        started = time.monotonic()
        if key is None:
            if self.patcher is not None:
                self.patcher.restore()
        else:
            patch(self.patcher)
        self.current = key
        self.changes += 1
        self.patch_seconds += time.monotonic() - started

    def restore(self) -> None:
        self.switch(None)

    def timing(self) -> dict:
        return {"patch_setup_seconds": round(self.setup_seconds, 2), "model_changes": self.changes,
                "patch_seconds": round(self.patch_seconds, 2)}


@dataclass
class PatchedModels:
    """The models one engine serves by patching, and a factory of the callable that serves a
    batch of one model's jobs (picklable: a data-parallel replica builds its own, reading the
    adapters itself). Models it does not name are served at the base's weights (the base; an
    adapter as a LoRA request)."""

    base_folder: str
    adapters: dict[str, str] = field(default_factory=dict)            # name -> adapter folder
    full: dict[str, tuple[str, list[str]]] = field(default_factory=dict)   # name -> (folder, weights)
    plans: dict = field(default_factory=dict, repr=False)             # name -> MergePlan, read once
    refused: dict[str, str] = field(default_factory=dict)             # name -> why it is not patched

    def __getstate__(self):
        return {**self.__dict__, "plans": {}}

    def names(self) -> list[str]:
        return [*self.adapters, *self.full]

    def __bool__(self) -> bool:
        return bool(self.adapters or self.full)

    def __call__(self, engine):
        return ModelServer(engine, self)


class ModelServer:
    """`serve(jobs)`: a batch of one model's jobs, that model switched in first (an adapter as
    its deltas, a full model as its own tensors, anything else at the base's weights)."""

    def __init__(self, engine, models: PatchedModels):
        base = Path(models.base_folder)
        self.engine, self.models = engine, models
        self.plans = {n: models.plans.get(n) or adapter_plan(p, base) for n, p in models.adapters.items()}
        names = [w for plan in self.plans.values() for w in plan.modules]
        names += [w for _, weights in models.full.values() for w in weights]
        self.server = PatchServer(engine, names, base)

    def __call__(self, jobs) -> list[dict]:
        from lf_wrap.merge.spaces import Deltas

        models = {job.model for job in jobs}
        if len(models) != 1:
            raise RuntimeError(f"a patched engine serves one model per batch; this batch has {sorted(models)}")
        model = models.pop()
        if model in self.plans:
            self.server.switch(model, lambda patcher: patcher.apply(Deltas(self.plans[model])))
        elif model in self.models.full:
            folder, weights = self.models.full[model]
            self.server.switch(model, lambda patcher: patcher.replace(FullWeights(folder, weights)))
        else:
            self.server.switch(None)
        return self.engine.run(jobs)

    def timing(self) -> dict:
        return self.server.timing()


def plan_patches(models, base_folder: Path) -> PatchedModels:
    """Which of `models` (ResolvedModel) are patched into the base's engine; a log line for each
    one that is not, saying why."""
    patched = PatchedModels(str(base_folder))
    for model in models:
        if model.kind == "adapter":
            try:
                patched.plans[model.name] = adapter_plan(model.path, base_folder)
                patched.adapters[model.name] = model.path
            except UserError as err:
                patched.refused[model.name] = str(err)
                log.info(f"eval: model '{model.name}' is served as a LoRA request, not patched: {err}")
        elif model.kind == "full":
            weights, why = full_model_patch(model.path, base_folder)
            if weights is None:
                patched.refused[model.name] = why
                log.info(f"eval: model '{model.name}' gets an engine of its own, not patched into the base's: {why}")
            else:
                patched.full[model.name] = (model.path, weights)
    return patched
