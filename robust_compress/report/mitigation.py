"""What wins the robustness back: every loss against its compression's Vanilla row (the share of the
compression's hard-example cost it recovers), debiased teachers (how much of their gain a compressed
model keeps) and the bias models behind them. Every difference has its 95 % interval, and the words
never claim what an interval does not show."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ..metrics import cell_metric, compare, metric_parts, ratio_ci
from .compute import Rows
from .figures import _figure
from .load import Run, Study, at_seeds_of
from .tables import Table, collapsed, constant

TARGET_SHARE = 0.5  # issue 18's target: >= half of the hard-example cost won back ...
TARGET_ID_COST = 0.005  # ... at <= 0.5 points of ID accuracy


@dataclass
class Effect:
    """A difference (or share) with its 95 % interval; `sig` when the interval excludes 0."""

    d: float
    lo: float = math.nan
    hi: float = math.nan

    @property
    def sig(self) -> bool:
        return not math.isnan(self.lo) and (self.lo > 0 or self.hi < 0)

    def ci(self) -> str:
        return f" [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}]" if not math.isnan(self.lo) else ""

    def pts(self) -> str:
        return f"{100 * self.d:+.1f}{self.ci()}"

    def share(self) -> str:
        if math.isnan(self.d):
            return "–"
        ci = f" [{100 * self.lo:.0f}, {100 * self.hi:.0f}]" if not math.isnan(self.lo) else ""
        return f"{100 * self.d:.0f} %{ci}"


def _parts(runs: list[Run], metric: str, easy) -> list:
    out = [metric_parts(r.tables, r.roles, r.id_split, metric, easy, r.rule) for r in runs]
    return out if out and all(p is not None for p in out) else []


def _diff(a: list[Run], b: list[Run], metric: str, easy) -> Effect | None:
    pa, pb = _parts(a, metric, easy), _parts(b, metric, easy)
    if not (pa and pb):
        return None
    return Effect(*compare(metric, pa, pb, [r.seed for r in a], [r.seed for r in b]))


def _share(
    metric: str, num: tuple[list[Run], list[Run]], den: tuple[list[Run], list[Run]], easy
) -> Effect:
    parts = [_parts(runs, metric, easy) for runs in (*num, *den)]
    if not all(parts):
        return Effect(math.nan)
    return Effect(*ratio_ci(metric, (parts[0], parts[1]), (parts[2], parts[3])))


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


def _split_of(metric: str) -> str | None:
    """The OOD split of a breakdown cell's metric (`cell_metric`'s name); None for other metrics."""
    return metric.split(":")[1] if metric.startswith("cell:") else None


def _one_class(rows: Rows, runs: list[Run], cells) -> set[str]:
    """The OOD splits on which a row predicts one class (>= 90 %): its breakdown cells there are a
    constant predictor's score, marked ‡ and never called a gain."""
    g = rows.groups[runs[0].unit]
    return {_split_of(m) for m, _ in cells if constant(g, _split_of(m))}


def _mark(metric: str, one_class: set[str]) -> str:
    return " ‡" if _split_of(metric) in one_class else ""


def _cell(e: Effect | None, metric: str, one_class: set[str]) -> str:
    return "–" if e is None else e.pts() + _mark(metric, one_class)


ONE_CLASS_NOTE = (
    "‡ the row predicts one class on ≥ 90 % of this split: its cell is (close to) a constant "
    "predictor's score, not a gain in robustness."
)


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


