"""What a task is, in one place: where a study task's data comes from, how a source row becomes
an alpaca row, which rows are dropped as empty, and how the task is scored.

The prompts are the study's, character for character (note the full-width colon `：`,
U+FF1A). This is the only place they are written down; evaluation reads them from the prepared
datasets, never from here.

A task is scored by its metric family (`lf_wrap.scoring.registry.FAMILIES`: bleu, rouge,
exact_match, squad_v2, chrf; or a function of your own, `path/to/file.py:function`), which gives
its metrics, its headline metric (the table's row) and whether references [] mean
"unanswerable" (then the no-answer text the model was taught reads as ""). A user's own task is
declared in the eval recipe with a metric and an alpaca set already registered in
dataset_info.json; it has no source and is never prepared here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from lf_wrap.core.errors import UserError
from lf_wrap.scoring.family import Family
from lf_wrap.scoring.registry import CHOICES, family

TRANSLATE_PROMPT = "请把下面的句子翻译为英文：\n"
SUMMARIZE_PROMPT = "Please generate an concise summarization for the following article：\n:"
QA_PROMPT = ("Please answer the question in the context above, you only need to output the text "
             "of the answer, no explanation：\ntitle:")

DEFAULT_NO_ANSWER_TEXT = "unanswerable"
# A task or model name names files (predictions/<model>/<task>.jsonl). Matched whole with
# `fullmatch`: with `match`, a `$` also matches before a final newline, and "mytask\n" passed.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RowError(ValueError):
    """A source row lacks a field or has the wrong shape; the message names the key."""


def _field(row: dict, key: str):
    if key not in row:
        raise RowError(f"missing key '{key}'")
    return row[key]


def _text(row: dict, key: str) -> str:
    value = _field(row, key)
    if not isinstance(value, str):
        raise RowError(f"key '{key}' must be a string, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------- the study's sources


def read_translate(row: dict) -> dict:
    """{zh, en} from a wmt19 row: nested `translation: {zh, en}` or flat `{zh, en}`."""
    if "translation" in row:
        pair = row["translation"]
        if not isinstance(pair, dict):
            raise RowError("key 'translation' must be an object with 'zh' and 'en'")
        return {"zh": _text(pair, "zh"), "en": _text(pair, "en")}
    if "zh" in row or "en" in row:
        return {"zh": _text(row, "zh"), "en": _text(row, "en")}
    raise RowError("missing key 'translation' (or flat 'zh' and 'en')")


def read_summarize(row: dict) -> dict:
    return {"article": _text(row, "article"), "highlights": _text(row, "highlights")}


def read_qa(row: dict) -> dict:
    answers = _field(row, "answers")
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list):
        raise RowError("key 'answers' must be an object with a 'text' list")
    return {"title": _text(row, "title"), "context": _text(row, "context"),
            "question": _text(row, "question"), "answers": list(answers["text"])}


def alpaca_translate(fields: dict, no_answer_text: str) -> dict:
    return {"instruction": TRANSLATE_PROMPT + fields["zh"], "input": "", "output": fields["en"]}


def alpaca_summarize(fields: dict, no_answer_text: str) -> dict:
    return {"instruction": SUMMARIZE_PROMPT + fields["article"], "input": "", "output": fields["highlights"]}


def alpaca_qa(fields: dict, no_answer_text: str) -> dict:
    answers = fields["answers"]
    instruction = (QA_PROMPT + fields["title"] + "\ncontext:" + fields["context"]
                   + "\nquestion:" + fields["question"])
    # `answers` keeps every gold answer ([] = unanswerable): SQuAD's exact match takes the best
    # over all of them. LLaMA-Factory ignores the extra column; evaluation reads it.
    return {"instruction": instruction, "input": "", "output": answers[0] if answers else no_answer_text,
            "answers": answers}


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One task. `read` turns a source row into named fields (RowError if malformed; a
    no-answer task puts its gold answers in fields["answers"]); `to_alpaca` turns the fields
    and the no-answer text into the alpaca row; a row whose `required` field is empty or
    whitespace is dropped (counted as "empty"); `keyword_fields` are what the keyword filter reads."""

    name: str
    metric: str                                # its family: bleu, rouge, exact_match, squad_v2, chrf, file.py:function
    # Where a study task's data comes from; a task of your own has none (its set is prepared).
    hub_id: str | None = None
    hub_config: str | None = None
    name_prefix: str | None = None             # dataset names read alpaca_<prefix>_<split>_<rows>
    columns: tuple[tuple[str, ...], ...] = ()  # column sets a source may carry (any one will do)
    read: Callable[[dict], dict] | None = None
    to_alpaca: Callable[[dict, str], dict] | None = None
    required: tuple[str, ...] = ()
    keyword_fields: tuple[str, ...] = ()
    scored_by: Family | None = None            # the family, where it is not looked up by `metric` (report)

    @property
    def family(self) -> Family:
        """How it is scored (lf_wrap.scoring): per-row scores, corpus values, intervals, paired tests."""
        return self.scored_by or family(self.metric)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names it reports (metrics.json keys), headline first."""
        return self.family.keys

    @property
    def headline(self) -> str:
        return self.family.keys[0]

    @property
    def no_answer(self) -> bool:
        """References [] mean "unanswerable"; the no-answer text the model was taught reads as ""."""
        return self.family.no_answer

    def declaration(self) -> dict:
        """How metrics.json records the task, so that `lf-wrap report` can rebuild its rows."""
        scoring = self.family
        return {"metric": self.metric, "metrics": list(self.metrics), "headline": self.headline,
                "no_answer": self.no_answer, "definitions": {key: scoring.describe(key) for key in self.metrics}}


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("translate", "bleu", "wmt/wmt19", "zh-en", "wmt19_zh-en", (("translation",), ("zh", "en")),
         read_translate, alpaca_translate, required=("zh", "en"), keyword_fields=("zh", "en")),
    Task("summarize", "rouge", "abisee/cnn_dailymail", "3.0.0", "cnn_dailymail", (("article", "highlights"),),
         read_summarize, alpaca_summarize, required=("article", "highlights")),
    Task("qa", "squad_v2", "rajpurkar/squad_v2", None, "squad_v2", (("title", "context", "question", "answers"),),
         read_qa, alpaca_qa, required=("context", "question")),
)}


def resolve_task(name: str, metric: str | None = None, key: str = "metric", scored_by: Family | None = None) -> Task:
    """The study's task `name`, or a task of your own scored with `metric` (a family name, or
    `file.py:function`, loaded here). ValueError naming `key` (where the metric is set:
    `tasks.<name>.metric`, `--metric`); UserError naming it when a function of your own cannot
    be loaded. `scored_by`: the family already at hand (the report's, from metrics.json)."""
    study = TASKS.get(name)
    if study is not None:
        if metric is not None and metric != study.metric:
            raise ValueError(f"{key}: the study's task '{name}' is scored with '{study.metric}'; leave {key} out, "
                             "or give your own task another name")
        return study
    if metric is None:
        raise ValueError(f"unknown task '{name}': the study's tasks are {', '.join(TASKS)}; a task of your own "
                         f"needs {key}, one of: {CHOICES}")
    if scored_by is None:
        try:
            family(metric)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
        except UserError as err:
            raise UserError(f"{key}: {err}") from None
    if not TASK_NAME.fullmatch(name):
        raise ValueError(f"task name {name!r}: letters, digits, '.', '_' and '-' only (it names files)")
    return Task(name, metric, scored_by=scored_by)


def known_task_or_none(value: str | None) -> str | None:
    """For recipe validators: a study task name or None; anything else raises ValueError."""
    if value is not None and value not in TASKS:
        raise ValueError(f"unknown task {value!r}; choose one of: {', '.join(TASKS)}")
    return value


def get_task(name: str) -> Task:
    """A study task (the ones `lf-wrap data prepare` knows how to build)."""
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}") from None
