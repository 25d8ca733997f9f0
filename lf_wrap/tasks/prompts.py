"""Eval prompts, rendered exactly as LLaMA-Factory renders the same row in training.

An adapter only behaves as trained when it sees the prompt it was trained on, token for token.
LLaMA-Factory turns an alpaca row into one user turn (`instruction`, plus "\\n" + `input` when
`input` is not empty; an empty instruction is left out) and formats it with the recipe's
`template`. For `qwen` that is ChatML with Qwen's default system prompt:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{query}<|im_end|>\\n<|im_start|>assistant\\n

Token ids come from the base model's tokenizer with `add_special_tokens=False` (LLaMA-Factory
encodes each turn that way); tests compare them with LLaMA-Factory's own `encode_oneturn`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lf_wrap.core.errors import UserError


@dataclass(frozen=True)
class ChatTemplate:
    """The slots of one LLaMA-Factory template that a single-turn prompt uses."""

    system: str           # "{content}" is replaced by the system prompt
    user: str             # "{content}" is replaced by the query; ends with the assistant header
    default_system: str
    stop_words: tuple[str, ...]

    def suffix(self) -> str:
        """What follows the query: kept whole when a long prompt is truncated."""
        return self.user.split("{content}", 1)[1]


TEMPLATES: dict[str, ChatTemplate] = {
    # llamafactory/data/template.py: register_template(name="qwen", ...)
    "qwen": ChatTemplate(
        system="<|im_start|>system\n{content}<|im_end|>\n",
        user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        stop_words=("<|im_end|>",),
    ),
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UserError(f"template '{name}' is not supported by lf-wrap eval (supported: "
                        f"{', '.join(TEMPLATES)})") from None


def alpaca_query(row: dict) -> str:
    """LLaMA-Factory's AlpacaDatasetConverter: the non-empty of instruction and input, "\\n"-joined."""
    return "\n".join(part for part in (row.get("instruction"), row.get("input")) if part)


def render_prompt(row: dict, template: str = "qwen", system: str | None = None) -> str:
    """The prompt text for an alpaca row, up to and including the assistant header."""
    chat = get_template(template)
    system_text = system or chat.default_system
    head = chat.system.replace("{content}", system_text) if system_text else ""
    return head + chat.user.replace("{content}", alpaca_query(row))


# Bump when render_prompt, alpaca_query, encode_prompt or truncate_prompt change what they
# produce: saved predictions record it and are not reused across a change.
RENDERING_VERSION = 1


def rendering_id(template: str) -> str:
    """Identifies how prompts are rendered: this code's version and the template's slots."""
    return hashlib.sha256(f"{RENDERING_VERSION}:{get_template(template)!r}".encode()).hexdigest()[:16]


def prompt_hash(text: str) -> str:
    """Short, stable fingerprint of a rendered prompt (recorded with every prediction)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """The template's stop words as the tokenizer's token ids (those it knows as single tokens)."""
    ids = (tokenizer.convert_tokens_to_ids(word) for word in get_template(template).stop_words)
    return [i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id]


def encode_prompt(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def truncate_prompt(ids: list[int], suffix_ids: list[int], budget: int) -> list[int]:
    """Cut the query from its end so that the prompt fits `budget` tokens, keeping the template's
    tail (end of user turn + assistant header) so the model still answers."""
    if len(ids) <= budget:
        return ids
    if ids[len(ids) - len(suffix_ids):] != suffix_ids or budget <= len(suffix_ids):
        return ids[:budget]
    return ids[:budget - len(suffix_ids)] + suffix_ids
