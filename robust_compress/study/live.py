"""What a user sees while a study runs.

On a terminal, one rich panel: stage i/n, overall elapsed and ETA, the current stage's own bar
(training, scoring, evaluation alike) and one result line per finished stage. In a log (no TTY),
the same as plain lines: one when a stage starts (with the overall ETA), progress every few
seconds, one when it ends (its key numbers and wall time).

The ETA comes from each stage's planned work (training examples x epochs, examples to score) and
throughputs: measured in this run as it goes, else read from earlier finished stages of the
study, else conservative 2-core CPU defaults.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .. import schemas
from ..io import UserError, read_json
from ..stages.graph import Stage, is_placeholder
from ..stages.progress import LineReporter, Reporter

DEFAULT_RATES = {
    "train": 80.0,
    "infer": 400.0,
}  # examples/s of a MiniLM-size model on 2 CPU cores, bf16 (measured)


def stage_result(stage: Stage) -> str:
    """A stage's key numbers in one line (its kind says which: accuracy per split, F_bias, ...)."""
    return stage.result()


def title(stage: Stage) -> str:
    """A stage as people read it: its name, with its kind where the name does not say it."""
    return (
        stage.name
        if stage.name.split("-")[0] == stage.kind.split("-")[0]
        else f"{stage.kind} {stage.name}"
    )


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


MINILM_L6_COST = 6 * (4 * 384 * 384 + 2 * 384 * 1536)  # the model DEFAULT_RATES were measured on


def relative_cost(model: str) -> float:
    """Per-token encoder FLOPs of a model folder over a MiniLM-L6's, from its config.json (layers x
    (4 h^2 + 2 h ffn)): scales the default rates, so an unmeasured BERT-base is not timed as a
    MiniLM. 1 where it cannot be read (a hub id offline)."""
    try:
        c = read_json(Path(model).expanduser() / "config.json")
        h = c.get("hidden_size") or c["dim"]
        layers = c.get("num_hidden_layers") or c["n_layers"]
        ffn = c.get("intermediate_size") or c.get("hidden_dim") or 4 * h
        return layers * (4 * h * h + 2 * h * ffn) / MINILM_L6_COST
    except Exception:  # noqa: BLE001 -- an estimate must never stop a study
        return 1.0


def _model_of(stage: Stage) -> str:
    """What a stage runs: its start model (a compression of the teacher runs the teacher's
    architecture)."""
    return stage.config.model_label()


def _model_of_record(config: dict[str, Any]) -> str:
    """The same, from a finished stage's record (its config as the key hashed it)."""
    model = str(config.get("model", ""))
    return "teacher" if is_placeholder(model) else model


class Estimator:
    """Seconds a stage will take, from its planned work and the throughput of the model it runs:
    measured in this run, else in earlier runs of the study, else a MiniLM-size default."""

    def __init__(self, root: Path, teacher_model: str = ""):
        self.teacher_model = teacher_model
        self.rates: dict[tuple[str, str], float] = {}
        seen: dict[tuple[str, str], list[float]] = {}
        for p in Path(root).glob("artifacts/*/stage.json"):
            try:  # an estimate must never stop a study: an unreadable record is skipped
                model = _model_of_record(schemas.read(p, schemas.StageRecord).config)
                metrics, summary = p.parent / "train_metrics.json", p.parent / "summary.json"
                if metrics.is_file():
                    seen.setdefault((model, "train"), []).append(
                        schemas.read(metrics).examples_per_s
                    )
                if summary.is_file():
                    seen.setdefault((model, "infer"), []).extend(
                        (getattr(schemas.read(summary), "eval_examples_per_s", None) or {}).values()
                    )
            except UserError:
                continue
        self.rates = {k: statistics.median(v) for k, v in seen.items() if v}
        self.measured = bool(self.rates)

    def rate(self, model: str, kind: str) -> float:
        if (model, kind) in self.rates:
            return self.rates[(model, kind)]
        return DEFAULT_RATES[kind] / relative_cost(
            self.teacher_model if model == "teacher" else model
        )

    def observe(self, stage: Stage | None, kind: str, rate: float) -> None:
        if rate > 0 and stage is not None:
            key = (_model_of(stage), kind)
            self.rates[key] = 0.7 * self.rates[key] + 0.3 * rate if key in self.rates else rate

    def seconds(self, stage: Stage) -> float:
        return sum(
            stage.work.get(k, 0) / self.rate(_model_of(stage), k) for k in ("train", "infer")
        )

    def total(self, stages: list[Stage]) -> float:
        return sum(self.seconds(s) for s in stages)