def wins_back(
    study: Study, rows: Rows, easy, others: dict | None = None
) -> tuple[list[Table], list[str], list[dict]]:
    """The table and the verdicts of every loss at every compression, and points for the figure.
    `others`: further easy/hard splits by name (another bias model's): Δ hard on each, since a
    loss that reads the splitting bias model is graded on its own bias model's split."""
    teacher = [r for r in study.runs if r.is_teacher]
    if not teacher:
        return [], [], []
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
        cost = {m: _diff(vanilla, teacher, m, easy) for m in ("acc_id", "hard")}
        hard_cost = cost["hard"]
        v_collapsed = collapsed(rows.groups[vanilla[0].unit])
        head = f"{group} (Vanilla, {len(vanilla)} seed{'s' * (len(vanilla) > 1)})"
        if v_collapsed:
            lines.append(f"{head}: collapsed — not read.")
            continue
        if hard_cost is not None:
            what = (
                "a measurable" if hard_cost.sig and hard_cost.d < 0 else "no measurable"
            ) + " hard-example cost"
            lines.append(
                f"{head} against the teacher: hard examples {hard_cost.pts()} ({what}); ID "
                f"{cost['acc_id'].pts() if cost['acc_id'] else '–'}."
            )
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
            ref = at_seeds_of(vanilla, mine)
            eff = {m: _diff(mine, ref, m, easy) for m, _ in metrics}
            share = Effect(math.nan)
            measurable_cost = hard_cost is not None and hard_cost.sig and hard_cost.d < 0
            if measurable_cost:
                share = _share("hard", (mine, ref), (teacher, ref), easy)
            elsewhere = {n: _diff(mine, ref, "hard", e) for n, e in others.items()}
            one_class = _one_class(rows, mine, cells)
            any_one_class |= bool(one_class)
            verdict = _verdict(loss, eff, share, measurable_cost, cells, elsewhere, one_class)
            row += [_cell(e, m, one_class) for m, e in eff.items()]
            row += [e.pts() if e is not None else "–" for e in elsewhere.values()]
            row += [share.share() if measurable_cost else "no measurable cost", verdict]
            table.append(row)
            lines.append(f"  {loss} ({len(mine)} seed{'s' * (len(mine) > 1)}): {verdict}.")
            if eff["acc_id"] is not None and eff["hard"] is not None:
                points.append(
                    {
                        "group": group,
                        "loss": loss,
                        "id": eff["acc_id"],
                        "hard": eff["hard"],
                        "cost": hard_cost if measurable_cost else None,
                    }
                )
    notes = [
        (
            "Each Δ: the loss's row minus its compression's Vanilla (CE) row, in points, with a "
            "95 % interval (over seeds when a row has several, else a paired bootstrap over the "
            "shared examples). Hard-example cost recovered: (hard(loss) − hard(Vanilla)) / "
            "(hard(teacher) − hard(Vanilla)), 95 % bootstrap interval over examples and seeds; "
            "shown only where the compression's hard-example cost is measurable (its interval "
            "excludes 0)."
            + (
                f" Δ hard ({', '.join(others)} split): the same difference on the hard examples "
                "of another bias model, a check independent of the bias model that defines "
                "'hard' here (a loss reading that model is partly graded on its own signal)."
                if others
                else ""
            )
        ),
        (
            f"Target (issue 18): ≥ {100 * TARGET_SHARE:.0f} % of the cost recovered with the "
            f"share's and Δ hard's intervals above 0, at ≤ {100 * TARGET_ID_COST:.1f} points of ID "
            "accuracy."
        ),
    ] + ([ONE_CLASS_NOTE] if any_one_class else [])
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


def _verdict(
    loss: str,
    eff: dict,
    share: Effect,
    measurable_cost: bool,
    cells,
    elsewhere: dict,
    one_class: set[str],
) -> str:
    hard, acc = eff["hard"], eff["acc_id"]
    parts = []
    if hard is not None:
        if measurable_cost:
            if hard.sig and hard.d > 0:
                parts.append(
                    f"wins back {share.share()} of the hard-example cost (Δ hard {hard.pts()})"
                )
                parts += [_elsewhere(name, e) for name, e in elsewhere.items() if e is not None]
            elif hard.sig:
                parts.append(f"adds to the hard-example cost (Δ hard {hard.pts()})")
            else:
                parts.append(
                    f"no measurable recovery of the hard-example cost (Δ hard {hard.pts()})"
                )
        else:
            parts.append(
                f"hard examples {hard.pts()}" + ("" if hard.sig else ", no measurable change")
            )
    if acc is not None:
        parts.append(f"ID {acc.pts()}" if acc.sig else "no measurable ID change")
    unread = set()
    for m, label in cells:
        e = eff.get(m)
        if e is not None and e.sig:
            if _split_of(m) in one_class:
                unread.add(_split_of(m))
            else:
                parts.append(f"{label} {e.pts()}")
    parts += [f"its {s} changes are not read: one class on {s} (‡)" for s in sorted(unread)]
    rel = eff.get("reliance")
    if rel is not None and rel.sig:
        parts.append(f"cue reliance {'cut' if rel.d < 0 else 'raised'} ({rel.pts()})")
    ece = eff.get("ece")
    if ece is not None and ece.sig:
        parts.append(f"ECE {ece.pts()}")
    if (
        measurable_cost
        and hard is not None
        and hard.sig
        and hard.d > 0
        and share.d >= TARGET_SHARE
        and share.lo > 0
        and acc is not None
        and acc.d >= -TARGET_ID_COST
    ):
        parts.append("meets the target")
    return "; ".join(parts)


