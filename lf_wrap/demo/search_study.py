"""A study a merge search can gain on, built on the spot: seeded random LoRA adapters made with the
real PEFT on a base (the tiny model of lf_wrap.demo.tiny_model, or SmolLM2), each the specialist of
a task of its own whose references are that adapter's greedy answers (transformers + PEFT), the
dataset_info entries and the eval recipe. The tests' search studies and the search benchmarks
(bench/bench_search_prune.py) are built by it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

# (r, lora_alpha, use_rslora): ranks and scalings all differ, one adapter uses rsLoRA.
SPECS = {"A": (4, 8, False), "B": (8, 4, True), "C": (4, 4, False)}
TASKS = ("task_a", "task_b", "task_c")
VERBS = ("Describe", "Explain", "Summarise")
TOPICS = ("the weather in Oslo", "a cat on a mat", "the price of bread", "a train to Rome", "the history of tea",
          "a song about rain", "the rules of chess", "a letter to a friend", "the colour of the sea",
          "a day at school", "the moon at night", "a walk in the park", "a ship in a storm", "the smell of coffee",
          "a dog in the snow", "the last bus home", "a garden in May", "the noise of a city", "an old clock",
          "a map of the stars", "the taste of salt", "a bridge at dawn", "a quiet library", "the end of summer")
NEW_TOKENS = 8


def make_adapter(base: Path, out: Path, r: int, alpha: int, rslora: bool = False, seed: int = 0,
                 targets: tuple[str, ...] = ("q_proj", "v_proj"), modules_to_save: tuple[str, ...] = ()) -> Path:
    """get_peft_model + a seeded normal lora_B (PEFT starts B at zero: the delta would be 0)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, lora_dropout=0.0,
                                                  target_modules=list(targets),
                                                  modules_to_save=list(modules_to_save) or None))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.08)
            elif "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.save_pretrained(out)
    config_file = Path(out) / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base)
    config_file.write_text(json.dumps(config, indent=2))
    return Path(out)


def make_adapters(base: Path, folder: Path) -> dict[str, Path]:
    """Adapters A, B and C of SPECS under `folder`, seeds 0, 1, 2."""
    return {name: make_adapter(base, folder / name, r, alpha, rslora, seed=i)
            for i, (name, (r, alpha, rslora)) in enumerate(SPECS.items())}


def louder(adapter: Path, factor: float) -> Path:
    """lora_B times `factor`: at make_adapters' scale the tiny model answers newlines whatever the
    adapter; louder, each adapter answers words of its own (a gain a merge can keep or lose)."""
    from safetensors.torch import load_file, save_file

    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v * factor if "lora_B" in k else v for k, v in tensors.items()}, str(weights))
    return adapter


def greedy_answers(model: Path, adapter: Path | None, prompts: list[str], new_tokens: int = NEW_TOKENS) -> list[str]:
    """The answers PEFT + transformers give greedily, one prompt at a time: the references of the
    adapter's task."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lf_wrap.tasks.prompts import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, adapter)
    out = []
    for prompt in prompts:
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        got = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=tokenizer.eos_token_id)
        out.append(tokenizer.decode(got[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def write_search_study(model: Path, root: Path, tasks: int = 3, rows: int = 12, factor: float = 10.0,
                       new_tokens: int = NEW_TOKENS) -> tuple[Path, list[Path]]:
    """(eval recipe path, adapter folders) under `root`: `tasks` tasks of `rows` rows each (at most
    24), task i's adapter SPECS' i-th made `factor` times louder, its references that adapter's
    greedy answers; ROUGE, `new_tokens` new tokens, float32."""
    from lf_wrap.tasks.prompts import render_prompt

    made = make_adapters(model, root / "adapters")
    folders = [louder(made[name], factor) for name in list(SPECS)[:tasks]]
    dataset_dir = root / "dataset_info"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    for task, adapter, verb in zip(TASKS, folders, VERBS):
        items = [{"instruction": f"{verb} {topic}.", "input": "", "output": "", "id": f"{task}-{i}"}
                 for i, topic in enumerate(TOPICS[:rows])]
        answers = greedy_answers(model, adapter, [render_prompt(r, "qwen") for r in items], new_tokens)
        for item, answer in zip(items, answers):
            item["output"] = answer
        (dataset_dir / f"{task}.json").write_text(json.dumps(items), encoding="utf-8")
        info[task] = {"file_name": f"{task}.json"}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    recipe = {"model_name_or_path": str(model), "template": "qwen", "dataset_dir": str(dataset_dir),
              "models": [{"name": "base"}],
              "tasks": {t: {"dataset": t, "metric": "rouge", "max_new_tokens": new_tokens} for t in info},
              "engine": {"dtype": "float32", "max_model_len": 512, "gpu_memory_utilization": 0.2,
                         "enforce_eager": True},
              "bootstrap": {"resamples": 200}}
    path = root / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path, folders