class StudyLog(LineReporter):
    """Plain-line study progress (no TTY, or a log file)."""

    def __init__(
        self,
        todo: list[Stage],
        root: Path,
        stream: TextIO | None = None,
        every: float = 30.0,
        teacher_model: str = "",
    ):
        super().__init__(stream or sys.stdout, every)
        self.todo, self.est = list(todo), Estimator(root, teacher_model)
        self.start = time.monotonic()
        self.phase = ""
        self.current: Stage | None = None

    def task(self, label: str, total: int, unit: str = "it") -> None:
        self.phase = "train" if label == "train" else "infer"
        super().task(label, total, unit)

    def update(self, done: int, **info: Any) -> None:
        self._observe(done, info)
        super().update(done, **info)

    def _observe(self, done: int, info: dict[str, Any]) -> None:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        if self.phase == "train" and "ex_s" in info:
            self.est.observe(self.current, "train", float(info["ex_s"]))
        elif self.phase == "infer" and done and self.unit == "examples":
            self.est.observe(self.current, "infer", done / elapsed)

    def eta(self, current: Stage | None = None) -> float:
        rest = [s for s in self.todo if not s.done() and s is not current]
        return self.est.total(rest) + (self.est.seconds(current) if current is not None else 0.0)

    def stage_start(self, stage: Stage, k: int, n: int) -> None:
        self.current = stage
        self._print(
            f"=== [{k}/{n}] {title(stage)} ({_fmt_time(time.monotonic() - self.start)} elapsed, "
            f"about {_fmt_time(self.eta(stage))} left)"
        )

    def stage_end(self, stage: Stage, seconds: float) -> None:
        result = stage_result(stage)
        self._print(f"    done in {_fmt_time(seconds)}" + (f": {result}" if result else ""))


class LiveView(StudyLog):
    """The same events in one rich panel that redraws in place (a terminal)."""

    def __init__(
        self, todo: list[Stage], root: Path, title: str, teacher_model: str = "", reused: int = 0
    ):
        super().__init__(todo, root, stream=sys.stdout, teacher_model=teacher_model)
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.title = title
        self.reused = reused
        self.header = "starting" if todo else f"nothing to run: all {reused} stages reused"
        self.done_n, self.total_n = 0, len(todo)
        self.bar: tuple[str, int, int, str, str] = ("", 0, 0, "", "")
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=2, transient=False
        )
        self.live.start()

    def _render(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        elapsed = time.monotonic() - self.start
        label, done, total, unit, info = self.bar
        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", style="bold")
        grid.add_column()
        grid.add_row(
            "study",
            f"{self.done_n}/{self.total_n} stages run"
            + (f" ({self.reused} reused)" if self.reused else "")
            + f" · {_fmt_time(elapsed)} elapsed · about {_fmt_time(self.eta(self.current))} left",
        )
        grid.add_row("", ProgressBar(total=max(self.total_n, 1), completed=self.done_n, width=50))
        grid.add_row("stage", self.header)
        if total:
            grid.add_row(label, f"{done}/{total} {unit}  {info}")
            grid.add_row("", ProgressBar(total=total, completed=done, width=50))
        return Panel(Group(grid), title=self.title, border_style="cyan")

    def _refresh(self) -> None:
        self.live.update(self._render())

    def task(self, label: str, total: int, unit: str = "it") -> None:
        self.phase = "train" if label == "train" else "infer"
        self.label, self.total, self.unit = label, total, unit
        self.t0, self.base = time.monotonic(), None
        self.bar = (label, 0, total, unit, "")
        self._refresh()

    def update(self, done: int, **info: Any) -> None:
        self._observe(done, info)
        left = self.seconds_left(done, time.monotonic())
        extra = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
        )
        self.bar = (
            self.label,
            done,
            self.total,
            self.unit,
            f"({'?' if left is None else _fmt_time(left)} left{', ' + extra if extra else ''})",
        )
        self._refresh()

    def note(self, text: str) -> None:
        """Printed above the panel (the terminal keeps every line), under the stage it belongs
        to."""
        where = f"{self.current.name}: " if self.current is not None else ""
        self.console.print(f"  · {where}{text}", markup=False, highlight=False)
        self._refresh()

    def stage_start(self, stage: Stage, k: int, n: int) -> None:
        self.current = stage
        self.header = f"[{k}/{n}] {title(stage)}"
        self.bar = ("", 0, 0, "", "")
        self._refresh()

    def stage_end(self, stage: Stage, seconds: float) -> None:
        self.done_n += 1
        result = stage_result(stage)
        self.console.print(
            f"✓ {stage.name} ({_fmt_time(seconds)})" + (f": {result}" if result else ""),
            markup=False,
            highlight=False,
        )
        self.current = None
        self._refresh()

    def close(self) -> None:
        self._refresh()
        self.live.stop()


def reporter_for(
    todo: list[Stage],
    root: Path,
    title: str,
    stream: TextIO | None = None,
    teacher_model: str = "",
    reused: int = 0,
) -> Reporter:
    """The live panel on a terminal, plain lines otherwise. `reused`: finished stages the run
    takes from the cache (a fully cached rerun says so)."""
    out = stream or sys.stdout
    if out.isatty():
        return LiveView(todo, root, title, teacher_model, reused)
    return StudyLog(todo, root, stream=out, teacher_model=teacher_model)


def dry_run_estimate(todo: list[Stage], root: Path, teacher_model: str = "") -> str:
    est = Estimator(root, teacher_model)
    how = (
        "throughputs measured in earlier runs of this study"
        if est.measured
        else f"no earlier run to measure from: a MiniLM-size model's "
        f"{DEFAULT_RATES['train']:.0f} training and {DEFAULT_RATES['infer']:.0f} scoring "
        "examples/s assumed, scaled by each model's size"
    )
    return f"{len(todo)} stages to run, about {_fmt_time(est.total(todo))} on this machine ({how})"
