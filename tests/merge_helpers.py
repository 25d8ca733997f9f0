"""Seeded random LoRA adapters on the tiny model, made with the real PEFT, and the merge maths
written out independently of lf_wrap.merge.run, for the merge tests to compare against."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

# (r, lora_alpha, use_rslora): ranks and scalings all differ, one adapter uses rsLoRA.
SPECS = {"A": (4, 8, False), "B": (8, 4, True), "C": (4, 4, False)}


def make_adapter(base: Path, out: Path, r: int, alpha: int, rslora: bool = False, seed: int = 0,
                 targets: tuple[str, ...] = ("q_proj", "v_proj"), modules_to_save: tuple[str, ...] = ()) -> Path:
    """get_peft_model + a seeded normal lora_B (PEFT starts B at zero: the delta would be 0)."""
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
    return {name: make_adapter(base, folder / name, r, alpha, rslora, seed=i)
            for i, (name, (r, alpha, rslora)) in enumerate(SPECS.items())}


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


def greedy(model, prompts: list[list[int]], new_tokens: int = 8) -> list[list[int]]:
    out = []
    for ids in prompts:
        tensor = torch.tensor([ids])
        generated = model.generate(tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=new_tokens,
                                   do_sample=False, pad_token_id=0)
        out.append(generated[0, len(ids):].tolist())
    return out
