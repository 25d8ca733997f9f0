"""`lf-wrap merge search`: find the merge of task adapters that keeps every specialist's gain,
scoring the candidates in one running vLLM engine (patching.py: candidate weights written into
the live model and the base restored exactly)."""
