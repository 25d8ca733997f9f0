"""Answers the eval already generated: the base's and each specialist's predictions on rows the
search scores are taken from `lf-wrap eval`'s results folder instead of being generated again,
when nothing that could change an answer differs.

A saved prediction is taken only when the eval served the same thing the search would, by the
identity eval itself compares before it reuses a prediction (lf_wrap.core.identity):
- the model: the base's served files by content; a specialist's adapter by content, served
  patched into the base's weights (`adapter_served_as: patch`, which is what the search does:
  its specialist is the adapter alone at weight 1 written into the base's weights);
- how it is generated: the whole generation identity (lf_wrap.core.identity.generation_identity:
  the engine's arguments, template, rendering, stop tokens, the long-prompts rule, max_new_tokens,
  the no-answer text), compared whole: no list of keys here;
- the rows: the dataset's sha256, and each row's prompt hash and id.
Any difference, a missing row or a damaged file, and the search generates that model's rows
itself (a damaged file is left to `lf-wrap eval` to report). Merged models of the eval are not
taken: a merge folder is named by its manifest, not by the candidate the search would patch.

`reuse_eval: false` in the search recipe turns this off; `eval_results:` names the folder when
it is not the eval recipe's default (eval/results/<recipe name>)."""

from __future__ import annotations

import logging
from pathlib import Path

from lf_wrap.core.errors import UserError
from lf_wrap.core.identity import generation_changes, generation_identity, model_identity
from lf_wrap.evaluation import default_out, read_prediction_lines, read_prediction_meta
from lf_wrap.search.candidates import Candidate
from lf_wrap.search.splits import TaskRows

log = logging.getLogger(__name__)

class EvalAnswers:
    """`predictions(kind, candidate)`: the eval's answers for the base (candidate None) or a
    specialist (one adapter at weight 1, the others 0, linear) on the search's `kind` rows, in
    the search's row order; None when the eval has none that may be used."""

    def __init__(self, folder: Path, base_dir: Path, base_fingerprint: str, adapter_paths: list[str],
                 rows: dict[str, TaskRows], generation: dict):
        self.folder, self.rows, self.generation = Path(folder), rows, generation
        self.wanted = {None: base_fingerprint}
        for index, path in enumerate(adapter_paths):
            self.wanted[index] = model_identity("adapter", path, base_dir)["model_fingerprint"]
        self.found = self._index()

    def _index(self) -> dict[tuple[int | None, str], tuple[Path, dict]]:
        """(who: None for the base, an adapter's index; task) -> the eval's predictions file, its meta."""
        found: dict = {}
        for meta_file in sorted((self.folder / "predictions").glob("*/*.meta.json")):
            path = meta_file.with_name(meta_file.name[:-len(".meta.json")] + ".jsonl")
            try:
                meta = read_prediction_meta(path)
            except UserError:
                continue
            if meta is None or meta.get("task") not in self.rows:        # (a file removed meanwhile)
                continue
            for who, fingerprint in self.wanted.items():
                if meta.get("model_fingerprint") != fingerprint:
                    continue
                if who is not None and meta.get("adapter_served_as") != "patch":
                    continue
                if self._same_generation(meta, self.rows[meta["task"]]):
                    found[(who, meta["task"])] = (path, meta)
        return found

    def _same_generation(self, meta: dict, task_rows: TaskRows) -> bool:
        wanted = generation_identity(self.generation, task_rows.max_new_tokens, task_rows.data.no_answer_text)
        return not generation_changes(meta, wanted)

    def predictions(self, kind: str, candidate: Candidate | None) -> list[str] | None:
        who = self._who(candidate)
        if who is False:
            return None
        out: list[str] = []
        for task, task_rows in self.rows.items():
            path, meta = self.found.get((who, task), (None, {}))
            sha = task_rows.data.sha256 if kind == "report" else task_rows.search_sha256
            if path is None or meta.get("dataset_sha256") != sha:
                return None
            try:
                by_row = {line.get("row"): line for line in read_prediction_lines(path)}
            except UserError:
                return None
            for request in getattr(task_rows, kind):
                line = by_row.get(request.row)
                if (line is None or line.get("prompt_sha256") != request.prompt_sha256
                        or str(line.get("id")) != str(request.id) or not isinstance(line.get("prediction"), str)):
                    return None
                out.append(line["prediction"])
        return out

    def source(self, candidate: Candidate | None) -> str:
        """The eval model folder the answers came from (for the ledger line)."""
        path, _ = self.found[(self._who(candidate), next(iter(self.rows)))]
        return str(path.parent)

    @staticmethod
    def _who(candidate: Candidate | None) -> int | None | bool:
        """None: the base; an index: that specialist; False: anything else."""
        if candidate is None:
            return None
        weights = list(candidate.weights)
        if (candidate.method != "linear" or not all(isinstance(w, (int, float)) for w in weights)
                or sorted(weights) != [0.0] * (len(weights) - 1) + [1.0]):
            return False
        return weights.index(1.0)


def eval_answers(recipe, checked) -> EvalAnswers | None:
    """The eval's answers for a search (its recipe, its SearchPlan), or None: `reuse_eval: false`,
    no results folder, or nothing in it this search may use."""
    if not recipe.reuse_eval:
        return None
    folder = Path(recipe.eval_results or default_out(Path(recipe.eval)))
    if not (folder / "predictions").is_dir():
        return None
    answers = EvalAnswers(folder, checked.plan.base_dir, checked.inputs["base"]["fingerprint"],
                          [a.given for a in checked.plan.adapters], checked.rows, checked.generation)
    if not answers.found:
        return None
    log.info(f"search: the base's and the specialists' answers the eval already has are taken from {folder} "
             "(reuse_eval)")
    return answers
