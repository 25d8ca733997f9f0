"""Serving candidate weights in a running vLLM engine, shared by the eval (engine.serve: patch)
and the merge search: below both, so neither reaches into the other."""
