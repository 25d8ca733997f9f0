"""The model card (README.md) of a merged folder: Hub front matter, the merge it describes, and a
user's own card never replaced."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard

from conftest import read_json
from lf_wrap.cli import cli
from helpers.adapters import make_adapters


@pytest.fixture(scope="module")
def abc(tiny_model, tmp_path_factory):
    adapters = make_adapters(tiny_model, tmp_path_factory.mktemp("adapters"))
    return [str(adapters[k]) for k in "ABC"]


def merge(*args) -> object:
    return CliRunner().invoke(cli, ["merge", "adapters", *map(str, args)])


@pytest.mark.parametrize("form, library", [("adapter", "peft"), ("model", "transformers")])
def test_a_merge_carries_a_model_card(abc, tmp_path, tiny_model, form, library):
    out = tmp_path / "merged"
    result = merge(*abc, "--method", "linear", "--weights", "0.5,1.0,0.25", "--as", form, "--out", out)
    assert result.exit_code == 0, result.output
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == library
    assert data["base_model"] == read_json(out / "merge_manifest.json")["base"]["name"]
    assert {"merge", "lora", "lf-wrap", "linear"} <= set(data["tags"])
    manifest = read_json(out / "merge_manifest.json")
    assert "# linear merge of 3 LoRA adapters" in card.text
    for entry, weight in zip(manifest["inputs"], [0.5, 1.0, 0.25]):
        assert entry["digest"] in card.text and f"| `{entry['path']}` | {weight} |" in card.text


def test_a_users_model_card_is_never_replaced(abc, tmp_path):
    out = tmp_path / "merged"
    assert merge(*abc, "--method", "linear", "--weights", "1,0,0", "--as", "adapter", "--out", out).exit_code == 0
    # lf-wrap's own card is rewritten by a --force merge ...
    result = merge(*abc, "--method", "linear", "--weights", "0,1,0", "--as", "adapter", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert f"| `{abc[1]}` | 1.0 |" in (out / "README.md").read_text()
    # ... a card someone wrote (no marker line) stops it, and survives.
    users = "---\nlicense: apache-2.0\n---\n# My merge\n\nHand-written notes.\n"
    (out / "README.md").write_text(users)
    result = merge(*abc, "--method", "linear", "--weights", "0,0,1", "--as", "adapter", "--out", out, "--force")
    assert result.exit_code == 2 and "README.md" in result.output and "did not write" in result.output
    assert (out / "README.md").read_text() == users
    assert read_json(out / "merge_manifest.json")["weights"] == [0.0, 1.0, 0.0]
