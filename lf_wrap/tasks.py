"""The study's three tasks: where each one's data comes from and how a source row becomes an
alpaca row. The prompts are the study's, character for character (note the full-width colon
`：`, U+FF1A). This is the only place they are written down; evaluation reads them from the
prepared datasets, never from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

TRANSLATE_PROMPT = "请把下面的句子翻译为英文：\n"
SUMMARIZE_PROMPT = "Please generate an concise summarization for the following article：\n:"
QA_PROMPT = ("Please answer the question in the context above, you only need to output the text "
             "of the answer, no explanation：\ntitle:")

DEFAULT_NO_ANSWER_TEXT = "unanswerable"


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


def translate_pair(row: dict) -> tuple[str, str]:
    """(zh, en) from a wmt19 row: nested `translation: {zh, en}` or flat `{zh, en}`."""
    if "translation" in row:
        pair = row["translation"]
        if not isinstance(pair, dict):
            raise RowError("key 'translation' must be an object with 'zh' and 'en'")
        return _text(pair, "zh"), _text(pair, "en")
    if "zh" in row or "en" in row:
        return _text(row, "zh"), _text(row, "en")
    raise RowError("missing key 'translation' (or flat 'zh' and 'en')")


def alpaca_translate(row: dict) -> dict:
    zh, en = translate_pair(row)
    return {"instruction": TRANSLATE_PROMPT + zh, "input": "", "output": en}


def alpaca_summarize(row: dict) -> dict:
    return {"instruction": SUMMARIZE_PROMPT + _text(row, "article"), "input": "",
            "output": _text(row, "highlights")}


def qa_answers(row: dict) -> list[str]:
    answers = _field(row, "answers")
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list):
        raise RowError("key 'answers' must be an object with a 'text' list")
    return list(answers["text"])


def alpaca_qa(row: dict, no_answer_text: str = DEFAULT_NO_ANSWER_TEXT) -> dict:
    answers = qa_answers(row)
    instruction = (QA_PROMPT + _text(row, "title") + "\ncontext:" + _text(row, "context")
                   + "\nquestion:" + _text(row, "question"))
    # `answers` keeps every gold answer ([] = unanswerable): SQuAD's exact match takes the best
    # over all of them. LLaMA-Factory ignores the extra column; evaluation reads it.
    return {"instruction": instruction, "input": "", "output": answers[0] if answers else no_answer_text,
            "answers": answers}


@dataclass(frozen=True)
class Task:
    name: str
    hub_id: str
    hub_config: str | None
    name_prefix: str          # dataset names read alpaca_<prefix>_<split>_<rows>
    to_alpaca: Callable[..., dict]
    columns: tuple[str, ...]  # what a source must carry (the check before any row is read)


TASKS: dict[str, Task] = {
    "translate": Task("translate", "wmt/wmt19", "zh-en", "wmt19_zh-en", alpaca_translate,
                      ("translation",)),
    "summarize": Task("summarize", "abisee/cnn_dailymail", "3.0.0", "cnn_dailymail", alpaca_summarize,
                      ("article", "highlights")),
    "qa": Task("qa", "rajpurkar/squad_v2", None, "squad_v2", alpaca_qa,
               ("title", "context", "question", "answers")),
}


def known_task_or_none(value: str | None) -> str | None:
    """For recipe validators: a task name or None; anything else raises ValueError."""
    if value is not None and value not in TASKS:
        raise ValueError(f"unknown task {value!r}; choose one of: {', '.join(TASKS)}")
    return value


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        from lf_wrap.core.errors import UserError
        raise UserError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}") from None
