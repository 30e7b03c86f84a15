"""Does a study's headline hold on another machine? Two runs of the same study (same stage keys;
another CPU or thread count sums floats in another order, and training turns that into seed-sized
differences) are compared number by number: each run's point estimate must fall inside the other
run's multi-bootstrap interval, for every row's level and every difference the summary reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .compute import compute
from .effects import Effects, Side, side
from .load import load_study

LEVELS = [("dev-m", "acc_id"), ("HANS", "acc_ood"), ("easy", "easy"), ("hard", "hard")]
LEVELS += [("E−H", "gap"), ("ECE", "ece")]
DIFFS = [("Δ dev-m", "acc_id"), ("Δ hard", "hard"), ("Δ E−H", "gap"), ("Δ HANS", "acc_ood")]


@dataclass(frozen=True)
class Check:
    """One number in both runs: each point and interval (in points), and whether each point lies
    inside the other run's interval."""

    row: str
    what: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]

    @property
    def a_in_b(self) -> bool:
        return self.b[1] <= self.a[0] <= self.b[2]

    @property
    def b_in_a(self) -> bool:
        return self.a[1] <= self.b[0] <= self.a[2]


def _pts(e) -> tuple[float, float, float]:
    return (round(100 * e.estimate, 2), round(100 * e.lo, 2), round(100 * e.hi, 2))


def cross_check(a_dir: Path, b_dir: Path) -> list[Check]:
    """Every row level and every difference against the teacher (and between the losses of one
    compression), in both runs. The teacher is one training run here, not a fixed reference: its
    interval is over examples only."""
    runs, out = [], []
    for d in (a_dir, b_dir):
        study = load_study(Path(d))
        eff = Effects(compute(study))
        units: dict[str, Side] = {}
        for r in study.runs:
            units.setdefault(r.unit, side([x for x in study.runs if x.unit == r.unit], False))
        teacher = next(r.unit for r in study.runs if r.is_teacher)
        runs.append((eff, units, teacher, study.easy_hard.get(f"{study.runs[0].id_split}")))
    (ea, ua, ta, easy_a), (eb, ub, tb, easy_b) = runs
    for unit in (u for u in ua if u in ub):
        for what, metric in LEVELS:
            la = ea.level(ua[unit], metric, easy_a)
            lb = eb.level(ub[unit], metric, easy_b)
            if la is not None and lb is not None:
                out.append(Check(unit, what, _pts(la), _pts(lb)))
        if unit == ta:
            continue
        refs = [(ta, "teacher")] + [
            (u, u.split("/")[-1])
            for u in ua
            if u != unit and u.rsplit("/", 1)[0] == unit.rsplit("/", 1)[0] and u.endswith("/ce")
        ]
        for ref, name in refs:
            for what, metric in DIFFS:
                da = ea.diff(ua[unit], ua[ref], metric, easy_a)
                db = eb.diff(ub[unit], ub[ref], metric, easy_b)
                if da is not None and db is not None:
                    out.append(Check(unit, f"{what} vs {name}", _pts(da.effect), _pts(db.effect)))
    return out


def render(
    checks: list[Check], a: str = "run A", b: str = "run B"
) -> tuple[list[str], list[list[str]]]:
    """A table: each number in both runs and whether each lies in the other's interval."""
    header = ["row", "number", a, b, f"{a} in {b}'s interval", f"{b} in {a}'s interval"]
    fmt = lambda t: f"{t[0]:.1f} [{t[1]:.1f}, {t[2]:.1f}]"  # noqa: E731
    rows = [
        [
            c.row,
            c.what,
            fmt(c.a),
            fmt(c.b),
            "yes" if c.a_in_b else "**no**",
            "yes" if c.b_in_a else "**no**",
        ]
        for c in checks
    ]
    return header, rows
