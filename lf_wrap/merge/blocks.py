"""Layer-wise merge weights: a weight per adapter per block of consecutive decoder layers, and
optionally per module kind (attention, MLP), the AdaMerging idea.

The forms one adapter's weight takes in a merge recipe's `weights:` list:
    0.5                                  every module (today's form)
    [1.0, 0.5]                           one weight per block: N blocks, N the list's length
    {attention: [1.0, 0.5], mlp: 0.2}    per kind, each a number or N block weights
Every list in one merge has the same length N. Blocks split the base's L decoder layers
(`num_hidden_layers` of its config.json) as evenly as possible, in order; the first L mod N
blocks take one layer more (10 layers in 3 blocks: 0-3, 4-6, 7-9), as numpy.array_split does.

A module's layer is read from its name (`model.layers.<i>.`); its kind from the part after it
(`self_attn.*`: attention; `mlp.*`, `feed_forward.*`: mlp). A targeted module outside the decoder
layers (an `lm_head` or `embed_tokens` LoRA) has no block: per-block weights refuse it rather than
guess which block it belongs to; one weight per adapter merges it as before."""

from __future__ import annotations

import json
import re
from pathlib import Path

KINDS = ("attention", "mlp")
LAYER = re.compile(r"(?:^|\.)layers\.(?P<index>\d+)\.(?P<rest>.+)$")
KIND_WORDS = {"attention": ("self_attn", "attn", "attention", "self_attention"),
              "mlp": ("mlp", "feed_forward", "ffn")}


def layered(weights) -> bool:
    """Whether a `weights` list (as in MergeConfig) has any per-block or per-kind weight."""
    return any(not isinstance(w, (int, float)) for w in weights or [])


def block_count(weights) -> int:
    """N: the length of the block lists (1 when every weight is a number or a kind's number)."""
    lengths = {len(v) for w in weights or [] for v in (w.values() if isinstance(w, dict) else [w])
               if isinstance(v, list)}
    return lengths.pop() if len(lengths) == 1 else 1


def check_form(weights) -> None:
    """A ValueError (the caller names the key `weights`) for a malformed layer-wise form."""
    lengths = set()
    for index, weight in enumerate(weights):
        values = weight.values() if isinstance(weight, dict) else [weight]
        if isinstance(weight, dict):
            unknown = [k for k in weight if k not in KINDS]
            if unknown or not weight:
                raise ValueError(f"adapter {index}: {', '.join(map(repr, unknown)) or 'an empty mapping'}: per-kind "
                                 f"weights are keyed by {' and '.join(KINDS)}")
        for value in values:
            if isinstance(value, list):
                if not value:
                    raise ValueError(f"adapter {index}: an empty list of block weights")
                lengths.add(len(value))
    if len(lengths) > 1:
        raise ValueError(f"block lists of {' and '.join(map(str, sorted(lengths)))} weights; every adapter's list "
                         "has one weight per block, the same number of blocks for all")


def block_ranges(layers: int, blocks: int) -> list[tuple[int, int]]:
    """(first, last) layer of each block: as even as possible, the first `layers % blocks` one larger."""
    size, extra = divmod(layers, blocks)
    out, start = [], 0
    for b in range(blocks):
        end = start + size + (1 if b < extra else 0)
        out.append((start, end - 1))
        start = end
    return out


def count_layers(base_dir: Path, names) -> int | None:
    """The base's decoder layers: `num_hidden_layers` of its config.json (or of its text_config),
    else one more than the largest `layers.<i>.` index among its weight names."""
    try:
        config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    for source in (config, config.get("text_config") or {}):
        value = source.get("num_hidden_layers") if isinstance(source, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    found = [int(m["index"]) for m in map(LAYER.search, names) if m]
    return max(found) + 1 if found else None


def kind_of(rest: str) -> str | None:
    head = rest.split(".")[0]
    return next((kind for kind, words in KIND_WORDS.items() if head in words), None)


def assign(modules: list[str], layers: int | None, blocks: int, kinds: bool) -> dict[str, tuple[int, str | None]]:
    """module -> (block, kind or None). A ValueError (the caller names its key) for a block
    count above the layers, a module outside the decoder layers, or (kinds) one of no known kind."""
    if layers is None:
        raise ValueError("the base's config.json has no num_hidden_layers and no weight is named layers.<i>.: "
                         "its decoder layers cannot be counted")
    if blocks > layers:
        raise ValueError(f"{blocks} blocks is more than the base's {layers} decoder layers (num_hidden_layers); "
                         f"give at most {layers}")
    starts = [first for first, _ in block_ranges(layers, blocks)]
    out = {}
    for name in modules:
        match = LAYER.search(name)
        if match is None or int(match["index"]) >= layers:
            raise ValueError(f"{name} lies outside the decoder layers (model.layers.<i>.): per-block weights cannot "
                             "place it; merge it with one weight per adapter")
        kind = kind_of(match["rest"]) if kinds else None
        if kinds and kind is None:
            raise ValueError(f"{name} is neither attention ({', '.join(KIND_WORDS['attention'])}) nor mlp "
                             f"({', '.join(KIND_WORDS['mlp'])}): per-kind weights cannot place it")
        out[name] = (sum(1 for s in starts if s <= int(match["index"])) - 1, kind)
    return out


def module_weights(weights: list, modules: list[str], layers: int | None) -> dict[str, list[float]]:
    """module -> one weight per adapter, from the layer-wise `weights` (a ValueError naming the
    module or the adapter when the form does not fit the base)."""
    kinds = any(isinstance(w, dict) for w in weights)
    places = assign(modules, layers, block_count(weights), kinds)
    out = {}
    for name, (block, kind) in places.items():
        row = []
        for index, weight in enumerate(weights):
            if isinstance(weight, dict):
                if kind not in weight:
                    raise ValueError(f"adapter {index} has no {kind} weight, and {name} is an {kind} module")
                weight = weight[kind]
            row.append(float(weight[block] if isinstance(weight, list) else weight))
        out[name] = row
    return out
