"""A study of your own, end to end, with nothing but task files and lf-wrap commands: two tasks
made here (a label task scored with exact match, a short-text task with a nested field scored
with ROUGE, each from JSON Lines files), prepared, scaffolded with `lf-wrap init`, trained on the
tiny model (--smoke), merged, evaluated and merge-searched. No Python snippet and no hand-edited
JSON or YAML between the steps: each stage finds the task from the dataset it was prepared from.

The tiny model here is built with a wider initial spread (init_std 0.1) than the other tests' one:
at transformers' default 0.02 its tied embeddings are too short for a LoRA to make any answer
likely, and a specialist that learned nothing leaves the search no gain to keep. With it, 30 CPU
steps teach each adapter its task and the search runs to its final report."""

from __future__ import annotations

import json
import time

import pytest

from conftest import read_json, run_lf_wrap

pytestmark = pytest.mark.slow

LABEL_TASK = """\
name: sentiment
prompt: "Is this review positive or negative?\\n{review}"
response: label
metric: exact_match
max_new_tokens: 8
"""

HEADLINE_TASK = """\
name: headline
system: You write headlines.
prompt: "Write a headline for this story:\\n{story.body}"
response: title
metric: rouge
max_new_tokens: 12
non_empty: [story.body]
"""

GOOD = ["great", "lovely", "wonderful", "superb"]
BAD = ["awful", "boring", "terrible", "dull"]
THINGS = ["film", "book", "meal", "hotel", "concert", "game"]
CITIES = ["Riverton", "Lakeside", "Oakridge", "Westport", "Fairview"]
EVENTS = ["opens a bridge", "closes a school", "plants trees", "hires nurses"]


def label_rows() -> list[dict]:
    return [{"review": f"The {thing} was {word}.", "label": "positive" if word in GOOD else "negative"}
            for thing in THINGS for word in GOOD + BAD]


def headline_rows() -> list[dict]:
    return [{"story": {"body": f"On Monday the council of {city} said it {event}. Residents were told in a letter."},
             "title": f"{city} {event}", "id": f"{city}-{i}"}
            for city in CITIES for i, event in enumerate(EVENTS)]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def ok(done):
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


# The eval's engine settings, as `--set` overrides (the search takes them as eval_overrides).
ENGINE = ["engine.dtype=float32", "engine.max_model_len=512", "engine.gpu_memory_utilization=0.2"]


@pytest.fixture(scope="module")
def learning_model(tmp_path_factory):
    from lf_wrap.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-learns", init_std=0.1)


