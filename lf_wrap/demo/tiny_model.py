"""A tiny Qwen2 causal LM with its own tokenizer, built on the spot (seconds, no network).

Tests and `make demo DEMO_MODEL=tiny` train, merge and serve it with the real LLaMA-Factory,
PEFT and vLLM. It has Qwen2.5's shape in miniature: byte-level BPE trained here with ChatML
special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`) and a chat template that renders
exactly what LLaMA-Factory's `qwen` template renders, default system prompt included. vLLM's
CPU attention wants a head size of at least 32: hidden 128 with 4 heads."""

from __future__ import annotations

from pathlib import Path

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML with Qwen's default system prompt, as LLaMA-Factory's `qwen` template formats it.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _corpus() -> list[str]:
    """Text the tokenizer learns its merges from: the sample data and the study's prompts."""
    import random

    from lf_wrap import tasks
    from lf_wrap.data import samples

    rng = random.Random(0)
    lines = [tasks.TRANSLATE_PROMPT, tasks.SUMMARIZE_PROMPT, tasks.QA_PROMPT, QWEN_DEFAULT_SYSTEM]
    lines += [r["translation"]["zh"] + " " + r["translation"]["en"] for r in samples.translate_rows(rng)]
    lines += [r["article"] + " " + r["highlights"] for r in samples.summarize_rows(rng, 200)]
    lines += [r["context"] + " " + r["question"] for r in samples.qa_rows(rng, 200)]
    return lines


# Qwen2's pre-tokenizer split: single digits, letters runs, punctuation runs, whitespace.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def build_tokenizer(vocab_size: int = 1024):
    """Byte-level BPE with Qwen2's normalizer and pre-tokenizer (NFC; the split regex, then
    ByteLevel without its own regex). With ByteLevel's default regex instead, transformers 5.6
    (training) and 5.19 (vLLM) would cut digit runs differently, and an adapter would be scored
    on prompt tokens it never saw."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                   chat_template=CHAT_TEMPLATE, model_max_length=4096)


def build_tiny_model(out: Path, seed: int = 0, layers: int = 2, hidden: int = 128, heads: int = 4,
                     init_std: float = 0.02) -> Path:
    """Write a float32 Qwen2ForCausalLM and its tokenizer to `out`; return `out`.

    `init_std` is the weights' initial spread (transformers' `initializer_range`). At the default
    0.02 the tied embeddings are so short that no LoRA can make one token much likelier than the
    rest (the loss floors near 4.5 of a uniform 6.9); at 0.1 a few dozen steps teach an answer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
        max_position_embeddings=4096, tie_word_embeddings=True, initializer_range=init_std,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    config.dtype = "float32"
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
