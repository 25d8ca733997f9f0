"""One generation identity (lf_wrap.core.identity): the eval's predictions meta, the search's
identity and the search's reuse of the eval's answers all compare the whole value, and every
field of the engine section is a vllm.LLM argument, so a setting added there changes the
identity with no other edit: no list of keys to keep in step by hand."""

from __future__ import annotations

import pytest

from lf_wrap.core.errors import UserError
from lf_wrap.core.identity import engine_generation, generation_changes, generation_identity
from lf_wrap.serving.engine import engine_spec
from lf_wrap.evaluation.predictions import PredictionFile
from lf_wrap.serving.settings import EngineSettings, engine_arguments


class NewerEngineSettings(EngineSettings):
    """The engine section as it would be with one more vLLM argument added to its schema."""

    max_num_batched_tokens: int = 2048


def _generation(settings, max_new_tokens=8, no_answer_text=None) -> dict:
    spec = engine_spec({}, "m", "m", settings, (8, 1), [2])
    shared = engine_generation(template="qwen", prompt_rendering="r1", stop_token_ids=spec.stop_token_ids,
                               engine_kwargs=spec.kwargs, long_prompts="skip")
    return generation_identity(shared, max_new_tokens, no_answer_text)


def test_a_field_added_to_the_engine_schema_is_an_engine_argument_and_changes_the_identity():
    a, b = NewerEngineSettings(), NewerEngineSettings(max_num_batched_tokens=4096)
    assert engine_arguments(b)["max_num_batched_tokens"] == 4096
    assert generation_changes(_generation(a), _generation(b)) == ["engine_args"]
    assert _generation(a)["engine_args"]["max_num_batched_tokens"] == 2048


def test_lf_wraps_own_settings_reach_no_engine_and_change_no_answer():
    kwargs = engine_arguments(EngineSettings(serve="lora", data_parallel_size=2, max_loras=4))
    assert not {"serve", "data_parallel_size", "max_loras", "max_lora_rank", "extra_args"} & set(kwargs)
    assert generation_changes(_generation(EngineSettings()), _generation(EngineSettings(data_parallel_size=2))) == []
    extra = EngineSettings(extra_args={"max_num_seqs": 4})
    assert engine_arguments(extra)["max_num_seqs"] == 4
    assert generation_changes(_generation(EngineSettings()), _generation(extra)) == ["engine_args"]


def test_each_tasks_own_settings_are_part_of_it():
    base = _generation(EngineSettings())
    assert generation_changes(base, _generation(EngineSettings(), max_new_tokens=9)) == ["max_new_tokens"]
    assert generation_changes(base, _generation(EngineSettings(), no_answer_text="none")) == ["no_answer_text"]


def test_a_key_added_to_the_predictions_meta_is_compared_by_default(tmp_path):
    """Only the keys that describe a run (model and task names, the file list, lf-wrap's version)
    are left out of the comparison; anything else that differs refuses the saved rows."""
    path = tmp_path / "qa.jsonl"
    meta = {"model": "base", "model_fingerprint": "f", **_generation(EngineSettings())}
    PredictionFile(path, meta).append([{"row": 0, "prompt_sha256": "p", "prediction": "x", "references": ["x"]}])
    PredictionFile(path, {**meta, "lf_wrap_version": "9.9", "model_files": {"a": "b"}})      # reused
    with pytest.raises(UserError, match="generated with a_new_setting=None, now a_new_setting=1"):
        PredictionFile(path, {**meta, "a_new_setting": 1})


def test_a_search_recipe_field_marked_as_space_is_part_of_the_space_with_no_other_edit():
    """Which search settings make "another search" is declared on the schema (SPACE), not listed
    in a tuple elsewhere: a field added with the marker enters the manifest's space."""
    from pydantic import Field

    from lf_wrap.search.folder import search_space
    from lf_wrap.search.recipe import SPACE, SearchRecipe

    class NewerSearchRecipe(SearchRecipe):
        scaling: list[float] = Field([1.0], json_schema_extra=SPACE)

    one = NewerSearchRecipe(eval="e.yaml", adapters=[{"path": "x"}, {"path": "y"}])
    other = one.model_copy(update={"scaling": [0.5, 1.0]})
    assert search_space(one)["scaling"] == [1.0]
    assert search_space(one) != search_space(other)
    assert "budget" not in search_space(one) and "out" not in search_space(one)   # how long, where: not the space
