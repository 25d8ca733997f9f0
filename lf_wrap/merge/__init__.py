"""Stage 3: several LoRA adapters -> one merged model folder or one adapter."""
