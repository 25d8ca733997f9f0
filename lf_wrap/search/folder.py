"""The search's folder: whether an earlier search there is continued, refused (naming what
changed), or replaced by `--force`, which deletes only a search folder lf-wrap wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

from lf_wrap import __version__
from lf_wrap.core.errors import UserError
from lf_wrap.core.files import check_replaceable
from lf_wrap.merge.checks import CONFIG_FILE, MANIFEST as MERGE_MANIFEST, RECIPE_FILE
from lf_wrap.core.manifest import read_manifest_file
from lf_wrap.search.ledger import LEDGER

MANIFEST = "manifest.json"
SPACE_KEYS = ("methods", "spaces", "weights", "density", "sampler", "grid", "seed", "objective", "uncertainty")
LAYOUT = {"blocks": 1, "per_kind": False}   # in the space only when not these: earlier searches keep theirs
QUIET = {"spaces": ["full"]}                # SPACE_KEYS left out at these values, for the same reason

# Everything a search writes into its folder: --force deletes a folder holding nothing else.
OUTPUTS = (MANIFEST, "search.yaml", "optuna.journal", LEDGER, "leaderboard.md", "leaderboard.csv",
           "leaderboard.json", "chart*.png", "pareto.png", "final.md", "best", "search.log", "optuna.journal.lock",
           "workers")


def check_best(out: Path) -> None:
    """`out`/best is the search's: it writes its confirmed merge there and removes an earlier one
    when nothing is confirmed. A best/ that is not a merge lf-wrap wrote, or holds anything else
    (a user's NOTES.md), is refused before anything is scored, never at the end."""
    best = Path(out) / "best"
    if not best.exists():
        return
    try:
        check_replaceable(best, MERGE_MANIFEST, "merge", option="out", also=(CONFIG_FILE, RECIPE_FILE))
    except UserError as err:
        reason = str(err).split(";")[0].removeprefix(f"out {best} ")
        raise UserError(f"out {out}: its best/ {reason}; the search writes its confirmed merge there and removes "
                        "an earlier one: move them out of best/, or choose another out") from None


def search_space(recipe) -> dict:
    """What the optimiser searches (the manifest's `space`: a folder holding another is refused)."""
    space = recipe.model_dump(mode="json", include=set(SPACE_KEYS))
    space = {k: v for k, v in space.items() if k not in QUIET or v != QUIET[k]}
    return {**space, **{k: getattr(recipe, k) for k, default in LAYOUT.items() if getattr(recipe, k) != default}}


def _changed_inputs(earlier: dict, parts: dict) -> str:
    """Which parts of the identity differ from the earlier search's manifest, by name."""
    changed = []
    before, now = earlier.get("inputs") or {}, parts["inputs"]
    old_base, new_base = before.get("base") or {}, now["base"]
    if old_base.get("fingerprint") != new_base["fingerprint"]:
        files = old_base.get("files") or {}
        diff = sorted(n for n in set(files) | set(new_base["files"]) if files.get(n) != new_base["files"].get(n))
        changed.append(f"the base model's {', '.join(n.removeprefix('base/') for n in diff[:3])}" if files
                       else "the base model")
    old_adapters = before.get("adapters") or []
    for i, adapter in enumerate(now["adapters"]):
        if i >= len(old_adapters) or old_adapters[i] != adapter:
            changed.append(f"adapters.{i} ({adapter['path']})")
    if earlier.get("rows") != parts["rows"]:
        changed.append("the rows (datasets, ids or prompts)")
    old_gen = earlier.get("generation") or {}
    changed += [f"generation.{k}" for k in sorted(set(old_gen) | set(parts["generation"]))
                if old_gen.get(k) != parts["generation"].get(k)]
    old_scoring, new_scoring = earlier.get("scoring") or {}, parts.get("scoring") or {}
    for task in sorted(set(old_scoring) | set(new_scoring)):
        if old_scoring.get(task) != new_scoring.get(task):
            was, now_ = (old_scoring.get(task) or {}).get("metric"), (new_scoring.get(task) or {}).get("metric")
            changed.append(f"task {task}'s metric ({was} -> {now_})" if was != now_
                           else f"task {task}'s metric {now_} (its file or settings changed)")
    if earlier.get("lf_wrap_version") != __version__:
        changed.append(f"lf-wrap's version ({earlier.get('lf_wrap_version')}, now {__version__})")
    return ", ".join(changed) or "lf-wrap's ledger format"


def prepare_folder(out: Path, ident: str, space: dict, force: bool, inputs: dict[str, Path], parts: dict,
                   storage: str | None = None) -> bool:
    """True when an earlier search with the same inputs and space is continued (or joined, by a
    worker of a shared search); its study must be where `storage` says (None: the journal). `--force` deletes
    only a search folder lf-wrap wrote (lf_wrap.core.files.check_replaceable), never one holding
    `inputs` (the recipes this run reads) or files of the user's."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    check_replaceable(out, MANIFEST, "search", option="out", outputs=OUTPUTS if force else None,
                      inputs=inputs if force else None)
    earlier = read_manifest_file(out / MANIFEST)
    same = earlier.get("identity") == ident and earlier.get("space") == space
    if same and not force:
        if earlier.get("storage") != storage:
            raise UserError(f"out {out} holds this search with its study in {earlier.get('storage') or 'its journal'},"
                            f" not in {storage or 'the journal'}: give the same storage (every worker of a search "
                            "shares one study)")
        return True
    if not force:
        if earlier.get("identity") != ident:
            what = f"other inputs ({_changed_inputs(earlier, parts)})"
        else:
            changed = [k for k in (*SPACE_KEYS, *LAYOUT) if (earlier.get("space") or {}).get(k) != space.get(k)]
            what = f"another search space ({', '.join(changed)})"
        raise UserError(f"out {out} holds a search with {what}; its scores cannot be reused: choose another "
                        "out, or pass --force to start it over")
    shutil.rmtree(out)
    return False
