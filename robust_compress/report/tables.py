"""The paper-style tables of a report, as (title, header, rows, footnotes) ready to render.

A row whose model is collapsed (near-constant on its ID split) shows its accuracies but
"collapsed — not read" where a robustness number would be (Δ, F_bias, easy/hard gap): those
numbers describe a constant predictor, not a model. An undefined F_bias shows "–" with a footnote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

COLLAPSED = "collapsed — not read"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def pct(g: dict, k: str) -> str:
    """`mean ± std [CI]` in percent; the CI is over seeds when n > 1, else over examples."""
    if k not in g:
        return "–"
    s = f"{100 * g[k]:.1f}"
    if not math.isnan(g.get(f"{k}.std", math.nan)):
        s += f" ± {100 * g[f'{k}.std']:.1f}"
    if f"{k}.ci_lo" in g:
        s += f" [{100 * g[f'{k}.ci_lo']:.1f}, {100 * g[f'{k}.ci_hi']:.1f}]"
    return s


def num(
    g: dict, k: str, fmt: str = "{:.3f}", scale: float = 1.0, suffix: str = "", spread: bool = True
) -> str:
    if k not in g or math.isnan(g[k]):
        return "–"
    s = fmt.format(g[k] * scale)
    if spread and not math.isnan(g.get(f"{k}.std", math.nan)):
        s += " ± " + fmt.format(g[f"{k}.std"] * scale)
    return s + suffix


SPEED_NOISE = (
    0.05  # speed-ups within 5 % of 1 are timing noise on a shared CPU (magnitude: 0.99-1.02x)
)


def speed_cell(g: dict, k: str = "speedup") -> str:
    """A measured speed-up; one within the timing noise of 1 reads "≈ 1×", not a gain or a loss."""
    if k in g and not math.isnan(g[k]) and abs(g[k] - 1) < SPEED_NOISE:
        return "≈ 1×"
    return num(g, k, "{:.2f}", suffix="×")


def name_cell(n: str, g: dict) -> str:
    """A row's name, marked when its model is collapsed: every table says so, not only Table 1."""
    return n + (" ⚠" if collapsed(g) else "")


def collapsed(g: dict) -> bool:
    """Most of a row's seeds are near-constant on the ID split."""
    return g.get("collapsed", 0.0) >= 0.5


def constant(g: dict, split: str) -> bool:
    """The row predicts one class on >= 90 % of the split: its score there is a constant's."""
    return g.get(f"top_pred_share.{split}", 0.0) >= 0.9


def runtime_table(
    groups: dict[str, dict], runtimes: list[str], missing: dict[str, dict[str, str]]
) -> Table:
    """Speed-up per deployable runtime, each against the teacher on that same runtime."""
    rows, reasons = [], {}
    for n, g in groups.items():
        cells = []
        for rt in runtimes:
            why = missing.get(rt, {}).get(n)
            if why is not None and f"speedup.{rt}" not in g:
                mark = reasons.setdefault(why, "*" * (len(reasons) + 1))
                cells.append(f"– {mark}")
            else:
                cells.append(speed_cell(g, f"speedup.{rt}"))
        rows.append(
            [
                name_cell(n, g),
                str(g["n_seeds"]),
                pct(g, "acc_id"),
                num(g, "flops_reduction", "{:.2f}", suffix="×", spread=False),
            ]
            + cells
        )
    notes = [
        (
            "Speed-up per runtime: examples/s of the model on that runtime ÷ the teacher's on the "
            "same runtime, timed side by side by the study's speed stage (same examples, batch and "
            "threads); onnxruntime runs the model exported to ONNX (int8: onnxruntime's dynamic "
            f"int8); ≈ 1×: within {SPEED_NOISE:.0%} of 1."
        )
    ]
    notes += [f"{mark} not run on this runtime: {why}." for why, mark in reasons.items()]
    return Table(
        "Table 2b: Speed-up per runtime",
        ["Group", "Seeds", "ID acc (%)", "FLOPs ÷"] + runtimes,
        rows,
        notes,
    )


def _accuracy_table(groups: dict[str, dict], splits: dict[str, str]) -> Table:
    """Table 1, accuracy per split: one helper per table keeps each table's rows and notes
    together."""
    first = [
        [
            name_cell(n, g),
            g["method"],
            g["loss"],
            "–" if g["sparsity"] is None else f"{g['sparsity']:.2f}",
            str(g["n_seeds"]),
        ]
        for n, g in groups.items()
    ]
    const_cells = False
    rows = []
    for f, g in zip(first, groups.values(), strict=True):
        row = list(f)
        for s in splits:
            cell = pct(g, f"acc.{s}")
            if constant(g, s) and cell != "–":
                cell += " ‡"
                const_cells = True
            row.append(cell)
        rows.append(row)
    notes = []
    if any(collapsed(g) for g in groups.values()):
        notes.append(
            "⚠ collapsed: predicts one class on ≥ 90 % of its ID split, or scores within 5 points "
            "of its majority-class rate; its robustness numbers are not read."
        )
    if const_cells:
        notes.append(
            "‡ predicts one class on ≥ 90 % of this split: the score is (close to) what a constant "
            "predictor gets, not a measure of robustness."
        )
    return Table(
        "Table 1: Accuracy per split (%)",
        ["Group", "Method", "Loss", "Sparsity", "Seeds"]
        + [f"{s} ({r.upper()})" for s, r in splits.items()],
        rows,
        notes,
    )


