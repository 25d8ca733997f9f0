"""Stage 2: a training recipe -> `llamafactory-cli train` -> a run directory holding one LoRA adapter."""
