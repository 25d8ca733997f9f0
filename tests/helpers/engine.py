"""One vLLM engine on the tiny model and its greedy tokens: what a written merge generates served
alone, to compare with a candidate patched into a running engine."""

from __future__ import annotations

from lf_wrap.serving.engine import Engine, EngineSpec, Job

TEXTS = ["Please answer the question", "请把下面的句子翻译为英文：\n你好", "The article says", "title:"]
NEW_TOKENS = 8


def engine_spec(model, **extra) -> EngineSpec:
    kwargs = dict(model=str(model), tokenizer=str(model), dtype="float32", max_model_len=1024, enforce_eager=True,
                  seed=0, enable_prefix_caching=True)
    kwargs.update(extra)
    return EngineSpec(str(model), str(model), kwargs=kwargs)


def engine_greedy(engine: Engine, prompts, lora: str | None = None) -> list[list[int]]:
    """The NEW_TOKENS greedy token ids the engine generates after each prompt (token ids)."""
    jobs = [Job(lora or "base", ids, NEW_TOKENS) for ids in prompts]
    return [out["token_ids"] for out in engine.run(jobs)]


def served_alone(model, prompts, **extra) -> list[list[int]]:
    """engine_greedy of `model` in an engine of its own, closed after."""
    engine = Engine(engine_spec(model, **extra))
    try:
        return engine_greedy(engine, prompts)
    finally:
        engine.close()
