"""What wins the robustness back: every loss against its compression's Vanilla row (the share of the
compression's hard-example cost it recovers), debiased teachers (how much of their gain a compressed
model keeps) and the bias models behind them. Every difference has its 95 % multi-bootstrap
interval (`report.effects`), and its words (`report.verdict`) never claim what an interval does not
show."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ..metrics import cell_metric
from . import verdict
from .compute import Rows
from .effects import Effects, side
from .figures import _figure
from .load import Run, Study, at_seeds_of
from .tables import Table, collapsed

TARGET_SHARE = 0.5  # the target: >= half of the hard-example cost won back ...
TARGET_ID_COST = 0.005  # ... at <= 0.5 points of ID accuracy


def focus_cells(rows: Rows) -> list[tuple[str, str]]:
    """(metric, label) of the breakdown cells that show a shortcut: per broken-down OOD split, the
    cells of the gold label the teacher does worst on (HANS: non-entailed, per heuristic)."""
    t = rows.groups.get(rows.teacher or "", {})
    out = []
    for (split, meta), cells in rows.cells.items():
        golds = {c.rsplit("/", 1)[1] for c in cells.values()}
        acc = {
            g: np.mean(
                [t[k] for k, c in cells.items() if c.endswith(f"/{g}") and k in t] or [math.inf]
            )
            for g in golds
        }
        worst = min(acc, key=acc.get)
        for c in cells.values():
            value, gold = c.rsplit("/", 1)
            if gold == worst:
                out.append(
                    (
                        cell_metric(split, meta, value, gold),
                        f"{split} {gold} {value}".replace("_", " "),
                    )
                )
    return out


def _units(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.unit, []).append(r)
    return out


def _cell(d: verdict.Diff | None) -> str:
    return "–" if d is None else verdict.shown(d)


def _compressions(study: Study, rows: Rows) -> list[tuple[str, list[Run], dict[str, list[Run]]]]:
    """(group, its Vanilla runs, loss -> runs) for every compression of the study's teacher."""
    out = []
    for group in dict.fromkeys(
        r.group for r in study.runs if not r.is_teacher and r.method != "teacher"
    ):
        members = [r for r in study.runs if r.group == group]
        vanilla = [r for r in members if r.loss == "ce"]
        if vanilla:
            losses: dict[str, list[Run]] = {}
            for r in members:
                if r.loss != "ce":
                    losses.setdefault(r.loss, []).append(r)
            out.append((group, vanilla, losses))
    return out


def _seeds(runs: list[Run]) -> str:
    return str(len(runs))


def _marked(*diffs) -> bool:
    return any(d is not None and d.one_class for d in diffs)


