"""The report's opening summary, in words generated from the numbers: for each compression, what it
cost against the teacher (Vanilla row), and what each other loss won back against Vanilla, every
difference with its 95% interval (`metrics.compare`), so nobody subtracts by hand."""

from __future__ import annotations

import math

from ..metrics import compare, metric_parts
from .compute import Rows
from .load import Run, Study, at_seeds_of
from .tables import collapsed

NAMES = {
    "acc_id": "ID accuracy",
    "acc_ood": "OOD accuracy",
    "hard": "hard-example accuracy",
    "gap": "easy−hard gap",
    "reliance": "cue reliance",
}
BETTER_LOWER = {"gap", "reliance"}  # for these a drop is a gain


def _fmt(d: float, lo: float, hi: float) -> str:
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if not math.isnan(lo) else ""
    return f"{100 * d:+.1f}{ci}"


def _parts(runs: list[Run], metric: str, easy) -> list:
    out = [metric_parts(r.tables, r.roles, r.id_split, metric, easy, r.rule) for r in runs]
    return out if out and all(p is not None for p in out) else []


METRICS = ["acc_id", "acc_ood", "hard", "gap", "reliance"]


def summary_lines(study: Study, rows: Rows, easy_splits: list[str]) -> list[str]:
    runs, groups, teacher = study.runs, rows.groups, rows.teacher
    if teacher is None:
        return []
    easy = study.easy_hard[easy_splits[0]] if easy_splits else None
    t_runs = [r for r in runs if r.unit == teacher]
    lines = []
    if easy is not None:
        lines.append(
            f"Hard / easy examples: {easy_splits[0].replace('.', ', split by ', 1)} (easy = the "
            "bias-only model is right). Differences are in points, with 95% intervals (over seeds "
            "when a row has several, else a paired bootstrap over the shared examples)."
        )
    for group in dict.fromkeys(r.group for r in runs if not r.is_teacher):
        lines += _group_lines(group, runs, groups, t_runs, easy)
    return lines


def _group_lines(group: str, runs: list[Run], groups: dict, t_runs: list[Run], easy) -> list[str]:
    """One compression's lines: its reference row against the teacher, then each other loss
    against that reference; a helper per group so each group's story reads on its own."""
    members = [r for r in runs if r.group == group]
    losses = list(dict.fromkeys(r.loss for r in members))
    ref_loss = "ce" if "ce" in losses else losses[0]
    ref_runs = [r for r in members if r.loss == ref_loss]
    ref_unit = ref_runs[0].unit
    label = "Vanilla" if ref_loss == "ce" else ref_loss
    n = len(ref_runs)
    if collapsed(groups[ref_unit]):
        share = groups[ref_unit].get(f"top_pred_share.{ref_runs[0].id_split}", math.nan)
        return [
            f"{group} ({label}, {n} seed{'s' * (n > 1)}): collapsed — not read (one class on "
            f"{100 * share:.0f}% of {ref_runs[0].id_split})."
        ]
    cost: dict[str, tuple[float, float, float]] = {}
    for m in METRICS:
        a, b = _parts(ref_runs, m, easy), _parts(t_runs, m, easy)
        if a and b:
            cost[m] = compare(m, a, b, [r.seed for r in ref_runs], [r.seed for r in t_runs])
    if not cost:
        return []
    lines = [
        f"{group} ({label}, {n} seed{'s' * (n > 1)}) vs the teacher: "
        + "; ".join(f"{NAMES[m]} {_fmt(*v)}{_cost_note(m, *v)}" for m, v in cost.items())
        + "."
    ]
    for loss in losses:
        if loss == ref_loss:
            continue
        mine = [r for r in members if r.loss == loss]
        if collapsed(groups[mine[0].unit]):
            lines.append(f"  {loss} at {group}: collapsed — not read.")
            continue
        parts = _loss_parts(mine, ref_runs, easy, cost, label)
        if parts:
            lines.append(
                f"  {loss} at {group} ({len(mine)} seed{'s' * (len(mine) > 1)}), vs {label}: "
                + "; ".join(parts)
                + "."
            )
    return lines


def _loss_parts(
    mine: list[Run], ref_runs: list[Run], easy, cost: dict[str, tuple], label: str
) -> list[str]:
    """A loss against its compression's reference row, metric by metric: kept apart from the
    group's lines so the comparison itself is one short loop."""
    parts = []
    ref_runs = at_seeds_of(ref_runs, mine)
    for m in METRICS:
        a, b = _parts(mine, m, easy), _parts(ref_runs, m, easy)
        if a and b:
            parts.append(
                _against(
                    m,
                    compare(m, a, b, [r.seed for r in mine], [r.seed for r in ref_runs]),
                    cost.get(m),
                    label,
                )
            )
    return parts


def _sig(lo: float, hi: float) -> bool:
    return not math.isnan(lo) and (lo > 0 or hi < 0)


def _cost_note(m: str, d: float, lo: float, hi: float) -> str:
    """Against the teacher: say when there is no measurable difference, and which way a measurable
    one goes."""
    if math.isnan(lo):
        return ""
    if not _sig(lo, hi):
        return " (CI includes 0: no measurable change)"
    worse = d > 0 if m in BETTER_LOWER else d < 0
    return " (a measurable cost)" if worse else " (measurably better)"


def _against(
    m: str, diff: tuple[float, float, float], cost: tuple[float, float, float] | None, label: str
) -> str:
    """A loss against its compression's reference row, in words that respect both intervals: a cost
    whose interval includes 0 is no measurable cost, a recovery whose interval includes 0 no
    measurable recovery, and a change of a lower-is-better metric (gap, reliance) is named better or
    worse."""
    d, lo, hi = diff
    gain = -d if m in BETTER_LOWER else d  # > 0: better
    shown = f"{_fmt(d, lo, hi)} vs {label}"
    if m in ("hard", "gap", "reliance") and cost is not None:
        c, clo, chi = cost
        lost = c if m in BETTER_LOWER else -c  # > 0: the compression made it worse
        if _sig(clo, chi) and lost > 0:
            if not _sig(lo, hi):
                return (
                    f"no measurable recovery of the {100 * lost:.1f}-point {NAMES[m]} cost "
                    f"({shown}, CI includes 0)"
                )
            if gain >= lost:
                return (
                    f"recovers all of the {100 * lost:.1f}-point {NAMES[m]} cost, and more "
                    f"({shown})"
                )
            if gain > 0:
                return (
                    f"recovers {100 * gain:.1f} of the {100 * lost:.1f}-point {NAMES[m]} cost "
                    f"({shown})"
                )
            return f"adds to the {100 * lost:.1f}-point {NAMES[m]} cost ({shown})"
        if not math.isnan(clo) and not _sig(clo, chi):
            prefix = f"no measurable {NAMES[m]} cost to recover; "
            return prefix + (
                f"{NAMES[m]} {shown}, " + ("better" if gain > 0 else "worse")
                if _sig(lo, hi)
                else f"{NAMES[m]} {shown}, CI includes 0"
            )
    if _sig(lo, hi):
        return f"{NAMES[m]} {shown} ({'better' if gain > 0 else 'worse'})"
    return f"{NAMES[m]} {shown} (CI includes 0)"
