"""Run in the training environment (.venv-lf): load a prepared dataset with LLaMA-Factory's own
data pipeline through dataset_info.json, and print what it tokenized as JSON.

usage: python load_prepared.py MODEL DATASET_DIR DATASET_NAME OUTPUT_DIR"""

import json
import sys

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

model, dataset_dir, name, output_dir = sys.argv[1:5]
model_args, data_args, training_args, _, _ = get_train_args({
    "stage": "sft", "do_train": True, "model_name_or_path": model, "template": "qwen",
    "finetuning_type": "lora", "dataset": name, "dataset_dir": dataset_dir, "cutoff_len": 1024,
    "output_dir": output_dir, "overwrite_cache": True, "report_to": "none", "bf16": False,
})
tokenizer_module = load_tokenizer(model_args)
tokenizer = tokenizer_module["tokenizer"]
template = get_template_and_fix_tokenizer(tokenizer, data_args)
module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
train = module["train_dataset"]
first = train[0]
print("LFWRAP_RESULT " + json.dumps({
    "rows": len(train),
    "text": tokenizer.decode(first["input_ids"]),
    "label_text": tokenizer.decode([t for t in first["labels"] if t != -100]),
}, ensure_ascii=False))