def wins_back(
    study: Study, rows: Rows, easy, others: dict | None = None
) -> tuple[list[Table], list[str], list[dict]]:
    """The table and the verdicts of every loss at every compression, and points for the figure.
    `others`: further easy/hard splits by name (another bias model's): Δ hard on each, since a
    loss that reads the splitting bias model is graded on its own bias model's split."""
    teacher = [r for r in study.runs if r.is_teacher]
    if not teacher:
        return [], [], []
    t = side(teacher)
    fx = Effects(rows)
    others = others or {}
    cells = focus_cells(rows)
    metrics = [
        ("acc_id", "ID"),
        ("hard", "hard"),
        ("gap", "E−H gap"),
        *cells,
        ("reliance", "cue reliance"),
        ("ece", "ECE"),
    ]
    header = (
        ["Compression", "Loss", "Seeds"]
        + [f"Δ {label}" for _, label in metrics]
        + [f"Δ hard ({name} split)" for name in others]
        + ["hard-example cost recovered", "verdict"]
    )
    table, lines, points = [], [], []
    any_one_class = False
    for group, vanilla, losses in _compressions(study, rows):
        if any(r.meta.get("teacher_variant") for r in vanilla):
            continue  # compressions of a debiased teacher: the next table
        v = side(vanilla)
        cost = {m: fx.diff(v, t, m, easy) for m in ("acc_id", "hard")}
        hard_cost = cost["hard"]
        head = f"{group} (Vanilla, {len(vanilla)} seed{'s' * (len(vanilla) > 1)})"
        if collapsed(rows.groups[vanilla[0].unit]):
            lines.append(f"{head}: collapsed — not read.")
            continue
        if hard_cost is not None:
            named = [("hard examples", hard_cost), ("ID", cost["acc_id"])]
            words = (
                verdict.one_seed(named)
                if hard_cost.one_seed
                else verdict.against((n, d) for n, d in named if d is not None)
            )
            lines.append(f"{head} against the teacher: {words}.")
        for loss, mine in losses.items():
            row = [group, loss, _seeds(mine)]
            if collapsed(rows.groups[mine[0].unit]):
                table.append(
                    row
                    + ["collapsed — not read"] * (len(metrics) + len(others) + 1)
                    + ["collapsed: one class"]
                )
                lines.append(f"  {loss}: collapsed — not read.")
                continue
            a, ref = side(mine), side(at_seeds_of(vanilla, mine))
            eff = {m: fx.diff(a, ref, m, easy) for m, _ in metrics}
            share = fx.share((a, ref), (t, ref), "hard", easy)
            elsewhere = {n: fx.diff(a, ref, "hard", e) for n, e in others.items()}
            any_one_class |= _marked(*eff.values(), *elsewhere.values(), share)
            words = verdict.wins_back_verdict(
                eff, hard_cost, share, cells, elsewhere, (TARGET_SHARE, TARGET_ID_COST)
            )
            row += [_cell(d) for d in eff.values()]
            row += [_cell(d) for d in elsewhere.values()]
            row += [verdict.share_cell(share), words]
            table.append(row)
            lines.append(f"  {loss} ({len(mine)} seed{'s' * (len(mine) > 1)}): {words}.")
            if eff["acc_id"] is not None and eff["hard"] is not None:
                points.append(
                    {
                        "group": group,
                        "loss": loss,
                        "id": eff["acc_id"].effect,
                        "hard": eff["hard"].effect,
                        "cost": hard_cost.effect if verdict.measurable(hard_cost) else None,
                    }
                )
    notes = [
        (
            "Each Δ: the loss's row minus its compression's Vanilla (CE) row at the loss's seeds, "
            "in points, with its 95 % multi-bootstrap interval. Hard-example cost recovered: "
            "(hard(loss) − hard(Vanilla)) / (hard(teacher) − hard(Vanilla)), both parts computed "
            "in each draw on the examples all three share (Fieller's interval); shown only where "
            f"that cost's interval excludes 0 (else '{verdict.NO_COST}'), as '≥ lo %' where its "
            "upper end passes 100 %."
            + (
                f" Δ hard ({', '.join(others)} split): the same difference on the hard examples "
                "of another bias model, a check independent of the bias model that defines "
                "'hard' here (a loss reading that model is partly graded on its own signal)."
                if others
                else ""
            )
        ),
        (
            f"Target: ≥ {100 * TARGET_SHARE:.0f} % of the cost recovered with the share's and Δ "
            f"hard's intervals above 0, at ≤ {100 * TARGET_ID_COST:.1f} points of ID accuracy."
        ),
    ] + ([verdict.ONE_CLASS_NOTE] if any_one_class else [])
    return (
        [
            Table(
                "What wins it back: each loss against the Vanilla row of its compression",
                header,
                table,
                notes,
            )
        ],
        lines,
        points,
    )


