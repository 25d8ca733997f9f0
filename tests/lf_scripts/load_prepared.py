"""Run in the training environment (.venv-lf): load prepared datasets with LLaMA-Factory's own
data pipeline (dataset_info.json -> AlpacaDatasetConverter -> qwen template -> supervised
processor), and print what it tokenized as JSON: the row count, the first row decoded, and
every row's prompt ids (the part of input_ids whose labels are masked, -100).

usage: python load_prepared.py MODEL DATASET_DIR NAME[,NAME...] OUTPUT_DIR"""

import json
import sys

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

model, dataset_dir, name, output_dir = sys.argv[1:5]
model_args, data_args, training_args, _, _ = get_train_args({
    "stage": "sft", "do_train": True, "model_name_or_path": model, "template": "qwen",
    "finetuning_type": "lora", "dataset": name, "dataset_dir": dataset_dir, "cutoff_len": 100000,
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
    "prompt_ids": [r["input_ids"][:next(i for i, l in enumerate(r["labels"]) if l != -100)] for r in train],
}, ensure_ascii=False))
