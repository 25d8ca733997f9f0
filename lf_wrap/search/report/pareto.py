"""`objective: pareto`: each counted task's retained gain is an objective of its own (Optuna's
multi-objective study, one `maximize` direction per task), for a user who would rather choose
the trade-off than take the worst task's.

The front: the candidates no other candidate matches or beats on every task while beating it on
one (each task's retained gain as the search ranks it: its worst fold with rows.folds, else its
point value on the search rows). The winner (best/ when confirmed) is the front's first by the worst task
(the leaderboard's order), so a front of one is the same answer `objective: worst` gives.
pareto.png: two tasks, a scatter of every candidate with the front joined; three or more, one
panel per pair of tasks."""

from __future__ import annotations

from itertools import combinations

from lf_wrap.search.objective import DIGITS


def _dominates(a: dict[str, float], b: dict[str, float]) -> bool:
    ra, rb = ({t: round(v, DIGITS) for t, v in x.items()} for x in (a, b))
    return all(ra[t] >= rb[t] for t in ra) and any(ra[t] > rb[t] for t in ra)


def mark_front(table: list[dict]) -> list[dict]:
    """Sets row["front"] on every leaderboard row; returns the front's rows, in the table's order."""
    for row in table:
        row["front"] = not any(_dominates(other["objectives"], row["objectives"]) for other in table
                               if other is not row)
    return [row for row in table if row["front"]]


def chart(table: list[dict], tasks: list[str], best_label: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lf_wrap.core.plots import png

    pairs = list(combinations(tasks, 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.5), squeeze=False)
    front = [r for r in table if r["front"]]
    for ax, (x, y) in zip(axes[0], pairs):
        ax.scatter([r["objectives"][x] for r in table], [r["objectives"][y] for r in table], s=14, color="lightgrey",
                   label="candidates")
        ax.scatter([r["objectives"][x] for r in front], [r["objectives"][y] for r in front], s=22, color="tab:blue",
                   label="Pareto front" + (" (all tasks)" if len(tasks) > 2 else ""))
        if len(tasks) == 2:
            line = sorted(front, key=lambda r: r["objectives"][x])
            ax.plot([r["objectives"][x] for r in line], [r["objectives"][y] for r in line], color="tab:blue",
                    linewidth=0.8)
        best = next(r for r in table if r["label"] == best_label)
        ax.scatter([best["objectives"][x]], [best["objectives"][y]], s=80, marker="*", color="tab:red",
                   label=f"best: {best_label}")
        ax.set_xlabel(f"{x}: retained gain")
        ax.set_ylabel(f"{y}: retained gain")
        ax.axhline(1.0, color="grey", linewidth=0.6, linestyle="--")
        ax.axvline(1.0, color="grey", linewidth=0.6, linestyle="--")
        ax.legend(fontsize=7)
    fig.suptitle("search rows: each task's retained gain (the objectives of the multi-objective study)")
    return png(fig)


def markdown(front: list[dict], tasks: list[str]) -> str:
    head = ["rank", "candidate", *(f"{t} kept" for t in tasks), "worst"]
    lines = [f"Pareto front ({len(front)} candidates: none matched or beaten on every task by another; each task's "
             "gain as ranked). The winner is its first by the worst task (best/ when confirmed).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in front:
        lines.append("| " + " | ".join([str(r["rank"]), f"`{r['label']}`",
                                        *(f"{r['objectives'][t]:.1%}" for t in tasks),
                                        f"{min(r['objectives'].values()):.1%}"]) + " |")
    return "\n".join(lines) + "\n"