def debias_then_compress(study: Study, rows: Rows, easy) -> tuple[list[Table], list[str]]:
    """Debiased teachers against the study's teacher, and their compressed models against the same
    compression of the study's teacher with the same loss: the share of the teacher's gain they
    keep. In that share both teachers are the models being compressed: fixed references."""
    teacher = [r for r in study.runs if r.is_teacher]
    variants = {r.meta["variant"]: [r] for r in study.runs if r.meta.get("variant")}
    if not teacher or not variants:
        return [], []
    t = side(teacher)
    fx = Effects(rows)
    cells = focus_cells(rows)
    metrics = [("acc_id", "ID"), ("hard", "hard"), *cells, ("reliance", "cue reliance")]
    rows_t, lines = [], []
    marked = False
    for name, tv in variants.items():
        gains = {m: fx.diff(side(tv, fixed=False), t, m, easy) for m, _ in metrics}
        marked |= _marked(*gains.values())
        rows_t.append([f"teacher-{name}", tv[0].loss] + [_cell(d) for d in gains.values()])
        named = [(label, gains[m]) for m, label in metrics]
        if any(d is not None and d.one_seed for d in gains.values()):
            words = verdict.one_seed(named)
        else:
            words = (
                "; ".join(
                    f"{label} {verdict.shown(d)}" for label, d in named if verdict.measurable(d)
                )
                or "no measurable difference"
            )
        lines.append(f"Debiased teacher {name} against the teacher: {words}.")
    t1 = Table(
        "Debiased teachers against the study's teacher (Δ, points)",
        ["Teacher", "Loss"] + [f"Δ {label}" for _, label in metrics],
        rows_t,
        [
            (
                "Each Δ: the debiased teacher minus the study's teacher, one trained run against "
                "the fixed teacher: an interval over the examples only ("
                f"{verdict.NO_SEED_VARIANCE})."
            )
        ]
        + ([verdict.ONE_CLASS_NOTE] if marked else []),
    )
    base = {}
    for r in study.runs:
        if r.meta.get("teacher_variant") is None and not r.is_teacher and r.method != "teacher":
            base.setdefault((r.method, _settings(r), r.loss), []).append(r)
    rows_c = []
    any_one_class = False
    header = (
        ["Compression", "Loss", "Seeds"]
        + [f"Δ {label}" for _, label in metrics[1:]]
        + [f"share kept: {label}" for _, label in metrics[1:]]
    )
    for mine in _units([r for r in study.runs if r.meta.get("teacher_variant")]).values():
        v = mine[0].meta["teacher_variant"]
        ref = base.get((mine[0].method, _settings(mine[0]), mine[0].loss))
        if not ref or v not in variants:
            continue
        ref = at_seeds_of(ref, mine)
        a, b, tv = side(mine), side(ref), side(variants[v], fixed=True)
        eff = {m: fx.diff(a, b, m, easy) for m, _ in metrics[1:]}
        shares = {m: fx.share((a, b), (tv, t), m, easy) for m, _ in metrics[1:]}
        any_one_class |= _marked(*eff.values(), *shares.values())
        rows_c.append(
            [mine[0].group, mine[0].loss, _seeds(mine)]
            + [_cell(d) for d in eff.values()]
            + [verdict.share_cell(s, "no measurable teacher gain") for s in shares.values()]
        )
        head = (
            f"  {mine[0].group} / {mine[0].loss} ({len(mine)} seed{'s' * (len(mine) > 1)}) "
            f"against {ref[0].group} / {ref[0].loss}: "
        )
        if any(d is not None and d.one_seed for d in eff.values()):
            lines.append(head + verdict.one_seed((label, eff[m]) for m, label in metrics[1:]) + ".")
            continue
        kept = [
            k
            for m, label in metrics[1:]
            if shares[m] is not None and (k := verdict.kept(label, shares[m])) is not None
        ]
        lines.append(head + ("; ".join(kept) or "no measurable teacher gain to keep") + ".")
    t2 = Table(
        "Debias, then compress: what a compressed model keeps of its teacher's debiasing gain",
        header,
        rows_c,
        [
            (
                "Δ: the compressed model of the debiased teacher minus the same compression of the "
                "study's teacher with the same loss. Share kept: that Δ ÷ the teachers' Δ, both "
                "computed in each draw on the examples all four share (Fieller's interval; both "
                "teachers, the models being compressed, fixed references); shown only where the "
                "teachers' Δ excludes 0, as '≥ lo %' where its upper end passes 100 %."
            )
        ]
        + ([verdict.ONE_CLASS_NOTE] if any_one_class else []),
    )
    return [t1, t2], lines


