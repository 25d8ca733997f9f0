"""`lf-wrap merge search`: find the merge of task adapters that keeps every specialist's gain,
scoring the candidates in one running vLLM engine (lf_wrap.serving: candidate weights written into
the live model and the base restored exactly).

Three seams:
- the optimiser (optimiser.py: the Optuna study, asked and told one round at a time; candidates.py
  what it proposes, workers.py several runs sharing one search);
- the scorer (scorer.py: candidates patched into one engine through lf_wrap.serving, scored on
  the rows splits.py draws, every score kept in the ledger, ledger.py; the eval's own answers
  reused where they may be, from_eval.py; objective.py and ranking.py turn scores into the ranked value);
- the report (report/: leaderboard, panels, Pareto front, the check on report rows, the noise
  rule, the verdict, final.md and best/).
run.py is the stage; recipe.py its settings; folder.py whether a folder is continued."""
