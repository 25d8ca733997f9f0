"""The engine section of an eval recipe (`engine:`), shared by every stage that starts vLLM
(the eval and the merge search read it from the eval recipe): vLLM's own argument names, and
which of them lf-wrap sets itself.

A field of EngineSettings is a `vllm.LLM(...)` argument of the same name, passed as it is, and so
part of every answer's identity (lf_wrap.core.identity.generation_identity), unless it is marked
LF_WRAP_ONLY. A new field is one edit here, with no list to keep in step elsewhere."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# vllm.LLM arguments lf-wrap fills from the recipe and the adapters; extra_args may not change them.
LF_WRAP_ENGINE_ARGS = {"model": "from model_name_or_path or the model's path",
                       "tokenizer": "from the model or the base", "enable_lora": "when adapters are served",
                       "max_cpu_loras": "from max_loras", "lora_target_modules": "from the adapters' configs"}


# A field of EngineSettings is a vllm.LLM(...) argument of the same name, passed as it is (and so
# part of every answer's identity: lf_wrap.core.identity.generation_identity), unless marked
# LF_WRAP_ONLY: a setting lf-wrap reads itself (or maps onto other arguments, for the LoRA slots).
LF_WRAP_ONLY = {"engine_arg": False}


def engine_arguments(settings: "EngineSettings") -> dict:
    """The vllm.LLM(...) arguments the section sets: every field not marked LF_WRAP_ONLY (None
    left out: vLLM's own default), then extra_args. A new field is an engine argument, and in
    every answer's identity, with no other edit."""
    kwargs = {name: getattr(settings, name) for name, field in type(settings).model_fields.items()
              if (field.json_schema_extra or {}).get("engine_arg", True) and getattr(settings, name) is not None}
    kwargs.update(settings.extra_args)
    return kwargs


class EngineSettings(_Strict):
    dtype: str = "auto"
    """vLLM dtype: auto, bfloat16, float16, float32 (float32 reproduces transformers' greedy
    tokens exactly; bfloat16 drifts after a few tokens)."""
    max_model_len: int = Field(4096, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Fraction of GPU memory vLLM may take (on the CPU backend: of host memory)."""
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1, json_schema_extra=LF_WRAP_ONLY)
    """Independent engine replicas, each on its own tensor_parallel_size GPUs and a share of
    the rows."""
    max_lora_rank: int | None = Field(None, ge=1, json_schema_extra=LF_WRAP_ONLY)
    """LoRA slots' rank. Default: the largest adapter's rank (vLLM's next allowed size); a larger
    value slows every LoRA request (vLLM pads each adapter to it); a smaller one is raised."""
    max_loras: int | None = Field(None, json_schema_extra=LF_WRAP_ONLY)
    """LoRA slots; at least adapters + 1 (a vLLM bug gives base requests the adapter of the
    last slot when every slot is full)."""
    pipeline_parallel_size: int = Field(1, ge=1)
    """With distributed_executor_backend: ray, stages may sit on different nodes."""
    distributed_executor_backend: Literal["mp", "ray"] | None = None
    """vLLM's choice when omitted (mp on one node); ray to span nodes of a running Ray cluster."""
    enforce_eager: bool = False
    seed: int = 0
    serve: Literal["lora", "patch", "auto"] = Field("auto", json_schema_extra=LF_WRAP_ONLY)
    """How one engine serves several models (lf_wrap.serving.server, docs/serving.md): lora,
    each adapter a LoRA request and each full model an engine of its own; patch, the base loaded
    once and each adapter and merged model written into its weights in turn (at base speed);
    auto (the default), patch on CPU and lora on a GPU (unmeasured there). A merged model's
    answers are the same either way; an adapter's are regenerated when its mode changes."""
    extra_args: dict[str, Any] = Field({}, json_schema_extra=LF_WRAP_ONLY)
    """Any other vllm.LLM(...) argument, passed as is (e.g. max_num_seqs, hf_overrides). It is
    part of every prediction's identity (a change regenerates); a key this section already has
    (dtype, seed, ...) or one lf-wrap sets itself (model, enable_lora, ...) is refused, so that
    what ran is what the manifest records."""

    @field_validator("extra_args")
    @classmethod
    def _no_second_spelling(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in cls.model_fields and key != "extra_args":
                raise ValueError(f"'{key}' is a setting of the engine section: set engine.{key} instead of "
                                 f"engine.extra_args.{key}")
            if key in LF_WRAP_ENGINE_ARGS:
                raise ValueError(f"'{key}' is set by lf-wrap itself ({LF_WRAP_ENGINE_ARGS[key]}); remove it from "
                                 "engine.extra_args")
        return value
