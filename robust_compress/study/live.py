"""What a user sees while a study runs: one line when each stage starts (stage i/n, elapsed) and one
when it ends (its key numbers and wall time), with the stages' own progress lines in between."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..io import read_json
from ..stages.progress import LineReporter
from .plan import Stage


def stage_result(stage: Stage) -> str:
    """A stage's key numbers in one line (accuracy per split, Delta, F_bias), from what it wrote."""
    if stage.kind in ("uncertainty", "speed") or not (stage.path / "summary.json").is_file():
        return ""
    s = read_json(stage.path / "summary.json")
    parts = [f"{name} {100 * v['accuracy']:.1f}" for name, v in s.get("splits", {}).items() if v.get("role") != "cue"]
    if s.get("f_bias") is not None:
        parts.append(f"F_bias {s['f_bias']:.2f}")
    return ", ".join(parts)


class StudyLog(LineReporter):
    """Plain-line study progress (no TTY, or a log file)."""

    def __init__(self, stream: TextIO | None = None, every: float = 30.0):
        super().__init__(stream or sys.stdout, every)
        self.start = time.monotonic()

    def stage_start(self, stage: Stage, k: int, n: int) -> None:
        self._print(f"=== [{k}/{n}] {stage.kind} {stage.name} ({time.monotonic() - self.start:.0f}s elapsed)")

    def stage_end(self, stage: Stage, seconds: float) -> None:
        result = stage_result(stage)
        self._print(f"    done in {seconds:.0f}s" + (f": {result}" if result else ""))