def _bias_table(groups: dict[str, dict]) -> Table:
    """Table 2, relative bias, size and speed: its own helper, as its footnotes depend on its
    rows."""
    speed = any("speedup" in g for g in groups.values())
    rows, undefined = [], False
    for n, g in groups.items():
        if collapsed(g):
            delta = fb = COLLAPSED
        else:
            delta, fb = num(g, "delta"), num(g, "f_bias")
            if fb == "–" and "delta" in g:
                fb, undefined = "– †", True
        rows.append(
            [
                name_cell(n, g),
                str(g["n_seeds"]),
                pct(g, "acc_id"),
                pct(g, "acc_ood"),
                delta,
                fb,
                num(g, "ece_id", "{:.1f}", 100),
                num(g, "parameters", "{:.2f}", 1e-6, spread=False),
                num(g, "nonzero_parameters", "{:.2f}", 1e-6, spread=False),
                num(g, "bytes_on_disk", "{:.1f}", 2**-20, spread=False),
                num(g, "flops_reduction", "{:.2f}", suffix="×", spread=False),
            ]
            + ([speed_cell(g), num(g, "speedup_per_flops", "{:.2f}")] if speed else [])
        )
    notes = [
        (
            "Δ = (acc_ID − acc_OOD) / acc_ID, acc_OOD over the task's OOD sets for Δ (pooled "
            "examples, or the mean of the sets where the task says so: FEVER); F_bias = Δ / Δ of "
            "the teacher on the same examples (> 1: more biased than the teacher)."
        )
    ]
    if undefined:
        notes.append(
            "† F_bias undefined: the teacher shows no ID−OOD gap (Δ_teacher < 0.01) or the model's "
            "Δ is negative; a ratio to (almost) zero or to a reversed gap says nothing."
        )
    notes.append(
        "FLOPs ÷: the teacher's encoder FLOPs per example ÷ the model's (dense kernels; magnitude "
        "zeros do not count as removed)."
    )
    if speed:
        notes.append(
            "Speed-up: inference examples/s of the model ÷ the teacher's, measured side by side in "
            "one process by the study's speed stage (same examples, batch and threads); ÷ FLOPs: "
            "speed-up ÷ FLOP reduction (1.0: the speed-up the FLOP count promises); ≈ 1×: within "
            f"{SPEED_NOISE:.0%} of 1, the timing noise of a shared CPU."
        )
    return Table(
        "Table 2: Relative bias, model size and speed",
        [
            "Group",
            "Seeds",
            "ID acc (%)",
            "OOD acc for Δ (%)",
            "Δ",
            "F_bias",
            "ECE (ID, %)",
            "Params (M)",
            "Non-zero (M)",
            "Size (MiB)",
            "FLOPs ÷",
        ]
        + (["Speed-up", "÷ FLOPs"] if speed else []),
        rows,
        notes,
    )


def _easy_hard_table(groups: dict[str, dict], s: str) -> Table:
    """Table 4 for one easy/hard split: one table per split, built the same way for each."""
    rows = []
    for n, g in groups.items():
        if f"eh.{s}.gap" not in g:
            continue
        accs = [num(g, f"eh.{s}.{k}", "{:.1f}", 100) for k in ("easy_acc", "hard_acc")]
        gap = COLLAPSED if collapsed(g) else num(g, f"eh.{s}.gap", "{:.1f}", 100)
        rows.append(
            [name_cell(n, g), str(g["n_seeds"])]
            + accs
            + [gap]
            + [num(g, f"eh.{s}.{k}", "{:.1f}", 100) for k in ("easy_conf", "hard_conf")]
            + [num(g, f"eh.{s}.{k}", "{:.0f}", spread=False) for k in ("n_easy", "n_hard")]
        )
    return Table(
        f"Table 4: Easy / hard examples of {s.replace('.', ', split by ', 1)}",
        [
            "Group",
            "Seeds",
            "Easy acc (%)",
            "Hard acc (%)",
            "Gap E−H (points)",
            "Conf. easy (%)",
            "Conf. hard (%)",
            "n easy",
            "n hard",
        ],
        rows,
    )


def _shortcut_table(groups: dict[str, dict]) -> Table:
    """Table 5, controlled-shortcut reliance: kept apart like the others so make_tables only
    decides which tables a study has."""
    return Table(
        "Table 5: Controlled-shortcut reliance",
        ["Group", "Seeds", "Aligned (%)", "Conflicting (%)", "Reliance A−C (points)"],
        [
            [name_cell(n, g), str(int(g.get("shortcut.reliance.n", g["n_seeds"])))]
            + [
                num(g, f"shortcut.{k}", "{:.1f}", 100)
                for k in ("aligned", "conflicting", "reliance")
            ]
            for n, g in groups.items()
            if "shortcut.reliance" in g
        ],
    )


def make_tables(
    groups: dict[str, dict],
    splits: dict[str, str],
    easy_splits: list[str],
    cells: dict[tuple[str, str], dict[str, str]],
    runtimes: list[str] = (),
    missing: dict[str, dict[str, str]] | None = None,
) -> list[Table]:
    """Each paper-style table that the study's data supports."""
    tables = [_accuracy_table(groups, splits), _bias_table(groups)]
    if runtimes:
        tables.append(runtime_table(groups, list(runtimes), missing or {}))
    for (split, meta), mine in cells.items():
        tables.append(
            Table(
                f"Table 3: {split} accuracy by {meta} × gold label (%)",
                ["Group", "Seeds"] + list(mine.values()),
                [
                    [name_cell(n, g), str(g["n_seeds"])] + [num(g, k, "{:.1f}", 100) for k in mine]
                    for n, g in groups.items()
                    if any(k in g for k in mine)
                ],
            )
        )
    for s in easy_splits:
        tables.append(_easy_hard_table(groups, s))
    if any("shortcut.reliance" in g for g in groups.values()):
        tables.append(_shortcut_table(groups))
    return tables
