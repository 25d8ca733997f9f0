"""`lf-wrap eval` end to end on the tiny model: base + two LoRA adapters in one vLLM engine, a
merged full model in its own, the three sample tasks; then resumption after a kill.

One eval run (two engine starts) is shared by most tests; the resume test adds one engine start.
float32 throughout: in float32 vLLM's greedy tokens equal transformers' (bfloat16 drifts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import read_json, run_lf_wrap
from helpers.adapters import load_model, make_trained_adapter, model_greedy

pytestmark = pytest.mark.slow

TASKS = ("translate", "summarize", "qa")
MODELS = ["base", "lora_translate", "lora_qa", "merged_qa"]


def merge_adapter(base: Path, adapter: Path, out: Path) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                       adapter).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def prompt_lengths(tiny_model: Path, prepared: Path) -> dict[str, list[int]]:
    from transformers import AutoTokenizer

    from lf_wrap.tasks.prompts import encode_prompt, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return {task: [len(encode_prompt(tokenizer, render_prompt(row)))
                   for row in read_json(prepared / f"tiny_{task}_validation.json")] for task in TASKS}


@pytest.fixture(scope="module")
def setup(tiny_model, prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    translate = make_trained_adapter(tiny_model, root / "adapter_translate", seed=1)
    qa = make_trained_adapter(tiny_model, root / "adapter_qa", seed=2)
    merged = merge_adapter(tiny_model, qa, root / "merged_qa")
    lengths = prompt_lengths(tiny_model, prepared)
    # Every qa and translate prompt fits; summarize answers get so many tokens that exactly the
    # longest summarize prompt(s) do not: skipped and counted.
    max_model_len = max(lengths["qa"]) + 12
    max_new = {"translate": 16, "qa": 12, "summarize": max_model_len - max(lengths["summarize"]) + 1}
    assert max(lengths["translate"]) + max_new["translate"] <= max_model_len
    recipe = {
        "model_name_or_path": str(tiny_model), "template": "qwen", "dataset_dir": str(prepared),
        "models": [{"name": "base"},
                   {"name": "lora_translate", "path": str(translate), "task": "translate"},
                   {"name": "lora_qa", "path": str(qa), "task": "qa"},
                   {"name": "merged_qa", "path": str(merged)}],
        "tasks": {t: {"dataset": f"tiny_{t}_valid*", "max_new_tokens": n} for t, n in max_new.items()},
        # max_loras 2 = every slot filled by the two adapters: lf-wrap must raise it (the vLLM bug).
        # serve: lora, as on a GPU: these tests hold vLLM's LoRA path (slots, base requests beside
        # adapters'); the patched path is tests/test_eval_patched.py's.
        "engine": {"dtype": "float32", "max_model_len": max_model_len, "gpu_memory_utilization": 0.2,
                   "max_lora_rank": 8, "max_loras": 2, "serve": "lora", "enforce_eager": True},
        "long_prompts": "skip",
        "batch_size": 12,
        "bootstrap": {"resamples": 200, "seed": 7, "compare_to": ["lora_translate"]},
    }
    path = root / "eval-tiny.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    skipped = sum(1 for n in lengths["summarize"] if n + max_new["summarize"] > max_model_len)
    return {"root": root, "recipe": path, "tiny": tiny_model, "prepared": prepared, "translate": translate,
            "qa": qa, "lengths": lengths, "skipped": skipped, "max_new": max_new}


@pytest.fixture(scope="module")
def evaluated(setup):
    out = setup["root"] / "results"
    done = run_lf_wrap("eval", setup["recipe"], "--out", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return {**setup, "out": out, "stdout": done.stdout, "stderr": done.stderr}


def predictions(out: Path, model: str, task: str) -> list[dict]:
    path = out / "predictions" / model / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def transformers_greedy(tiny_model: Path, adapter: Path | None, rows: list[dict], max_new_tokens: int) -> list[list[int]]:
    """The reference: transformers `generate` (+ PEFT for an adapter), greedy, one prompt at a time, up
    to the template's stop word. Token ids, not text: the random tiny model emits stray UTF-8 bytes,
    which decoders render differently."""
    from transformers import AutoTokenizer

    from lf_wrap.tasks.prompts import encode_prompt, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [encode_prompt(tokenizer, render_prompt(row)) for row in rows]
    return model_greedy(load_model(tiny_model, adapter), prompts, max_new_tokens,
                        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>")],
                        pad_token_id=tokenizer.pad_token_id)


# ---------------------------------------------------------------- one run, many checks


def test_writes_every_output(evaluated):
    out = evaluated["out"]
    for model in MODELS:
        for task in TASKS:
            assert (out / "predictions" / model / f"{task}.jsonl").is_file()
    for name in ("metrics.json", "manifest.json", "recipe.yaml", "table.md", "table.csv", "table.json"):
        assert (out / name).is_file(), name
    for name in ("chart.png", "loss_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (out / "recipe.yaml").read_text() == evaluated["recipe"].read_text()
    assert "| metric | base | lora_translate | lora_qa | merged_qa |" in evaluated["stdout"]


def test_base_and_adapters_share_one_engine_and_the_lora_slot_guard_applies(evaluated):
    manifest = read_json(evaluated["out"] / "manifest.json")
    engines = manifest["engines"]
    assert [e["models"] for e in engines] == [["base", "lora_translate", "lora_qa"], ["merged_qa"]]
    assert engines[0]["vllm_args"]["enable_lora"] is True and engines[0]["vllm_args"]["max_loras"] == 3
    assert "enable_lora" not in engines[1]["vllm_args"]
    assert "engine.max_loras raised from 2 to 3" in evaluated["stderr"]
    assert manifest["versions"]["vllm"] and manifest["versions"]["transformers"] and manifest["versions"]["torch"]
    assert manifest["versions"]["lf-wrap"] and len(manifest["git"]["commit"]) == 40
    assert manifest["stage"] == "eval" and manifest["status"] == "finished" and manifest["argv"][:2] == ["lf-wrap", "eval"]
    assert engines[0]["vllm_args"]["dtype"] == "float32"


def test_vllm_greedy_equals_transformers_for_base_and_adapters(evaluated):
    """Base requests were batched with both adapters' requests (batch_size 12 > 3 models): if base
    requests picked up an adapter (vLLM's full-slots bug), base would differ from transformers."""
    rows = read_json(evaluated["prepared"] / "tiny_translate_validation.json")
    n = evaluated["max_new"]["translate"]
    for model, adapter in (("base", None), ("lora_translate", evaluated["translate"]), ("lora_qa", evaluated["qa"])):
        ours = [p["token_ids"] for p in predictions(evaluated["out"], model, "translate")]
        assert ours == transformers_greedy(evaluated["tiny"], adapter, rows, n), model
    base = [p["token_ids"] for p in predictions(evaluated["out"], "base", "translate")]
    for model in ("lora_translate", "lora_qa"):
        assert [p["token_ids"] for p in predictions(evaluated["out"], model, "translate")] != base


def test_prediction_lines_follow_the_schema(evaluated):
    lines = predictions(evaluated["out"], "lora_qa", "qa")
    rows = read_json(evaluated["prepared"] / "tiny_qa_validation.json")
    for line in lines:
        assert set(line) >= {"row", "id", "prompt_sha256", "prediction", "references", "finish_reason",
                             "prompt_tokens", "completion_tokens"}
        row = rows[line["row"]]
        assert line["id"] == row["id"]
        assert line["references"] == ([] if row["output"] == "unanswerable" else [row["output"]])
        assert line["finish_reason"] in ("stop", "length") and line["completion_tokens"] <= evaluated["max_new"]["qa"]
    assert any(line["references"] == [] for line in lines), "the sample qa set has unanswerable rows"


def test_too_long_prompts_are_skipped_and_counted(evaluated):
    counts = read_json(evaluated["out"] / "metrics.json")["counts"]
    rows = len(evaluated["lengths"]["summarize"])
    assert evaluated["skipped"] >= 1
    for model in MODELS:
        assert counts[model]["summarize"]["skipped_too_long"] == evaluated["skipped"]
        assert len(predictions(evaluated["out"], model, "summarize")) == rows - evaluated["skipped"]
        assert counts[model]["qa"]["skipped_too_long"] == counts[model]["translate"]["skipped_too_long"] == 0
    assert "Rows skipped" in (evaluated["out"] / "table.md").read_text()


def test_metrics_equal_lf_wrap_score_on_the_same_files(evaluated):
    results = read_json(evaluated["out"] / "metrics.json")
    assert results["higher_is_better"]["exact_match"] is True
    for model in ("base", "lora_qa"):
        for task in TASKS:
            done = run_lf_wrap("score", evaluated["out"] / "predictions" / model / f"{task}.jsonl",
                               "--task", task, "--json", "--resamples", "200", "--seed", "7")
            assert done.returncode == 0, done.stderr
            scores = json.loads(done.stdout)
            assert {k: v for k, v in scores.items() if not k.endswith("_ci95")} == results["metrics"][model][task]
            assert {k[:-5]: v for k, v in scores.items() if k.endswith("_ci95")} == results["intervals"][model][task]


def test_row_scores_are_written_beside_every_predictions_file(evaluated):
    keys = {"translate": {"bleu_stats"}, "summarize": {"rouge1", "rouge2", "rougeL", "rougeLsum"},
            "qa": {"exact_match", "f1"}}
    for model in MODELS:
        for task in TASKS:
            lines = predictions(evaluated["out"], model, task)
            scores = [json.loads(line) for line in (evaluated["out"] / "predictions" / model / f"{task}.scores.jsonl")
                      .read_text(encoding="utf-8").splitlines()]
            assert [(s["row"], s["id"]) for s in scores] == sorted((p["row"], p["id"]) for p in lines)
            assert all(set(s) == {"row", "id"} | keys[task] for s in scores)
    assert not list((evaluated["out"] / "predictions").glob("*/.*.tmp"))        # written atomically


def test_metrics_json_carries_intervals_and_paired_tests(evaluated):
    doc = read_json(evaluated["out"] / "metrics.json")
    assert doc["bootstrap"] == {"resamples": 200, "seed": 7, "confidence": 0.95, "compare_to": ["lora_translate"],
                                "against": ["base", "lora_translate"]}
    for model in MODELS:
        for task in TASKS:
            for metric, value in doc["metrics"][model][task].items():
                low, high = doc["intervals"][model][task][metric]
                assert low <= value <= high
    # Every model against base, and every model but lora_translate against lora_translate.
    assert {m: sorted(v) for m, v in doc["paired"].items()} == {
        "base": ["lora_translate"], "lora_translate": ["base"], "lora_qa": ["base", "lora_translate"],
        "merged_qa": ["base", "lora_translate"]}
    rows = doc["counts"]["lora_qa"]
    for task in TASKS:
        for metric, test in doc["paired"]["lora_qa"]["base"][task].items():
            gain = doc["metrics"]["lora_qa"][task][metric] - doc["metrics"]["base"][task][metric]
            assert test["difference"] == pytest.approx(gain, abs=1e-12) and test["rows"] == rows[task]["rows"]
            assert test["ci95"][0] <= test["difference"] <= test["ci95"][1] and 0 < test["p_value"] <= 1
    markdown = (evaluated["out"] / "table.md").read_text()
    assert "[low, high]: the 95% bootstrap interval (200 resamples of the rows, seed 7)" in markdown
    assert "Difference from lora_translate:" in markdown
    qa_line = next(line for line in markdown.splitlines() if line.startswith("| qa EM |"))
    assert qa_line.count("[") == len(MODELS)


def test_table_marks_own_task_and_gains(evaluated):
    table = read_json(evaluated["out"] / "table.json")
    assert table["rows"] == ["translate BLEU", "summarize ROUGE-1", "qa EM", "mean"]
    assert table["columns"] == MODELS
    assert table["own_task"]["lora_qa"] == "qa EM" and table["own_task"]["base"] is None
    markdown = (evaluated["out"] / "table.md").read_text()
    qa_line = next(line for line in markdown.splitlines() if line.startswith("| qa EM |"))
    assert qa_line.count("**") == 2      # lora_qa's own cell in the main table only
    base, lora = table["values"]["base"]["qa EM"], table["values"]["lora_qa"]["qa EM"]
    assert table["gain_over_base"]["lora_qa"]["qa EM"] == pytest.approx(lora - base)


# ---------------------------------------------------------------- resumption


def test_killed_run_resumes_without_regenerating_finished_rows(evaluated, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(evaluated["out"], out)
    translate = out / "predictions" / "lora_translate" / "translate.jsonl"
    summarize = out / "predictions" / "base" / "summarize.jsonl"
    original = {p: p.read_bytes() for p in (out / "predictions").rglob("*.jsonl")}
    # A kill mid-write: two whole rows missing and the next one torn; another file lost its last row.
    lines = original[translate].splitlines(keepends=True)
    kept_translate = b"".join(lines[:-3])
    translate.write_bytes(kept_translate + lines[-3][:25])
    kept_summarize = b"".join(original[summarize].splitlines(keepends=True)[:-1])
    summarize.write_bytes(kept_summarize)

    done = run_lf_wrap("eval", evaluated["recipe"], "--out", out)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "4 predictions generated" in done.stdout
    assert "torn last line" in done.stderr
    assert "(merged_qa): all" in done.stderr and "not started" in done.stderr   # no engine for a finished model
    assert translate.read_bytes().startswith(kept_translate)
    assert summarize.read_bytes().startswith(kept_summarize)
    for path, before in original.items():
        rows_now = sorted(json.loads(line)["row"] for line in path.read_text().splitlines())
        assert rows_now == sorted(json.loads(line)["row"] for line in before.decode().splitlines()), path
        if path not in (translate, summarize):
            assert path.read_bytes() == before, f"{path} was rewritten"
    # The scores beside each file were rewritten with it: every row again, the same as before the kill.
    for path in (translate, summarize):
        assert path.with_suffix(".scores.jsonl").read_bytes() == (
            evaluated["out"] / path.relative_to(out)).with_suffix(".scores.jsonl").read_bytes()
    again = run_lf_wrap("eval", evaluated["recipe"], "--out", out)
    assert again.returncode == 0 and "0 predictions generated" in again.stdout


# ---------------------------------------------------------------- bad input (no engine starts)

REPO = Path(__file__).resolve().parents[1]


def _recipe_with(setup, tmp_path, **changes) -> Path:
    recipe = yaml.safe_load(setup["recipe"].read_text())
    if "models" in changes:
        recipe.pop("bootstrap")        # its compare_to names a model of the original list
    for key, value in changes.items():
        recipe[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("case", ["missing", "not_a_model", "other_base"])
def test_bad_model_is_one_clear_error_and_writes_nothing(setup, tmp_path, case):
    folder = tmp_path / "model"
    if case == "not_a_model":
        folder.mkdir()
        (folder / "notes.txt").write_text("hello")
    if case == "other_base":
        shutil.copytree(setup["translate"], folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B"
        (folder / "adapter_config.json").write_text(json.dumps(config))
    recipe = _recipe_with(setup, tmp_path, models=[{"name": "base"}, {"name": "odd", "path": str(folder)}])
    out = tmp_path / "results"
    done = run_lf_wrap("eval", recipe, "--out", out)
    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: model 'odd'")
    assert {"missing": "does not exist", "not_a_model": "is not a model",
            "other_base": "was trained on 'meta-llama/Llama-3.2-1B'"}[case] in message
    assert not out.exists()


def test_missing_or_ambiguous_dataset_is_an_error(setup, tmp_path):
    recipe = _recipe_with(setup, tmp_path, tasks={"qa": {"dataset": "tiny_qa_test"}})
    done = run_lf_wrap("eval", recipe, "--out", tmp_path / "out")
    assert done.returncode == 2 and "dataset 'tiny_qa_test' is not in" in done.stderr
    recipe = _recipe_with(setup, tmp_path, tasks={"qa": {"dataset": "tiny_qa_*"}})
    done = run_lf_wrap("eval", recipe, "--out", tmp_path / "out")
    assert done.returncode == 2 and "must match exactly one dataset" in done.stderr
    assert "tiny_qa_train, tiny_qa_validation" in done.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_recipe_key_suggests_the_right_one(setup, tmp_path):
    recipe = _recipe_with(setup, tmp_path)
    done = run_lf_wrap("eval", recipe, "--set", "engine.max_model_length=128")
    assert done.returncode == 2 and "engine.max_model_length" in done.stderr and "max_model_len" in done.stderr


def test_lora_rank_above_max_lora_rank_is_raised_with_a_note(setup):
    from lf_wrap.evaluation.models import lora_settings, resolve_models
    from lf_wrap.evaluation.recipe import load_eval_recipe

    recipe, _ = load_eval_recipe(setup["recipe"], ["engine.max_lora_rank=1"])
    models = resolve_models(recipe)
    assert [(m.name, m.kind, m.rank) for m in models] == [
        ("base", "base", None), ("lora_translate", "adapter", 8), ("lora_qa", "adapter", 8), ("merged_qa", "full", None)]
    rank, slots, notes = lora_settings(models, recipe.engine.max_lora_rank, recipe.engine.max_loras)
    assert (rank, slots) == (8, 3)
    assert "engine.max_lora_rank raised from 1 to 8 (adapter 'lora_translate' has rank 8)" in notes
    # Left out, it fits the adapters (vLLM pads every adapter to it: a larger one costs per token);
    # set larger, the recipe's value stands.
    assert lora_settings(models, None, None)[:2] == (8, 3)
    assert lora_settings(models, 32, None)[0] == 32


def test_the_same_model_twice_is_refused(setup, tmp_path):
    recipe = _recipe_with(setup, tmp_path, models=[{"name": "a", "path": str(setup["qa"])},
                                                   {"name": "b", "path": str(setup["qa"])}])
    done = run_lf_wrap("eval", recipe, "--out", tmp_path / "out")
    assert done.returncode == 2 and "models 'a' and 'b' are the same model" in done.stderr


def test_resume_with_changed_settings_asks_for_force(tmp_path):
    from lf_wrap.core.errors import UserError
    from lf_wrap.evaluation.predictions import PredictionFile

    path = tmp_path / "qa.jsonl"
    meta = {"model_path": "m", "max_new_tokens": 16, "template": "qwen"}
    first = PredictionFile(path, meta)
    first.append([{"row": 0, "prompt_sha256": "aa", "prediction": "x", "references": []}])
    with pytest.raises(UserError, match="generated with max_new_tokens=16, now max_new_tokens=32; its rows are not reused. Pass --force"):
        PredictionFile(path, {**meta, "max_new_tokens": 32})
    with pytest.raises(UserError, match="row 0 was generated from another prompt"):
        PredictionFile(path, meta).check_prompts({0: "bb"})
    forced = PredictionFile(path, {**meta, "max_new_tokens": 32}, force=True)
    assert forced.done == {} and path.read_text().count("\n") == 1     # old file kept until a batch lands
    forced.append([{"row": 0, "prompt_sha256": "bb", "prediction": "y", "references": []}])
    assert json.loads(path.read_text())["prediction"] == "y"


def test_every_shipped_eval_recipe_validates():
    from lf_wrap.evaluation.recipe import load_eval_recipe

    recipe, text = load_eval_recipe(REPO / "recipes" / "eval.yaml")
    assert recipe.model_name_or_path == "Qwen/Qwen2.5-3B-Instruct" and recipe.template == "qwen"
    assert [m.name for m in recipe.models] == ["base", "lora_translate", "lora_summarize", "lora_qa", "merge_3in1"]
    assert {t: e.dataset for t, e in recipe.tasks.items()} == {
        "translate": "alpaca_wmt19_zh-en_validation_*", "summarize": "alpaca_cnn_dailymail_validation_1143",
        "qa": "alpaca_squad_v2_validation_1000"}
    assert text.startswith("# lf-wrap eval recipe")


def test_long_prompt_policy_skip_or_truncate(tiny_model, prepared):
    from transformers import AutoTokenizer

    from lf_wrap.evaluation.recipe import EvalRecipe
    from lf_wrap.evaluation.requests import build_requests, load_task, tokenize_requests

    recipe = EvalRecipe.model_validate({"model_name_or_path": str(tiny_model), "dataset_dir": str(prepared),
                                        "models": [{"name": "base"}],
                                        "tasks": {"qa": {"dataset": "tiny_qa_validation"}}})
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    data = load_task(recipe, "qa")
    lengths = sorted(len(tokenizer.encode(r.prompt)) for r in build_requests(data, "qwen"))
    max_model_len, max_new = lengths[len(lengths) // 2] + 10, 10        # half the prompts are too long
    skipped = tokenize_requests(build_requests(data, "qwen"), tokenizer, "qwen", max_model_len, max_new, "skip")
    assert len(skipped) == sum(n > max_model_len - max_new for n in lengths) >= 1
    requests = build_requests(data, "qwen")
    assert tokenize_requests(requests, tokenizer, "qwen", max_model_len, max_new, "truncate") == []
    tail = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n")
    for request in requests:
        assert len(request.token_ids) <= max_model_len - max_new and request.token_ids[-len(tail):] == tail
    assert sum(r.truncated for r in requests) == len(skipped)