@pytest.fixture(scope="module")
def study(learning_model, tmp_path_factory):
    """Every step of the study, timed; returns (root, study folder, seconds per step)."""
    root = tmp_path_factory.mktemp("own_tasks")
    (root / "tasks").mkdir()
    (root / "tasks" / "sentiment.yaml").write_text(LABEL_TASK, encoding="utf-8")
    (root / "tasks" / "headline.yaml").write_text(HEADLINE_TASK, encoding="utf-8")
    labels, heads = label_rows(), headline_rows()
    write_jsonl(root / "data" / "sentiment_train.jsonl", labels[:40])
    write_jsonl(root / "data" / "sentiment_validation.jsonl", labels[40:])
    write_jsonl(root / "data" / "headline_train.jsonl", heads[:14])
    write_jsonl(root / "data" / "headline_validation.jsonl", heads[14:])
    seconds = {}
    start = time.monotonic()
    ok(run_lf_wrap("init", "my-study", "--task", "tasks/sentiment.yaml", "--task", "tasks/headline.yaml",
                   "--model", learning_model, cwd=root))
    folder = root / "my-study"
    for task, rows in (("sentiment", (40, 8)), ("headline", (14, 6))):
        for split, n in zip(("train", "validation"), rows):
            ok(run_lf_wrap("data", "prepare", root / "tasks" / f"{task}.yaml", "--source",
                           root / "data" / f"{task}_{split}.jsonl", "--split", split, "-n", n,
                           "--name", f"{task}_{split}", cwd=folder))
    seconds["init+prepare"] = time.monotonic() - start
    for task in ("sentiment", "headline"):
        mark = time.monotonic()
        ok(run_lf_wrap("train", f"train/{task}.yaml", "--smoke", "--set", "max_steps=30",
                       "--set", "lora_target=all", cwd=folder))
        seconds[f"train {task}"] = time.monotonic() - mark
    mark = time.monotonic()
    ok(run_lf_wrap("merge", "recipe", "merge.yaml", cwd=folder))
    seconds["merge"] = time.monotonic() - mark
    mark = time.monotonic()
    ok(run_lf_wrap("eval", "eval.yaml", *[a for s in ENGINE for a in ("--set", s)], cwd=folder))
    seconds["eval"] = time.monotonic() - mark
    mark = time.monotonic()
    search = ["search.yaml", "--set", "budget=4", "--set", "round_size=2", "--set", "methods=[linear,ties]",
              "--set", "rows.search=3", "--set", "rows.folds=null", "--set", f"eval_overrides=[{','.join(ENGINE)}]"]
    ok(run_lf_wrap("merge", "search", *search, "--check", cwd=folder))
    searched = run_lf_wrap("merge", "search", *search, cwd=folder)
    seconds["search"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - start
    print(f"\nown-task study, seconds per step: {json.dumps({k: round(v, 1) for k, v in seconds.items()})}")
    return root, folder, seconds, searched


def test_init_writes_recipes_that_open_with_their_command(study):
    _, folder, *_ = study
    for relative in ("train/sentiment.yaml", "train/headline.yaml", "merge.yaml", "eval.yaml", "search.yaml"):
        first = (folder / relative).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# lf-wrap ") and relative in first
    eval_text = (folder / "eval.yaml").read_text(encoding="utf-8")
    assert "metric:" not in eval_text and "max_new_tokens:" not in eval_text      # nothing repeated


def test_prepared_sets_carry_the_task(study):
    _, folder, *_ = study
    rows = read_json(folder / "dataset_info" / "headline_validation.json")
    assert rows[0]["instruction"].startswith("Write a headline for this story:\nOn Monday the council of ")
    assert rows[0]["system"] == "You write headlines." and rows[0]["input"] == ""
    info = read_json(folder / "dataset_info" / "dataset_info.json")
    assert info["headline_validation"]["columns"]["system"] == "system"
    assert "system" not in info["sentiment_train"]["columns"]
    manifest = read_json(folder / "dataset_info" / "sentiment_train.manifest.json")
    assert manifest["task"] == "sentiment" and manifest["task_declaration"]["metric"] == "exact_match"


def test_every_stage_reads_the_task_file(study):
    root, folder, *_ = study
    for task in ("sentiment", "headline"):
        assert read_json(folder / "runs" / f"{task}-latest" / "manifest.json")["task"] == task
    out = folder / "eval" / "results" / "eval"
    doc = read_json(out / "metrics.json")
    assert doc["headline"]["sentiment"] == "exact_match" and doc["headline"]["headline"] == "rouge1"
    assert set(doc["metrics"]) == {"base", "lora_sentiment", "lora_headline", "merge"}
    for model in doc["metrics"]:
        assert set(doc["metrics"][model]) == {"sentiment", "headline"}
    for task, tokens in (("sentiment", 8), ("headline", 12)):
        assert read_json(out / "predictions" / "base" / f"{task}.meta.json")["max_new_tokens"] == tokens
        rows = (out / "predictions" / "base" / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
        assert max(json.loads(line)["completion_tokens"] for line in rows) <= tokens
    assert read_json(out / "table.json")["rows"][:2] == ["sentiment EM", "headline ROUGE-1"]
    # lf-wrap score takes the task file: the same numbers as the eval's
    for task in ("sentiment", "headline"):
        done = ok(run_lf_wrap("score", out / "predictions" / "lora_sentiment" / f"{task}.jsonl", "--task",
                              root / "tasks" / f"{task}.yaml", "--json", cwd=folder))
        scores = json.loads(done.stdout)
        assert {k: v for k, v in scores.items() if not k.endswith("_ci95")} == doc["metrics"]["lora_sentiment"][task]



def test_the_search_scores_each_task_with_its_own_metric(study):
    _, folder, _, searched = study
    ok(searched)
    board = read_json(folder / "runs" / "search" / "leaderboard.json")
    assert board["counted"] == ["sentiment", "headline"]
    assert board["base"] == {"sentiment": 0.0, "headline": 0.0}          # the random base answers nothing right
    assert all(board["specialist"][task] > 0 for task in ("sentiment", "headline"))
    assert {row["role"] for row in board["rows"]} >= {"reference: sum", "reference: linear 0.5"}
    final = (folder / "runs" / "search" / "final.md").read_text(encoding="utf-8")
    assert "sentiment" in final and "headline" in final
    assert "Best vs sum on the task best keeps least (" in final and "paired bootstrap p = " in final
    # the best of each method the search tried, on the report rows
    methods = list(dict.fromkeys(row["method"] for row in board["rows"]))
    assert methods == ["linear", "ties"] or methods == ["ties", "linear"], methods
    figures = read_json(folder / "runs" / "search" / "manifest.json")["final"]
    assert set(figures["families"]) == {"linear", "ties"}
    assert "The best of each merge method the search tried" in final and "| ties | `ties[" in final
    # 5 and 3 report rows: the winner (linear 0.5 on this run) is not confirmed against the sum
    # merge; best/ holds a merge exactly when the verdict is confirmed
    assert figures["verdict"] in ("confirmed", "not_confirmed") and final.startswith("Verdict: ")
    written = (folder / "runs" / "search" / "best" / "merge_manifest.json").is_file()
    assert written == (figures["verdict"] == "confirmed")


def _ledger(folder) -> dict:
    lines = (folder / "scores.jsonl").read_text(encoding="utf-8").splitlines()
    return {(e["rows"], e["key"]): e for e in map(json.loads, lines)}


def test_the_search_takes_the_base_and_specialists_answers_from_the_eval(study):
    """The eval served the base and each adapter (patched) with the search's engine arguments on
    the same rows: the search takes those answers, and they score exactly what generating them
    again in the search's own engine scores."""
    _, folder, _, searched = study
    ok(searched)
    manifest = read_json(folder / "runs" / "search" / "manifest.json")
    assert manifest["from_eval"] == 6                        # base + 2 specialists, search and report rows
    taken = {k: e for k, e in _ledger(folder / "runs" / "search").items() if "from_eval" in e}
    assert {key for _, key in taken} == {"base", "linear[1,0]", "linear[0,1]"}
    fresh = ok(run_lf_wrap("merge", "search", "search.yaml", "--set", "budget=2", "--set", "round_size=2",
                           "--set", "methods=[linear]", "--set", "rows.search=3", "--set", "rows.folds=2",
                           "--set", f"eval_overrides=[{','.join(ENGINE)}]", "--set", "reuse_eval=false",
                           "--set", "out=runs/search-fresh", cwd=folder))
    assert "taken from" not in fresh.stderr
    generated = _ledger(folder / "runs" / "search-fresh")
    for key, entry in taken.items():
        assert "from_eval" not in generated[key]
        assert (entry["metrics"], entry["per_row"]) == (generated[key]["metrics"], generated[key]["per_row"]), key


def test_the_searchs_engine_loads_the_model_the_eval_compiled(study):
    """The eval's engine compiled the model into vLLM's cache; the search's, the same model with
    the same settings, loads it from there. On vLLM 0.32's default cache (AOT artifacts) the CPU
    backend could not load it back, logged 'Compiling model again due to a load failure', and
    compiled it again, as every later engine start did."""
    _, folder, _, searched = study
    ok(searched)
    log = (folder / "runs" / "search" / "search.log").read_text(encoding="utf-8")
    assert "init engine (profile, create kv cache, warmup model) took" in log     # a compiled engine started
    assert "enforce_eager=False" in log and "Compiling model again" not in log


def test_it_runs_in_a_few_minutes(study):
    assert study[2]["total"] < 600
