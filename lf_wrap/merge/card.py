"""The model card (README.md) of every folder `lf-wrap merge` writes, in the Hugging Face Hub's
convention: YAML front matter the Hub reads (base_model, library_name, tags), then what the merge
was (method, weights, hyper-parameters, the adapters with their digests), from the merge's own
manifest, so the card and merge_manifest.json never disagree. A search's best/ adds the search's
space and its report-row table (`extra`).

The front matter is written by huggingface_hub's ModelCardData, not by hand. The card carries a
marker line: a README.md with it is lf-wrap's and is rewritten by the next merge into the folder;
one without it (the user's own, or lf-wrap's with the line deleted to keep edits) is never
replaced: `--force` stops and names it (check_users_card)."""

from __future__ import annotations

from pathlib import Path

from lf_wrap import __version__
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import atomic_write_text

CARD_FILE = "README.md"
MARKER = "<!-- lf-wrap model card:"
MARKER_LINE = (f"{MARKER} rewritten by every `lf-wrap merge` into this folder. Delete this line to keep your "
               "edits; a merge with --force then stops instead of replacing the card. -->")
TAGS = ["lf-wrap", "merge", "lora"]


def is_ours(path: Path) -> bool:
    """Is this README.md lf-wrap's card (its marker line still in it)?"""
    try:
        return MARKER in Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def check_users_card(out: Path, option: str = "--out") -> None:
    """A README.md in `out` that lf-wrap did not write (no marker line) is a card someone wrote:
    replacing the folder would delete it, so the merge stops before any work."""
    card = Path(out) / CARD_FILE
    if card.is_file() and not is_ours(card):
        raise UserError(f"{option} {out} holds {card}, a model card lf-wrap did not write (no `{MARKER}` line); "
                        "--force would delete it: move it away (and put it back after the merge), or choose "
                        f"another {option}")


def card_text(manifest: dict, extra: str | None = None) -> str:
    """The card of a merge, from its merge_manifest.json content."""
    from huggingface_hub import ModelCard, ModelCardData

    adapter = manifest["as"] == "adapter"
    data = ModelCardData(base_model=manifest["base"]["name"], library_name="peft" if adapter else "transformers",
                         tags=[*TAGS, manifest["method"]])
    inputs = manifest["inputs"]
    form = "One LoRA adapter" if adapter else "A full model"
    lines = [MARKER_LINE, "", f"# {manifest['method']} merge of {len(inputs)} LoRA adapters", "",
             f"{form} written by lf-wrap {manifest.get('lf_wrap_version', __version__)} "
             f"(`lf-wrap merge`) on {manifest.get('ended') or manifest.get('started') or 'an unknown date'}. "
             f"Base model: `{manifest['base']['name']}` (digest `{manifest['base']['digest']}`). Every figure here "
             "is in merge_manifest.json; merge_config.yaml rebuilds it with `lf-wrap merge recipe`.", "",
             "## Method", "", f"`{manifest['method']}`, as {manifest['as']}"
             + (f" (rank {manifest['rank']})" if manifest.get("rank") else "") + ".", "",
             "## Weights", "", "| adapter | weight |", "| --- | --- |"]
    lines += [f"| `{i['path']}` | {w} |" for i, w in zip(inputs, manifest["weights"])]
    if manifest.get("blocks"):
        layers = ", ".join(f"{a}-{b}" for a, b in manifest["blocks"]["layers"])
        lines += ["", f"Layer-wise: {manifest['blocks']['count']} blocks of decoder layers ({layers}); each "
                      "module's weights are in merge_manifest.json."]
    hyper = {"density": manifest.get("density"), "seed": manifest.get("seed"), "rank": manifest.get("rank"),
             "dtype": manifest.get("dtype"), **(manifest.get("params") or {})}
    lines += ["", "## Hyper-parameters", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in hyper.items() if v is not None]
    lines += ["", "## Adapters", "", "| adapter | digest | r | lora_alpha | scaling |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{i['path']}` | `{i['digest']}` | {i.get('r')} | {i.get('lora_alpha')} | {i.get('scaling')} |"
              for i in inputs]
    if extra:
        lines += ["", extra.strip()]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n").content


def write_card(folder: Path, manifest: dict, extra: str | None = None) -> Path:
    path = Path(folder) / CARD_FILE
    atomic_write_text(path, card_text(manifest, extra))
    return path
