"""`lf-wrap eval`: score the base model, LoRA adapters and full (merged) models on the study's
tasks with vLLM offline batching.

recipe.py       the eval recipe (pydantic), `--set` overrides
models.py       what each named model is (base, adapter, full model folder) and its checks
requests.py     validation rows -> prompts (LLaMA-Factory's template), long-prompt policy
predictions.py  the per-(model, task) JSONL files: schema, resume
engine.py       one vLLM engine per group (base + every adapter together; each full model)
results.py      metrics.json (scores of the files on disk, intervals, paired tests) and manifest.json
uncertainty.py  a predictions file scored (lf_wrap.scoring), its per-row scores beside it; `lf-wrap compare`
report.py       `lf-wrap report`: the table from metrics.json (charts.py: its PNGs)
run.py          the stage: plan, generate what is missing, score, write the results folder
"""
