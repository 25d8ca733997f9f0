# lf-wrap's Makefile only calls lf-wrap (or pip/pytest for set-up, requirements/lock-gpu.sh for the
# GPU locks); it holds no logic of its own.
# `make help` lists the targets. Variables: MODEL= RUN_DIR= NPROC= SET="k=v ..." EVAL= DEMO_MODEL=
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_LF := .venv-lf
TORCH ?= 2.13.0
LFW := $(VENV)/bin/lf-wrap
export LF_WRAP_LLAMAFACTORY_CLI ?= $(CURDIR)/$(VENV_LF)/bin/llamafactory-cli
export VLLM_CPU_KVCACHE_SPACE ?= 2

.PHONY: help setup test demo data data-sample samples bench-prepare
DEMO_MODEL ?= smollm2

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup: $(VENV)/.setup-done $(VENV_LF)/.setup-done ## build .venv (lf-wrap + vLLM) and .venv-lf (LLaMA-Factory)

# Torch first, from the pinned CPU build; then the locked set with --no-deps, so that nothing
# can pull a CUDA torch or the CUDA-only torchvision/torchaudio/torchcodec wheels.
$(VENV)/.setup-done: requirements/eval-cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==$(TORCH)
	$(VENV)/bin/pip install -q --no-deps -r requirements/eval-cpu.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# torchaudio: LLaMA-Factory imports it unconditionally, and PyPI's wheel ships CUDA-built
