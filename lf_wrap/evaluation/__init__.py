"""`lf-wrap eval`: score the base model, LoRA adapters and full (merged) models on the study's
tasks with vLLM offline batching.

recipe.py       the eval recipe (pydantic), `--set` overrides
models.py       what each named model is (base, adapter, full model folder) and its checks
requests.py     validation rows -> prompts (LLaMA-Factory's template), long-prompt policy
predictions.py  the per-(model, task) JSONL files: schema, resume
results.py      metrics.json (scores of the files on disk, intervals, paired tests) and manifest.json
uncertainty.py  a predictions file scored (lf_wrap.scoring), its per-row scores beside it; `lf-wrap compare`
report.py       `lf-wrap report`: the table from metrics.json (charts.py: its PNGs)
run.py          the stage: plan, generate what is missing, score, write the results folder

The engine, the patched server and the engine section of the recipe live below this package,
in lf_wrap.serving (the merge search serves through them too).

What other packages may use is named here, and only here: the merge search reads an eval
recipe, its models, its rows and its saved answers through these names, never through this
package's modules (tests/test_layout.py holds the import graph to that)."""

from lf_wrap.evaluation.models import ResolvedModel, resolve_models, tasks_from_training_runs, training_run
from lf_wrap.evaluation.predictions import read_lines as read_prediction_lines
from lf_wrap.evaluation.predictions import read_meta as read_prediction_meta
from lf_wrap.evaluation.recipe import EvalRecipe, ModelEntry, load_eval_recipe
from lf_wrap.evaluation.requests import Request, TaskData, live_requests, load_task
from lf_wrap.evaluation.run import default_out

__all__ = ["EvalRecipe", "ModelEntry", "Request", "ResolvedModel", "TaskData", "default_out", "live_requests",
           "load_eval_recipe", "load_task", "read_prediction_lines", "read_prediction_meta", "resolve_models",
           "tasks_from_training_runs", "training_run"]
