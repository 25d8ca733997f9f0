"""Seeded random LoRA adapters on the tiny model, made with the real PEFT (lf_wrap.demo.search_study),
and the merge maths written out independently of lf_wrap.merge.run, for the merge tests to compare
against."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from lf_wrap.demo.search_study import SPECS, make_adapter, make_adapters  # noqa: F401 (the tests' adapters)


def lora_delta(adapter: Path, weight_name: str) -> torch.Tensor:
    """scaling * B @ A of one base weight, straight from the adapter's files."""
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    r, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / r ** 0.5 if config.get("use_rslora") else alpha / r
    tensors = load_file(str(Path(adapter) / "adapter_model.safetensors"))
    prefix = "base_model.model." + weight_name.removesuffix(".weight")
    return scaling * tensors[prefix + ".lora_B.weight"].float() @ tensors[prefix + ".lora_A.weight"].float()


def model_weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def peft_merged_weights(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """Load `adapter` on `base` with PEFT, merge_and_unload, return the weights a save would write."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    state = merged.state_dict()
    saved = model_weights(base)
    return {k: state[k].detach() for k in saved}


def load_model(base: Path, adapter: Path | None = None):
    """The base in float32 for transformers' generate, with `adapter` on it through PEFT."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model


def model_greedy(model, prompts: list[list[int]], new_tokens: int = 8, **generate) -> list[list[int]]:
    """The new tokens a transformers model generates greedily after each prompt (token ids), one
    prompt at a time (no padding); `generate`: more of generate()'s arguments (eos_token_id, ...)."""
    out = []
    for ids in prompts:
        tensor = torch.tensor([ids])
        generated = model.generate(tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=new_tokens,
                                   do_sample=False, **{"pad_token_id": 0, **generate})
        out.append(generated[0, len(ids):].tolist())
    return out


def make_trained_adapter(base: Path, out: Path, seed: int) -> Path:
    """An adapter folder as a training run leaves it: a real PEFT LoRA adapter (r=8, q_proj/v_proj)
    whose lora_B is seeded noise, so it changes outputs, and LLaMA-Factory's trainer_log.jsonl."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.5
    model.save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base)
    # The loss log LLaMA-Factory writes into its output_dir, one line per logging step.
    (out / "trainer_log.jsonl").write_text("".join(
        json.dumps({"current_steps": s, "total_steps": 10, "loss": 3.0 - 0.2 * s + 0.05 * seed, "lr": 1e-4,
                    "epoch": s / 10, "percentage": 10.0 * s}) + "\n" for s in range(1, 11)))
    return out


def linked_adapter(source: Path, folder: Path, store: Path) -> Path:
    """A copy of `source` whose adapter_model.safetensors is a symlink into `store`."""
    shutil.copytree(source, folder)
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{folder.name}_weights.safetensors"
    shutil.move(folder / "adapter_model.safetensors", target)
    (folder / "adapter_model.safetensors").symlink_to(target)
    return target
