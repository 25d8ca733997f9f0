"""chart.png's colours: a merge method keeps one colour in every panel (lf_wrap.search.report.chart.method_colour), on a leaderboard and final figures made up by hand. No model, no engine."""

from __future__ import annotations

from matplotlib.colors import to_rgba

from lf_wrap.search.report.chart import figure, method_colour

TASKS = ["a", "b"]


def _row(rank: int, label: str, role: str = "candidate") -> dict:
    return {"rank": rank, "label": label, "role": role, "method": label.split("[")[0],
            "retained": {"a": 0.5, "b": 0.25}}


def test_a_merge_method_has_one_colour_in_every_panel():
    table = [_row(1, "tsv[1,1]"), _row(2, "ties[1,0.5] density 0.8"), _row(3, "linear[0.5,1]"),
             _row(4, "linear[1,1]", "reference: sum")]
    gain = {"value": 0.5, "ci95": [0.25, 0.75]}
    final = {"labels": {"best": "tsv[1,1]", "sum": "linear[1,1]", "linear 0.5": "linear[0.5,0.5]"},
             "retained": {name: {t: gain for t in TASKS} for name in ("sum", "linear 0.5", "best")}}
    left, right = figure(table, final, TASKS).axes[:2]
    colours = {}
    for ax in (left, right):
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels):
            method = label.split(" ", 1)[-1].removeprefix("best: ").split("[")[0] if "[" in label else "linear"
            faces = {patch.get_facecolor() for patch in handle.patches}
            assert faces == {to_rgba(method_colour(method))}, (ax.get_title(), label)
            colours.setdefault(method, set()).update(faces)
    assert all(len(faces) == 1 for faces in colours.values())           # tsv, linear: one colour each, both panels
    assert {"tsv", "ties", "linear"} <= set(colours)
    assert len({method_colour(m) for m in ("tsv", "ties", "linear")}) == 3


def test_the_joint_adapter_is_drawn_beside_the_merges_in_grey():
    """`joint:` puts a column in final's figures that is no merge (no label, no method): it failed
    the chart with KeyError 'joint', and with it the whole search at its last step."""
    gain = {"value": 0.5, "ci95": [0.25, 0.75]}
    final = {"labels": {"best": "tsv[1,1]", "sum": "linear[1,1]", "linear 0.5": "linear[0.5,0.5]"},
             "retained": {name: {t: gain for t in TASKS} for name in ("sum", "linear 0.5", "best", "joint")}}
    right = figure([_row(1, "tsv[1,1]")], final, TASKS).axes[1]
    handles, labels = right.get_legend_handles_labels()
    joint = handles[labels.index("joint")]
    assert {patch.get_facecolor() for patch in joint.patches} == {to_rgba("tab:gray")}
