"""The training bar: steps done of the total, the latest loss and LLaMA-Factory's own estimate of
the time left, while llamafactory-cli's output goes to train.log.

Two sources, both LLaMA-Factory's (transformers' Trainer underneath): the step counter of the
Trainer's tqdm bar in the child's output (a line that starts with the percentage: the data
set's tokenizing bars carry a description first), and `trainer_log.jsonl`, which its
LogCallback appends in the output folder every `logging_steps` (current_steps, total_steps,
loss, remaining_time)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.console import Progress

_TRAINER_BAR = re.compile(r"^\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[")


class TrainingProgress:
    def __init__(self, output_dir: Path):
        self.log = Path(output_dir) / "trainer_log.jsonl"
        self.offset = 0
        self.loss: float | None = None
        self.left = ""
        self._checked = 0.0
        self.bar = Progress("train", None, "step")

    def on_line(self, line: str) -> None:
        match = _TRAINER_BAR.match(line)
        if match:
            self.bar.set_total(int(match.group(2)))
            self.bar.update(int(match.group(1)), self._note())
        now = time.monotonic()
        if now - self._checked >= 0.5:
            self._checked = now
            self._read_log()

    def _note(self) -> str:
        parts = [f"loss {self.loss:.4f}" if self.loss is not None else "", f"{self.left} left" if self.left else ""]
        return ", ".join(p for p in parts if p)

    def _read_log(self) -> None:
        try:
            with open(self.log, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        complete = jsonlines.complete(data)
        self.offset += len(complete)
        for entry in jsonlines.tolerant(complete)[0]:
            if isinstance(entry.get("loss"), (int, float)):
                self.loss = float(entry["loss"])
            self.left = str(entry.get("remaining_time") or self.left)
            if isinstance(entry.get("total_steps"), int):
                self.bar.set_total(entry["total_steps"])
            if isinstance(entry.get("current_steps"), int):
                self.bar.update(entry["current_steps"], self._note())

    def close(self) -> None:
        self._read_log()
        self.bar.close()
