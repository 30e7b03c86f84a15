"""The report's opening summary, in words generated from the numbers: for each compression, what it
cost against the teacher (Vanilla row), and what each other loss won back against Vanilla, every
difference with its 95% interval (`evaluate.compare`), so nobody subtracts by hand."""

from __future__ import annotations

import math

from ..evaluate import compare, metric_parts
from .compute import Rows
from .load import Run, Study
from .tables import collapsed

NAMES = {"acc_id": "ID accuracy", "acc_ood": "OOD accuracy", "hard": "hard-example accuracy",
         "gap": "easy−hard gap", "reliance": "cue reliance"}
BETTER_LOWER = {"gap", "reliance"}  # for these a drop is a gain


def _fmt(d: float, lo: float, hi: float) -> str:
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if not math.isnan(lo) else ""
    return f"{100 * d:+.1f}{ci}"


def _noise(lo: float, hi: float) -> str:
    return " (CI includes 0)" if not math.isnan(lo) and lo <= 0 <= hi else ""


def _parts(runs: list[Run], metric: str, easy) -> list:
    out = [metric_parts(r.tables, r.roles, r.id_split, metric, easy, r.rule) for r in runs]
    return out if out and all(p is not None for p in out) else []


def summary_lines(study: Study, rows: Rows, easy_splits: list[str]) -> list[str]:
    runs, groups, teacher = study.runs, rows.groups, rows.teacher
    if teacher is None:
        return []
    easy = study.easy_hard[easy_splits[0]] if easy_splits else None
    metrics = ["acc_id", "acc_ood", "hard", "gap", "reliance"]
    t_runs = [r for r in runs if r.unit == teacher]
    lines = []
    if easy is not None:
        lines.append(f"Hard / easy examples: {easy_splits[0].replace('.', ', split by ', 1)} (easy = the bias-only "
                     "model is right). Differences are in points, with 95% intervals (over seeds when a row has "
                     "several, else a paired bootstrap over the shared examples).")
    for group in dict.fromkeys(r.group for r in runs if not r.is_teacher):
        members = [r for r in runs if r.group == group]
        losses = list(dict.fromkeys(r.loss for r in members))
        ref_loss = "ce" if "ce" in losses else losses[0]
        ref_runs = [r for r in members if r.loss == ref_loss]
        ref_unit = ref_runs[0].unit
        label = "Vanilla" if ref_loss == "ce" else ref_loss
        n = len(ref_runs)
        if collapsed(groups[ref_unit]):
            share = groups[ref_unit].get(f"top_pred_share.{ref_runs[0].id_split}", math.nan)
            lines.append(f"{group} ({label}, {n} seed{'s' * (n > 1)}): collapsed — not read (one class on "
                         f"{100 * share:.0f}% of {ref_runs[0].id_split}).")
            continue
        cost: dict[str, tuple[float, float, float]] = {}
        for m in metrics:
            a, b = _parts(ref_runs, m, easy), _parts(t_runs, m, easy)
            if a and b:
                cost[m] = compare(m, a, b, [r.seed for r in ref_runs], [r.seed for r in t_runs])
        if not cost:
            continue
        lines.append(f"{group} ({label}, {n} seed{'s' * (n > 1)}) vs the teacher: "
                     + "; ".join(f"{NAMES[m]} {_fmt(*v)}{_noise(*v[1:])}" for m, v in cost.items()) + ".")
        for loss in losses:
            if loss == ref_loss:
                continue
            mine = [r for r in members if r.loss == loss]
            if collapsed(groups[mine[0].unit]):
                lines.append(f"  {loss} at {group}: collapsed — not read.")
                continue
            parts = []
            for m in metrics:
                a, b = _parts(mine, m, easy), _parts(ref_runs, m, easy)
                if not (a and b):
                    continue
                d, lo, hi = compare(m, a, b, [r.seed for r in mine], [r.seed for r in ref_runs])
                lost = -cost[m][0] if m not in BETTER_LOWER and m in cost else cost.get(m, (0.0,))[0]
                gain = -d if m in BETTER_LOWER else d
                if m in ("hard", "gap", "reliance") and lost > 0.005:
                    if gain >= lost:
                        what = f"recovers all of the {100 * lost:.1f}-point {NAMES[m]} cost, and more"
                    elif gain > 0:
                        what = f"recovers {100 * gain:.1f} of the {100 * lost:.1f}-point {NAMES[m]} cost"
                    else:
                        what = f"recovers none of the {100 * lost:.1f}-point {NAMES[m]} cost"
                    parts.append(f"{what} ({_fmt(d, lo, hi)} vs {label}{_noise(lo, hi)})")
                else:
                    parts.append(f"{NAMES[m]} {_fmt(d, lo, hi)}{_noise(lo, hi)}")
            if parts:
                lines.append(f"  {loss} at {group} ({len(mine)} seed{'s' * (len(mine) > 1)}), vs {label}: "
                             + "; ".join(parts) + ".")
    return lines