def _elsewhere(name: str, e: Effect) -> str:
    """What a loss that wins on one bias model's hard examples does on another's."""
    if not e.sig:
        return f"not measurably on the {name} split's hard examples ({e.pts()})"
    word = "also on" if e.d > 0 else "but loses on"
    return f"{word} the {name} split's hard examples ({e.pts()})"


def debias_then_compress(study: Study, rows: Rows, easy) -> tuple[list[Table], list[str]]:
    """Debiased teachers against the study's teacher, and their compressed models against the same
    compression of the study's teacher with the same loss: the share of the teacher's gain they
    keep."""
    teacher = [r for r in study.runs if r.is_teacher]
    variants = {r.meta["variant"]: [r] for r in study.runs if r.meta.get("variant")}
    if not teacher or not variants:
        return [], []
    cells = focus_cells(rows)
    metrics = [("acc_id", "ID"), ("hard", "hard"), *cells, ("reliance", "cue reliance")]
    rows_t, lines = [], []
    gains: dict[str, dict[str, Effect | None]] = {}
    for name, t in variants.items():
        gains[name] = {m: _diff(t, teacher, m, easy) for m, _ in metrics}
        rows_t.append(
            [f"teacher-{name}", t[0].loss] + [e.pts() if e else "–" for e in gains[name].values()]
        )
        sig = [
            f"{label} {e.pts()}"
            for (m, label), e in zip(metrics, gains[name].values(), strict=True)
            if e is not None and e.sig
        ]
        lines.append(
            f"Debiased teacher {name} against the teacher: "
            + ("; ".join(sig) if sig else "no measurable difference")
            + "."
        )
    t1 = Table(
        "Debiased teachers against the study's teacher (Δ, points)",
        ["Teacher", "Loss"] + [f"Δ {label}" for _, label in metrics],
        rows_t,
        [
            (
                "Each Δ: the debiased teacher minus the study's teacher (one run each: paired "
                "bootstrap interval over the examples)."
            )
        ],
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
        eff = {m: _diff(mine, ref, m, easy) for m, _ in metrics[1:]}
        shares = {
            m: (
                _share(m, (mine, ref), (variants[v], teacher), easy)
                if gains[v].get(m) is not None and gains[v][m].sig
                else Effect(math.nan)
            )
            for m, _ in metrics[1:]
        }
        one_class = _one_class(rows, mine, cells)
        any_one_class |= bool(one_class)
        mark = {m: _mark(m, one_class) for m in shares}
        rows_c.append(
            [mine[0].group, mine[0].loss, _seeds(mine)]
            + [_cell(e, m, one_class) for m, e in eff.items()]
            + [
                s.share() + mark[m] if not math.isnan(s.d) else "no measurable teacher gain"
                for m, s in shares.items()
            ]
        )
        kept = [
            f"{label}: keeps {shares[m].share()} of the teacher's {gains[v][m].pts()}"
            for m, label in metrics[1:]
            if not math.isnan(shares[m].d) and not mark[m]
        ]
        lines.append(
            f"  {mine[0].group} / {mine[0].loss} ({len(mine)} seed{'s' * (len(mine) > 1)}) against "
            f"{ref[0].group} / {ref[0].loss}: "
            + ("; ".join(kept) if kept else "no measurable teacher gain to keep")
            + "."
        )
    t2 = Table(
        "Debias, then compress: what a compressed model keeps of its teacher's debiasing gain",
        header,
        rows_c,
        [
            (
                "Δ: the compressed model of the debiased teacher minus the same compression of the "
                "study's teacher with the same loss. Share kept: that Δ ÷ the teachers' Δ, with a "
                "95 % bootstrap interval over examples and seeds; only where the teacher's gain is "
                "measurable."
            )
        ]
        + ([ONE_CLASS_NOTE] if any_one_class else []),
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
            x, y = 100 * p["id"].d, 100 * p["hard"].d
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
                -100 * cost.d * TARGET_SHARE,
                color="green",
                ls=":",
                lw=1,
                label=f"{100 * TARGET_SHARE:.0f} % of the hard-example cost",
            )
            ax.axhline(-100 * cost.d, color="green", ls="--", lw=1, label="all of it")
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
