"""What a model's answers depend on, as content: the one identity that eval (before it reuses a
saved prediction), merge (before it says a folder "already holds this merge") and the merge
search (before it reuses a score) compare.

Two parts.

- The served files (`model_identity`), by content, with symlinks followed to the bytes they
  reach (a weight file that is a link to a store is hashed as the store's file, under the name
  it has in the model folder):
  - the base: every weight file, config.json, generation_config.json, the tokenizer files and
    the chat template of the folder vLLM loads (a Hub id: its snapshot in the local cache);
  - an adapter: its adapter_config.json and weights, plus the base it is served on;
  - a full model folder (a merge): its own files, plus the base's tokenizer files when it has none.
- How the answer is generated (`generation_identity`, one function for the eval's predictions
  meta, the search's identity and the search's reuse of the eval's answers, each comparing the
  whole value, so that no list of keys can be forgotten): the template and how prompts are
  rendered, the stop tokens, the engine (below), what a prompt too long does, max_new_tokens,
  and the no-answer text read as "".
- The engine (`engine_identity`): every argument that reaches `vllm.LLM(...)`, `extra_args`
  included, except the few that only decide where and in how much memory the same computation
  runs (ENGINE_ARGS_NOT_IN_IDENTITY: a greedy answer draws no random number, and a LoRA slot's
  size or count pads with zeros). The model and tokenizer paths are left out too: their
  content is the first part, so a copy of the same files reuses the same answers.

Digests come from lf_wrap.core.hashing (BLAKE3, cached by file identity), so an unchanged 6 GB
model is not read again, and any rewritten byte changes the fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import blake3

from lf_wrap.core.adapters import read_adapter
from lf_wrap.core.models import WEIGHT_PATTERNS, matches, serving_fingerprint

ENGINE_ARGS_NOT_IN_IDENTITY = ("model", "tokenizer", "seed", "gpu_memory_utilization", "enable_lora",
                               "max_lora_rank", "max_loras", "max_cpu_loras", "lora_target_modules",
                               "distributed_executor_backend")


def combine(files: dict[str, str]) -> str:
    text = "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
    return "blake3:" + blake3.blake3(text.encode()).hexdigest()


def model_identity(kind: str, path: str | Path, base_folder: Path, tokenizer_folder: Path | None = None) -> dict:
    """{"model_fingerprint": one digest, "model_files": {"<part>/<file>": digest}} of a model of
    `kind` "base", "adapter" (at `path`) or "full" (the folder `path`)."""
    files: dict[str, str] = {}
    if kind in ("base", "adapter"):
        files.update({f"base/{n}": d for n, d in serving_fingerprint(base_folder)[1].items()})
    if kind == "adapter":
        files.update({f"adapter/{n}": d for n, d in read_adapter(path).file_digests().items()})
    if kind == "full":
        files.update({f"model/{n}": d for n, d in serving_fingerprint(Path(path))[1].items()})
        tokenizer_folder = Path(tokenizer_folder or path)
        if tokenizer_folder.resolve() != Path(path).resolve():
            files.update({f"tokenizer/{n}": d for n, d in serving_fingerprint(tokenizer_folder)[1].items()
                          if not matches(n, WEIGHT_PATTERNS)})
    return {"model_fingerprint": combine(files), "model_files": files}


def engine_generation(*, template: str, prompt_rendering: str, stop_token_ids, engine_kwargs: dict,
                      long_prompts: str) -> dict:
    """The part of the generation identity every task of a run shares: the template and its
    rendering, the stop tokens, the engine, the long-prompts rule (the search's `generation`)."""
    return {"template": template, "prompt_rendering": prompt_rendering, "stop_token_ids": list(stop_token_ids),
            "engine_args": engine_identity(engine_kwargs), "long_prompts": long_prompts}


def generation_identity(shared: dict, max_new_tokens: int, no_answer_text: str | None) -> dict:
    """How a task's answers are generated, besides the served files (model_identity) and each
    prompt (its prompt_sha256): `shared` (engine_generation) and the task's own settings. The
    value a saved answer is reused against, whole. A setting that changes answers belongs here,
    or reaches vllm.LLM through the engine section, where every field is an argument
    (lf_wrap.serving.settings.engine_arguments) and so part of `engine_args`."""
    return {**shared, "max_new_tokens": max_new_tokens, "no_answer_text": no_answer_text}


def generation_changes(recorded: dict, generation: dict) -> list[str]:
    """The keys of `generation` whose value `recorded` (a predictions meta, which holds them at its
    top level) does not have."""
    return [key for key, value in generation.items() if recorded.get(key) != value]


def engine_identity(kwargs: dict) -> dict:
    """The engine arguments that can change an answer, as plain JSON (sorted keys), for a
    manifest and for comparing with the arguments a saved answer was generated with."""
    kept = {k: v for k, v in kwargs.items() if k not in ENGINE_ARGS_NOT_IN_IDENTITY}
    return json.loads(json.dumps(kept, sort_keys=True, default=str))
