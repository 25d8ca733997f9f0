"""lf-wrap: prepare instruction sets, train LoRA adapters with LLaMA-Factory, merge them, and
score every model on every task with vLLM. Each stage is one module with one plain function;
`lf_wrap.cli` only parses arguments and calls them."""

__version__ = "0.1.0"
