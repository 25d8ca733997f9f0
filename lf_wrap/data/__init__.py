"""Stage 1: source splits -> LLaMA-Factory instruction sets registered in dataset_info.json."""
