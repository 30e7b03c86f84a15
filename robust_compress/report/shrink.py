"""The verdict of a shrink: the user's model against the shrunk one, row by row, each difference a
multi-bootstrap interval over the shrunk model's seeds and the examples (the user's model is a fixed
reference), worded by `report.verdict` as "more robust", "no measurable change" or "less robust";
and the quality gate that refuses a model measurably worse on any robustness row."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..metrics.compare import cell_metric
from . import verdict
from .compute import compute
from .effects import Effects, side
from .load import Run, Study, load_study

STANDARD = {"id", "gold", "pred", "correct", "confidence", "loss"}
WORDS = {
    verdict.IS_GAIN: "more robust",
    verdict.IS_COST: "less robust",
    verdict.NONE: verdict.NO_CHANGE,
    verdict.ONE_SEED: verdict.NO_SEED_VARIANCE,
}


@dataclass(frozen=True)
class Row:
    """One row of the verdict: what is compared, the two values, the difference and its reading.
    gated: a robustness row (the gate refuses a measurable loss on it); ID accuracy and speed are
    reported, not gated."""

    what: str
    original: str
    shrunk: str
    difference: str
    reading: str
    gated: bool
    worse: bool


def _metrics(study: Study, teacher: Run, biases: list[str]) -> list[tuple[str, str, object, bool]]:
    """(label, metric, easy/hard frame or None, gated) for every row the study can fill."""
    out: list[tuple[str, str, object, bool]] = [("ID accuracy", "acc_id", None, False)]
    for key, easy in study.easy_hard.items():
        by = key.split(".", 1)[1] if "." in key else (biases[0] if biases else "the first")
        out.append((f"hard examples ({by} bias model's split)", "hard", easy, True))
    for split, role in teacher.roles.items():
        if role == "ood" and split in teacher.tables:
            out.append((f"{split} accuracy", f"acc:{split}", None, True))
            df = teacher.tables[split]
            for col in (c for c in df.columns if c not in STANDARD and not c.startswith("p_")):
                for value in sorted(df[col].astype(str).unique()):
                    for gold in sorted(df["gold"].astype(str).unique()):
                        label = f"{split} {value} / {gold}"
                        out.append((label, cell_metric(split, col, value, gold), None, True))
    out.append(("ECE (ID, lower is better)", "ece", None, True))
    return out


def verdict_rows(
    study_dir: Path, shrunk_group: str, biases: list[str] = ()
) -> tuple[list[Row], dict[str, list[float]]]:
    """The verdict's rows, and each runtime's speed-ups of the shrunk model's seeds over the
    original (the study's speed stage: best round of one process, side by side). `biases`: the
    study's bias-model names, the first one's split first."""
    study = load_study(study_dir)
    rows = compute(study)
    eff = Effects(rows)
    teacher = [r for r in study.runs if r.is_teacher]
    shrunk = [r for r in study.runs if r.group == shrunk_group and not r.is_teacher]
    if not teacher or not shrunk:
        raise ValueError(f"{study_dir}: needs the original and {shrunk_group!r} runs")
    a, b = side(shrunk), side(teacher)
    out = []
    for label, metric, easy, gated in _metrics(study, teacher[0], list(biases)):
        d = eff.diff(a, b, metric, easy)
        if d is None:
            continue
        mean = lambda runs, m=metric, e=easy: _value(eff, runs, m, e)  # noqa: E731
        k = verdict.kind(d)
        reading = WORDS.get(k) or verdict.word(d)
        if label.startswith("ID") and k in (verdict.IS_GAIN, verdict.IS_COST):
            reading = "higher" if k == verdict.IS_GAIN else "lower"
        out.append(
            Row(
                label,
                mean(teacher),
                mean(shrunk),
                verdict.shown(d),
                reading,
                gated,
                gated and k == verdict.IS_COST,
            )
        )
    speed = {
        rt: [rates[r.name] / rates[teacher[0].name] for r in shrunk if r.name in rates]
        for rt, rates in study.runtimes.items()
        if teacher[0].name in rates
    }
    return out, speed


def _value(eff: Effects, runs: list[Run], metric: str, easy) -> str:
    """The metric's mean over the runs on the compared examples (a plain mean: the interval is the
    difference's)."""
    level = eff.level(side(runs), metric, easy)
    return "–" if level is None else f"{100 * level.estimate:.1f}"


def gate_failures(rows: list[Row]) -> list[Row]:
    """The robustness rows on which the shrunk model is measurably worse."""
    return [r for r in rows if r.worse]


def render(rows: list[Row], speed: dict[str, list[float]], target: float, runtime: str) -> str:
    """The verdict as Markdown: speed first, then every row."""
    lines = ["| row | original | shrunk | difference [95 %] | reading |", "|---|---|---|---|---|"]
    for rt, ups in speed.items():
        mean = sum(ups) / len(ups) if ups else float("nan")
        aim = f"target {target:g}×" if rt == runtime else "not targeted"
        lines.append(f"| speed on {rt} | 1.00× | {mean:.2f}× | {len(ups)} seeds | {aim} |")
    for r in rows:
        lines.append(f"| {r.what} | {r.original} | {r.shrunk} | {r.difference} | {r.reading} |")
    return "\n".join(lines)


def as_json(rows: list[Row], speed: dict[str, list[float]]) -> dict:
    return {"rows": [asdict(r) for r in rows], "speedups": speed}
