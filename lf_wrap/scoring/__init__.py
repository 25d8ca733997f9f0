"""Metrics, below tasks, evaluation and search: each family owns its per-row scores, how rows
combine into the corpus value, and how they are resampled (docs/metrics.md).

family.py       what a family is (Metric; MeanFamily and StatsFamily, the two shapes)
bootstrap.py    Bootstrap (resamples, seed, confidence), the seeded draw, intervals, p-values
bleu.py, chrf.py, rouge.py, squad.py, exact_match.py   the shipped families
custom.py       a metric of your own: path/to/file.py:function
fenced.py       the process a metric of your own runs in (no sys.exit, chdir or hang reaches lf-wrap)
registry.py     FAMILIES by name, and family(spec) for a task's `metric`"""
