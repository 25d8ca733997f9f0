"""The options of `lf-wrap merge adapters` are generated from the merge recipe's schema
(lf_wrap.commands.options): every key is an option with the same meaning, and a key added to
the schema, with its docstring, is an option with no other edit."""

from __future__ import annotations

import click
from click.testing import CliRunner

from lf_wrap.cli import cli
from lf_wrap.commands.options import given, recipe_options
from lf_wrap.merge.config import MergeConfig


def test_every_merge_recipe_key_is_an_option_of_merge_adapters():
    text = CliRunner().invoke(cli, ["merge", "adapters", "--help"]).output
    for name, field in MergeConfig.model_fields.items():
        if name != "adapters":
            flag = {"params": "--param", "output_form": "--as"}.get(name, "--" + name.replace("_", "-"))
            assert flag in text, name
    assert "--force" in text and "[default: sum]" in text


def test_a_key_added_to_the_schema_is_an_option_with_its_docstring_as_help():
    class NewerMergeConfig(MergeConfig):
        scale: float | None = None
        """Scale every merged delta by this number."""

    @click.command()
    @recipe_options(NewerMergeConfig, skip=("adapters",))
    def command(**options):
        click.echo(sorted(given(NewerMergeConfig, options).items()))

    runner = CliRunner()
    assert "Scale every merged delta by this number." in runner.invoke(command, ["--help"]).output
    result = runner.invoke(command, ["--scale", "0.5", "--out", "x", "--weights", "1,0.5", "--param", "alpha=2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(sorted({"scale": 0.5, "out": "x", "weights": [1.0, 0.5],
                                                "params": {"alpha": 2}, "method": "sum", "space": "full", "as": "model",
                                                "template": "qwen"}.items()))
    refused = runner.invoke(command, ["--out", "x", "--weights", "1,a"])
    assert refused.exit_code != 0 and "--weights '1,a': expected numbers separated by commas" in str(refused.exception)


def test_validate_lists_and_tells_apart_every_kind_of_the_one_registry(tmp_path):
    """`lf-wrap validate` and the commands read one registry of recipe kinds (lf_wrap.stages):
    its --help lists each with its command, and a file of no kind is refused naming them all."""
    import inspect

    from lf_wrap.stages import STAGES

    text = CliRunner().invoke(cli, ["validate", "--help"]).output
    for name, stage in STAGES.items():
        assert name in text and stage.command in text
        if stage.run is not None:     # the one contract: run(loaded, out, force)
            assert list(inspect.signature(stage.run).parameters)[:3] == ["loaded", "out", "force"]
    odd = tmp_path / "odd.yaml"
    odd.write_text("colour: blue\n")
    result = CliRunner().invoke(cli, ["validate", str(odd)])
    assert result.exit_code == 2
    assert all(f"{name} has {stage.told_by}" in result.output for name, stage in STAGES.items())
