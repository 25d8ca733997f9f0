"""What a search reports, in one place: the leaderboard and its chart (leaderboard.py, the
layer-wise panels in panels.py, the Pareto front in pareto.py), the winner's check on the report
rows (held.py), the one rule for resampling noise (noise.py), the verdict (verdict.py) and the
end of the search: final.md, best/ and the manifest (final.py)."""