def _settings(r: Run) -> str:
    s = r.compression.get("settings", {})
    return repr(sorted((k, v) for k, v in s.items() if k != "snapshots"))


def bias_model_table(study: Study) -> list[Table]:
    b = study.bias_models
    if not b:
        return []
    sources = sorted({s for v in b.values() for s in v.get("agreement", {})})
    rows = []
    for name, v in b.items():
        ts = v.get("training_set") or {}
        acc = "; ".join(f"{s} {100 * a:.1f}" for s, a in v.get("accuracy", {}).items())
        rows.append(
            [
                name,
                v["kind"],
                acc,
                f"{100 * ts['train_accuracy_insample']:.1f}"
                if "train_accuracy_insample" in ts
                else "–",
                f"{100 * ts['train_accuracy_crossfit']:.1f}"
                if "train_accuracy_crossfit" in ts
                else "–",
                ts.get("scoring", "insample"),
                f"{100 * v['easy_fraction']:.1f}",
                f"{100 * v['chance']:.1f}",
            ]
            + [
                f"{100 * v['agreement'][s]:.1f}" if s in v.get("agreement", {}) else "–"
                for s in sources
            ]
            + [
                "; ".join(
                    f"{o} {100 * a:.1f}" for o, a in v.get("agreement_with_bias_models", {}).items()
                )
                or "–"
            ]
        )
    return [
        Table(
            "Bias models: accuracy, how they scored the training set, and agreement (%)",
            [
                "Bias model",
                "Kind",
                "Accuracy (eval splits)",
                "Train acc. in-sample",
                "Train acc. cross-fitted",
                "Losses read",
                "Easy share (train)",
                "Chance agreement",
            ]
            + [f"Agreement with {s} uncertainty" for s in sources]
            + ["Agreement with other bias models"],
            rows,
            [
                (
                    "Cross-fitted: each training example scored by a model trained on the other "
                    "folds (never on it); in-sample: by the model trained on all of it. Agreement: "
                    "share of training examples on which 'easy' agrees — the lowest-uncertainty "
                    "examples (as many as the bias model finds easy) against the bias model's easy "
                    "set; chance = p² + (1 − p)²."
                )
            ],
        )
    ]


def wins_back_figure(points: list[dict]) -> Figure | None:
    groups = list(dict.fromkeys(p["group"] for p in points))
    if not groups:
        return None
    fig = _figure(5 * len(groups), 4.5)
    for ax, g in zip(
        np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)).ravel(), groups, strict=True
    ):
        mine = [p for p in points if p["group"] == g]
        for p in mine:
            x, y = 100 * p["id"].estimate, 100 * p["hard"].estimate
            xerr = (
                [[x - 100 * p["id"].lo], [100 * p["id"].hi - x]]
                if not math.isnan(p["id"].lo)
                else None
            )
            yerr = (
                [[y - 100 * p["hard"].lo], [100 * p["hard"].hi - y]]
                if not math.isnan(p["hard"].lo)
                else None
            )
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", capsize=2, ms=4)
            ax.annotate(p["loss"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        cost = next((p["cost"] for p in mine if p["cost"] is not None), None)
        if cost is not None:
            ax.axhline(
                -100 * cost.estimate * TARGET_SHARE,
                color="green",
                ls=":",
                lw=1,
                label=f"{100 * TARGET_SHARE:.0f} % of the hard-example cost",
            )
            ax.axhline(-100 * cost.estimate, color="green", ls="--", lw=1, label="all of it")
            ax.legend(fontsize=7)
        ax.axhline(0, color="gray", lw=0.8)
        ax.axvline(0, color="gray", lw=0.8)
        ax.axvline(-100 * TARGET_ID_COST, color="gray", ls=":", lw=0.8)
        ax.set(
            xlabel="Δ ID accuracy vs Vanilla (points)",
            ylabel="Δ hard-example accuracy (points)",
            title=g,
        )
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
