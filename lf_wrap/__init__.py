"""lf-wrap: prepare instruction sets, train LoRA adapters with LLaMA-Factory, merge them, and
score every model on every task with vLLM.

The layout is the architecture:

    lf_wrap/core/        what every stage shares: errors, atomic files, the process runner,
                         manifests (provenance), the two environments, the recipe reader,
                         content hashing, the PEFT adapter reader
    lf_wrap/tasks/       task files: what a task is (prompt, fields, filters, metric); the
                         study's three are shipped in lf_wrap/defaults/tasks/
    lf_wrap/data/        stage 1: source split -> alpaca set + dataset_info.json entry
    lf_wrap/train/       stage 2: training recipe -> `llamafactory-cli train` -> run directory
    lf_wrap/merge/       stage 3: adapters -> merged model or adapter (methods/: one per family)
    lf_wrap/evaluation/  stage 4: vLLM predictions, metrics, intervals, the report
    lf_wrap/serving/     the one-engine layer below eval and search: vLLM engines and replicas,
                         the engine section of a recipe, one patched server for a model or a
                         candidate merge
    lf_wrap/scoring/     metric families, a metric of your own (fenced), the bootstrap
    lf_wrap/search/      `lf-wrap merge search`: candidates, the retained-gain objective, the
                         optimiser, the ledger, the verdict
    lf_wrap/demo/        the whole study at small scale, and the models it runs on
    lf_wrap/commands/    the click layer: parses options, calls one stage function, prints

Every stage a recipe drives has one contract, `run(loaded, out, force) -> result`, and one
registry (lf_wrap.stages.STAGES) that `lf-wrap validate` and the commands read; only
`lf_wrap.commands` speaks click."""

__version__ = "0.1.0"
