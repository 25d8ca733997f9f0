"""vLLM engines: one for the base model and every adapter together, one per full model (or,
with engine.serve: patch, one for every model: lf_wrap.serving.server).

Requests of all models in a group go into the same `LLM.generate` call (a `LoRARequest` per
adapter request, none for the base), so vLLM batches them together and each model's weights
are loaded once. Greedy decoding (temperature 0) up to `max_new_tokens` or the template's stop
word. With `data_parallel_size` N the group runs as N independent replicas in child processes,
each on its own `tensor_parallel_size` GPUs, and batches go to whichever replica is free.

On the CPU backend the engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, unless
set): it starts in seconds instead of a minute and there is no second process to compete for
the cores."""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import queue
from dataclasses import dataclass, field

from lf_wrap.serving.settings import engine_arguments


@dataclass
class EngineSpec:
    """Everything needed to start one engine (picklable: replicas start from it)."""

    model: str
    tokenizer: str
    adapters: dict[str, str] = field(default_factory=dict)     # model name -> adapter folder
    kwargs: dict = field(default_factory=dict)                 # vLLM LLM(...) arguments
    stop_token_ids: list[int] = field(default_factory=list)


@dataclass
class Job:
    """One request in a batch: which model, which prompt, how long an answer."""

    model: str
    token_ids: list[int]
    max_new_tokens: int


def lora_target_modules(adapter_dirs) -> list[str]:
    """The modules any adapter targets (q_proj, v_proj for the study's recipes). Unrestricted,
    vLLM wraps every linear layer and the LM head with LoRA slots and pays for them on every
    token; on CPU, where its LoRA kernels are plain torch, that made SmolLM2's vocabulary-sized
    LM head cost seconds per row."""
    from lf_wrap.core.adapters import read_adapter

    return sorted({module for folder in adapter_dirs for module in read_adapter(folder).target_modules})


def engine_spec(adapters: dict[str, str], model_path: str, tokenizer_path: str, settings, lora: tuple[int, int],
                stop_token_ids: list[int]) -> EngineSpec:
    """One engine: `adapters` (model name -> adapter folder) served as LoRA requests, `settings`
    the recipe's engine section (lf_wrap.serving.settings), `lora` (max_lora_rank, max_loras)."""
    kwargs = dict(model=model_path, tokenizer=tokenizer_path)
    if adapters:
        kwargs.update(enable_lora=True, max_lora_rank=lora[0], max_loras=lora[1], max_cpu_loras=lora[1],
                      lora_target_modules=lora_target_modules(adapters.values()))
    kwargs.update(engine_arguments(settings))      # the recipe's engine section, extra_args last
    return EngineSpec(model_path, tokenizer_path, adapters, kwargs, stop_token_ids)


def load_tokenizer(path: str):
    """The tokenizer prompts are rendered with (a UserError naming the folder when it cannot load)."""
    from transformers import AutoTokenizer

    from lf_wrap.core.errors import UserError

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the tokenizer of {path} ({str(err).splitlines()[0]})") from None


CPU_KVCACHE_GIB = "4"


def _prefer_in_process() -> None:
    """CPU defaults: the engine in this process (starts in seconds), and a KV cache of
    VLLM_CPU_KVCACHE_SPACE GiB. Unset, vLLM sizes the cache as `gpu_memory_utilization` of the
    host's memory (0.9 of it: the machine swaps or dies), so lf-wrap sets 4 GiB and says so.

    And vLLM's compile cache as it was before its AOT artifacts (VLLM_USE_AOT_COMPILE=0, unless
    set): with torch >= 2.10 vLLM 0.32 saves an AOT artifact that its CPU backend cannot load back
    ("Compiling model again due to a load failure ... 'function' object has no attribute
    'finalize_loading'"), so every engine compiled the model again; Inductor's cache loads, and a
    second start of the same model takes a third of the first (docs/serving.md)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = CPU_KVCACHE_GIB
        logging.getLogger(__name__).info(f"VLLM_CPU_KVCACHE_SPACE is not set; using {CPU_KVCACHE_GIB} GiB for "
                                         "the CPU KV cache")


class Engine:
    """One vLLM `LLM`; `run(jobs)` returns one output dict per job, in order."""

    def __init__(self, spec: EngineSpec):
        _prefer_in_process()
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.spec = spec
        self.llm = LLM(**spec.kwargs)
        self.loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(spec.adapters.items())}

    def run(self, jobs: list[Job]) -> list[dict]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = {n: SamplingParams(temperature=0.0, max_tokens=n, stop_token_ids=self.spec.stop_token_ids,
                                    skip_special_tokens=True)
                  for n in {job.max_new_tokens for job in jobs}}
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=job.token_ids) for job in jobs],
                                    [params[job.max_new_tokens] for job in jobs],
                                    lora_request=[self.loras.get(job.model) for job in jobs], use_tqdm=False)
        return [{"prediction": out.outputs[0].text, "finish_reason": out.outputs[0].finish_reason,
                 "prompt_tokens": len(out.prompt_token_ids), "completion_tokens": len(out.outputs[0].token_ids),
                 "token_ids": list(out.outputs[0].token_ids)}
                for out in outputs]

    def close(self) -> None:
        """Free the engine (and its worker processes) before the next group's engine starts."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - shutting down; nothing useful to do with an error here
            pass
        del llm
        gc.collect()
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()


