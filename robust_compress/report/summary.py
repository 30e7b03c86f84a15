"""The report's opening summary, in words generated from the numbers: for each compression, what it
cost against the teacher (Vanilla row), and what each other loss won back against Vanilla, every
difference with its 95 % multi-bootstrap interval (`report.effects`) and worded by
`report.verdict`, so nobody subtracts by hand."""

from __future__ import annotations

import math

from . import verdict
from .compute import Rows
from .effects import Effects, Side, side
from .load import Run, Study, at_seeds_of
from .tables import collapsed

NAMES = {
    "acc_id": "ID accuracy",
    "acc_ood": "OOD accuracy",
    "hard": "hard-example accuracy",
    "gap": "easy−hard gap",
    "reliance": "cue reliance",
}
METRICS = ["acc_id", "acc_ood", "hard", "gap", "reliance"]
RECOVERED = {"hard", "gap", "reliance"}  # read against the compression's cost of them


def summary_lines(study: Study, rows: Rows, easy_splits: list[str]) -> list[str]:
    runs, groups, teacher = study.runs, rows.groups, rows.teacher
    if teacher is None:
        return []
    easy = study.easy_hard[easy_splits[0]] if easy_splits else None
    t = side(r for r in runs if r.unit == teacher)
    fx = Effects(rows)
    lines = [verdict.INTERVALS_NOTE]
    if easy is not None:
        lines.append(
            f"Hard / easy examples: {easy_splits[0].replace('.', ', split by ', 1)} (easy = the "
            "bias-only model is right)."
        )
    body = []
    for group in dict.fromkeys(r.group for r in runs if not r.is_teacher):
        body += _group_lines(group, runs, groups, t, easy, fx)
    if any(verdict.ONE_CLASS in line for line in body):
        lines.append(verdict.ONE_CLASS_NOTE)
    return lines + body


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n > 1)}"


def _group_lines(
    group: str, runs: list[Run], groups: dict, t: Side, easy, fx: Effects
) -> list[str]:
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
            f"{group} ({label}, {_seeds(n)}): collapsed — not read (one class on "
            f"{100 * share:.0f}% of {ref_runs[0].id_split})."
        ]
    ref = side(ref_runs)
    cost = {m: d for m in METRICS if (d := fx.diff(ref, t, m, easy)) is not None}
    if not cost:
        return []
    named = [(NAMES[m], d) for m, d in cost.items()]
    words = (
        verdict.one_seed(named)
        if any(d.one_seed for d in cost.values())
        else verdict.against(named)
    )
    lines = [f"{group} ({label}, {_seeds(n)}) vs the teacher: {words}."]
    for loss in losses:
        if loss == ref_loss:
            continue
        mine = [r for r in members if r.loss == loss]
        if collapsed(groups[mine[0].unit]):
            lines.append(f"  {loss} at {group}: collapsed — not read.")
            continue
        parts = _loss_parts(mine, ref_runs, easy, cost, label, fx)
        if parts:
            lines.append(f"  {loss} at {group} ({_seeds(len(mine))}), vs {label}: {parts}.")
    return lines


def _loss_parts(
    mine: list[Run],
    ref_runs: list[Run],
    easy,
    cost: dict[str, verdict.Diff],
    label: str,
    fx: Effects,
) -> str:
    """A loss against its compression's reference row (at the loss's own seeds, paired), metric by
    metric: hard examples, the gap and cue reliance read against what the compression cost of
    them."""
    a, b = side(mine), side(at_seeds_of(ref_runs, mine))
    diffs = {m: d for m in METRICS if (d := fx.diff(a, b, m, easy)) is not None}
    if not diffs:
        return ""
    if any(d.one_seed for d in diffs.values()):
        return verdict.one_seed((NAMES[m], d) for m, d in diffs.items())
    return "; ".join(
        verdict.recovery(d, cost.get(m) if m in RECOVERED else None, NAMES[m], label)
        for m, d in diffs.items()
    )
