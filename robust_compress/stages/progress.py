"""How a stage tells the user what it is doing: one small interface, two renderings.

A stage calls `task(label, total, unit)` when a phase starts (training, scoring the training set,
evaluating a split), `update(done, **info)` as it goes, and `note(text)` for one-off facts (a
snapshot saved, a checkpoint resumed). `LineReporter` prints plain lines (a log file, no TTY);
the study's live view (study/live.py) renders the same calls in a rich panel.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Reporter:
    """No output: the default for library calls."""

    def task(self, label: str, total: int, unit: str = "it") -> None: ...
    def update(self, done: int, **info: Any) -> None: ...
    def note(self, text: str) -> None: ...


def _fmt(info: dict[str, Any]) -> str:
    parts = []
    for k, v in info.items():
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return ", ".join(parts)


class LineReporter(Reporter):
    """Plain lines: a phase's start, then one line every `every` seconds, and its end."""

    def __init__(self, stream: TextIO | None = None, every: float = 30.0):
        self.stream = stream or sys.stderr
        self.every = every
        self.label, self.total, self.unit = "", 0, "it"
        self.t0 = self.last = 0.0
        self.base: tuple[int, float] | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def task(self, label: str, total: int, unit: str = "it") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.t0 = self.last = time.monotonic()
        self.base = None
        self._print(f"  {label}: {total} {unit}")

    def update(self, done: int, **info: Any) -> None:
        now = time.monotonic()
        left = self.seconds_left(done, now)
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        eta = "?" if left is None else f"{left:.0f}s"
        extra = f", {_fmt(info)}" if info else ""
        self._print(
            f"  {self.label}: {done}/{self.total} {self.unit} ({now - self.t0:.0f}s, eta "
            f"{eta}{extra})"
        )

    def seconds_left(self, done: int, now: float) -> float | None:
        """From the rate since the phase's first update: a resumed phase starts at its
        checkpoint."""
        if self.base is None:
            self.base = (done, now)
        if done >= self.total:
            return 0.0
        d0, t0 = self.base
        return (self.total - done) * (now - t0) / (done - d0) if done > d0 else None

    def note(self, text: str) -> None:
        self._print(f"  {text}")