def _replica_main(spec: EngineSpec, devices: str | None, inbox, outbox, server=None) -> None:
    """A data-parallel replica: its own engine on its own devices, serving items until None.
    An item is a batch of jobs, or whatever `server(engine)` (a picklable factory) serves."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    engine = Engine(spec)
    serve = server(engine) if server is not None else engine.run
    outbox.put(("ready", None, None))
    while (item := inbox.get()) is not None:
        batch_id, payload = item
        outbox.put(("done", batch_id, serve(payload)))
    engine.close()


class ReplicaPool:
    """`data_parallel_size` engines in child processes; `imap(batches)` yields (index, outputs)
    as replicas finish, so a slow batch never holds the others back. `server`: see _replica_main
    (the merge search sends candidates, each replica patching its own engine)."""

    def __init__(self, spec: EngineSpec, replicas: int, devices_per_replica: int, server=None):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(replicas * devices_per_replica)]
        context = mp.get_context("spawn")
        self.outbox = context.Queue()
        self.inboxes, self.procs = [], []
        for r in range(replicas):
            devices = ",".join(ids[r * devices_per_replica:(r + 1) * devices_per_replica]) or None
            inbox = context.Queue()
            proc = context.Process(target=_replica_main, args=(spec, devices, inbox, self.outbox, server),
                                   daemon=True)
            proc.start()
            self.inboxes.append(inbox)
            self.procs.append(proc)
        for _ in range(replicas):
            self._get()

    def _get(self):
        while True:
            try:
                return self.outbox.get(timeout=5)
            except queue.Empty:   # nothing yet: make sure no replica died meanwhile
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"a data-parallel vLLM replica exited with code {dead[0].exitcode}; "
                                       "see its log above") from None

    def imap(self, batches: list[list[Job]]):
        pending = list(enumerate(batches))
        free = list(range(len(self.inboxes)))
        owner: dict[int, int] = {}
        while pending or owner:
            while pending and free:
                batch_id, jobs = pending.pop(0)
                replica = free.pop(0)
                owner[batch_id] = replica
                self.inboxes[replica].put((batch_id, jobs))
            _, batch_id, outputs = self._get()
            free.append(owner.pop(batch_id))
            yield batch_id, outputs

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for proc in self.procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()


def run_batches(spec: EngineSpec, batches: list[list[Job]], data_parallel_size: int, tensor_parallel_size: int,
                on_ready=lambda serve: None, server=None):
    """Yield (batch index, outputs) for every batch; batches arrive in completion order.
    `on_ready(serve)` is called once the engine(s) have started (to time the start apart), with
    what serves the batches in this process (None for replicas). `server`:
    a picklable factory, server(engine) -> a callable serving one batch instead of engine.run
    (lf_wrap.serving.server patches each batch's model in); it reaches into the model, so
    the engine core then runs in the engine's process (vLLM's GPU default is a child process)."""
    if server is not None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if data_parallel_size <= 1:
        engine = Engine(spec)
        serve = server(engine) if server is not None else engine.run
        on_ready(serve)
        try:
            for index, jobs in enumerate(batches):
                yield index, serve(jobs)
        finally:
            engine.close()
        return
    pool = ReplicaPool(spec, data_parallel_size, tensor_parallel_size, server=server)
    on_ready(None)
    try:
        yield from pool.imap(batches)
    finally:
        pool.close()