# extensions that cannot load beside the CPU torch. torchaudio runs without its compiled
# extension (its own "built without extension" mode), which is all text-only training needs.
$(VENV_LF)/.setup-done: requirements/train-cpu.txt
	$(PYTHON) -m venv $(VENV_LF)
	$(VENV_LF)/bin/pip install -q torch==$(TORCH)
	$(VENV_LF)/bin/pip install -q --no-deps -r requirements/train-cpu.txt
	rm -f $(VENV_LF)/lib/python3*/site-packages/torchaudio/lib/*.so
	$(VENV_LF)/bin/llamafactory-cli version > /dev/null
	touch $@

demo: setup ## the whole study at small scale on CPU, offline (DEMO_MODEL=smollm2|tiny)
	$(LFW) demo --model $(DEMO_MODEL)

# Two pytest-xdist workers, each taking whole test files (a file's module fixtures are built once):
# on 2 cores one worker leaves a core idle while it waits on a tool's process or its own Python.
PYTEST_WORKERS ?= 2
test: setup ## run the test suite (CPU, offline; PYTEST_WORKERS=2 processes, PYTEST_WORKERS=0 for one)
	$(VENV)/bin/python -m pytest tests -q -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: lint
lint: setup ## ruff: pyflakes, and no line of lf_wrap/ over 120 characters (settings in pyproject.toml)
	$(VENV)/bin/ruff check lf_wrap tests bench

samples: setup ## write the repo's sample source files to data/samples/
	$(LFW) data samples --out data/samples

data-sample: samples ## prepare small instruction sets from the sample files
	$(LFW) data prepare translate --source data/samples/wmt19_zh-en/train.jsonl --split train -n 400
	$(LFW) data prepare translate --source data/samples/wmt19_zh-en/validation.jsonl --split validation -n 60
	$(LFW) data prepare summarize --source data/samples/cnn_dailymail/train.jsonl --split train -n 400
	$(LFW) data prepare summarize --source data/samples/cnn_dailymail/validation.jsonl --split validation -n 60
	$(LFW) data prepare qa --source data/samples/squad_v2/train.jsonl --split train -n 400
	$(LFW) data prepare qa --source data/samples/squad_v2/validation.jsonl --split validation -n 60

data: setup ## prepare the study's six instruction sets from the Hugging Face Hub (needs network)
	$(LFW) data prepare translate --source wmt/wmt19 --split train -n 6000
	$(LFW) data prepare translate --source wmt/wmt19 --split validation -n 1000
	$(LFW) data prepare summarize --source abisee/cnn_dailymail --split train -n 5679
	$(LFW) data prepare summarize --source abisee/cnn_dailymail --split validation -n 1143
	$(LFW) data prepare qa --source rajpurkar/squad_v2 --split train -n 6000
	$(LFW) data prepare qa --source rajpurkar/squad_v2 --split validation -n 1000

bench-prepare: setup ## benchmark `data prepare` on a generated 5-million-row wmt19-like Parquet file
	$(VENV)/bin/python bench/bench_prepare.py

# ---- training (issue: recipes + lf-wrap train) ------------------------------------------
MODEL ?=
RUN_DIR ?=
NPROC ?=
SET ?=
TRAIN_FLAGS = $(if $(MODEL),--set model_name_or_path=$(MODEL)) $(if $(RUN_DIR),--run-dir $(RUN_DIR)) \
              $(if $(NPROC),--nproc $(NPROC)) $(foreach s,$(SET),--set $(s))
.PHONY: train-translate train-summarize train-qa train-all train-joint merge eval-all report
train-translate train-summarize train-qa: train-%: setup ## train one LoRA adapter: make train-qa [MODEL= RUN_DIR= NPROC= SET="k=v ..."]
	$(LFW) train recipes/$*.yaml $(TRAIN_FLAGS)
train-all: train-translate train-summarize train-qa ## train the three adapters one after another
train-joint: setup ## train the joint reference adapter on all three sets at once: recipes/joint.yaml [MODEL= RUN_DIR= NPROC= SET=]
	$(LFW) train recipes/joint.yaml $(TRAIN_FLAGS)

# ---- merging --------------------------------------------------------------------------
MERGE ?= recipes/merge.yaml
merge: setup ## rebuild the study's 3-in-1 merge from recipes/merge.yaml (MERGE= for another)
	$(LFW) merge recipe $(MERGE) $(foreach s,$(SET),--set $(s))

SEARCH ?= recipes/search.yaml
.PHONY: search bench-search
search: setup ## search merges of the three adapters for the one that keeps every gain (SEARCH= for another)
	$(LFW) merge search $(SEARCH) $(foreach s,$(SET),--set $(s))
bench-search: setup ## 16 merge candidates: lf-wrap's one patched engine vs a model + engine each (SmolLM2, CPU)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python bench/bench_search_paths.py --search 16 --rows 60 --max-new-tokens 40

# ---- evaluation -----------------------------------------------------------------------
EVAL ?= recipes/eval.yaml
eval-all: setup ## score every model on every task named in recipes/eval.yaml (EVAL= for another)
	$(LFW) eval $(EVAL) $(foreach s,$(SET),--set $(s))

# ---- GPU machines -----------------------------------------------------------------------
# Same pattern as the CPU set-up, from the GPU locks (requirements/lock-gpu.sh writes them with uv
# for Linux x86-64, CPython 3.11, PyPI's CUDA wheels): torch first, at the lock's pin and hashes,
# then the whole lock with --no-deps (hash-checked, so no other index's torch build can slip in).
# Never run here: no GPU machine was available, so these steps are resolved, not exercised.
gpu_pin = sed -n '/^$(1)==/,/^ *\#/p' requirements/$(2).txt | grep -v '^ *\#'
.PHONY: setup-gpu lock-gpu check-locks
setup-gpu: ## build both environments with CUDA builds (vllm, CUDA torch) from the GPU locks
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --no-deps -r <($(call gpu_pin,torch,eval-gpu))
	$(VENV)/bin/pip install --no-deps -r requirements/eval-gpu.txt
	$(VENV)/bin/pip install --no-deps --no-build-isolation -e .
	$(PYTHON) -m venv $(VENV_LF)
	$(VENV_LF)/bin/pip install --no-deps -r <($(call gpu_pin,torch,train-gpu))
	$(VENV_LF)/bin/pip install --no-deps -r requirements/train-gpu.txt
	$(VENV_LF)/bin/llamafactory-cli version > /dev/null
	touch $(VENV)/.setup-done $(VENV_LF)/.setup-done

lock-gpu: ## re-resolve requirements/*-gpu.in into the GPU locks (no GPU needed; LOCK_DATE= for newer releases)
	$(if $(LOCK_DATE),LOCK_DATE=$(LOCK_DATE)) PYTHON=$(PYTHON) bash requirements/lock-gpu.sh

check-locks: ## check that each GPU lock still matches its .in file (resolution only, installs nothing)
	PYTHON=$(PYTHON) bash requirements/lock-gpu.sh --check

.PHONY: bench-merge bench-merge-spaces bench-eval bench-compile-cache
bench-eval: setup ## one eval of 6 SmolLM2 models (base, 3 adapters, 2 merges): serve patch vs lora vs six engine loads (CPU)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python bench/bench_eval_serving.py --rows 3 --max-new-tokens 16
bench-compile-cache: setup ## vLLM engine starts on CPU, first and second, with each compile-cache setting (SmolLM2)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python bench/bench_compile_cache.py
bench-merge: setup ## time and peak memory of merging three adapters into the tiny model
	$(VENV)/bin/python bench/bench_merge.py
bench-merge-spaces: setup ## full vs core space, every weighted method, one Qwen2.5-3B layer (about 3 min)
	$(VENV)/bin/python bench/bench_merge.py --spaces-layer --threads 1

.PHONY: bench-generate bench-bootstrap bench-hashing
bench-bootstrap: setup ## seconds for 95% intervals + paired tests: 6 models x 3 tasks x 10,000 rows x 1,000 resamples
	$(VENV)/bin/python bench/bench_bootstrap.py
bench-hashing: setup ## content hashing of a 1 GiB file: BLAKE3 first pass, cached pass, sha256
	$(VENV)/bin/python bench/bench_hashing.py
report: setup ## rewrite the table and charts of eval/results/<EVAL's name> from its metrics.json
	$(LFW) report eval/results/$(basename $(notdir $(EVAL)))
bench-generate: setup ## tokens/s: lf-wrap's vLLM path against transformers generate (tiny model, CPU)
	$(VENV)/bin/python bench/bench_generate.py --threads 1
