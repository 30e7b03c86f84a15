"""The report's figures. Collapsed rows (near-constant models) are left out of every trend line:
their accuracy is a constant predictor's, and a line through them draws an artefact."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .load import Run
from .tables import SPEED_NOISE, collapsed


def plain(text: str) -> str:
    """A label as matplotlib shows it verbatim: run, group, loss and split names are the user's, and
    a pair of `$` would otherwise be parsed as mathtext (`$\\foo{$` raised at drawing time, after
    a whole study had run)."""
    return str(text).replace("$", r"\$")


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def bars_caption(groups: dict[str, dict]) -> str:
    seeds = max((g["n_seeds"] for g in groups.values()), default=1)
    return (
        f" (error bars: std over {seeds} seeds)"
        if seeds > 1
        else " (one seed: no error bars over seeds)"
    )


CI_CAPTION = (
    " (error bars: 95 % intervals — over seeds where a row has several, else bootstrap over "
    "examples; grey ×: collapsed rows, not read and not joined)"
)


def _bar(g: dict, key: str) -> tuple[float, float]:
    """(below, above) the mean: the 95 % interval where the report has one, else the std over
    seeds."""
    if f"{key}.ci_lo" in g:
        return g[key] - g[f"{key}.ci_lo"], g[f"{key}.ci_hi"] - g[key]
    e = float(np.nan_to_num(g.get(f"{key}.std", math.nan)))
    return e, e


def _sparsity_lines(
    groups: dict[str, dict], teacher: str | None, key: str
) -> dict[str, list[tuple]]:
    """label -> [(sparsity, mean, below, above)], one line per loss (per method/loss if methods
    differ)."""
    sparse = {
        n: g
        for n, g in groups.items()
        if g["sparsity"] is not None and n != teacher and key in g and not collapsed(g)
    }
    by_method = len({g["method"] for g in sparse.values()}) > 1
    lines: dict[str, list[tuple]] = {}
    for g in sparse.values():
        lines.setdefault(f"{g['method']} / {g['loss']}" if by_method else g["loss"], []).append(
            (g["sparsity"], g[key], *_bar(g, key))
        )
    for pts in lines.values():
        if teacher and key in groups[teacher]:
            pts.append((0.0, groups[teacher][key], *_bar(groups[teacher], key)))
        pts.sort()
    return lines


def _collapsed_points(groups: dict[str, dict], key: str) -> list[tuple[float, float]]:
    return [
        (g["sparsity"], g[key])
        for g in groups.values()
        if g["sparsity"] is not None and key in g and collapsed(g)
    ]


def _plot_lines(
    ax,
    lines: dict[str, list[tuple]],
    scale: float,
    ylabel: str,
    title: str,
    marked: list[tuple[float, float]] = (),
    floor: float | None = None,
) -> None:
    for label, pts in lines.items():
        x, y, lo, hi = (np.array(c, float) for c in zip(*pts, strict=True))
        ax.errorbar(
            x, y * scale, yerr=[lo * scale, hi * scale], marker="o", capsize=3, label=plain(label)
        )
    if marked:
        ax.scatter(
            [p[0] for p in marked],
            [scale * p[1] for p in marked],
            marker="x",
            color="grey",
            label="collapsed (not read)",
        )
    if floor is not None:
        ax.axhline(scale * floor, color="grey", ls=":", lw=1, label="floor: a constant predictor")
    ax.set(xlabel="sparsity (teacher at 0)", ylabel=ylabel, title=plain(title))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def ood_floor(groups: dict[str, dict], teacher: str | None, runs: list[Run]) -> float | None:
    """The accuracy a constant predictor gets on the OOD set of Δ (HANS: 50 %), when one set makes
    it."""
    t = next((r for r in runs if r.unit == teacher), None)
    oods = t.rule.get("splits", []) if t is not None else []
    key = f"majority_rate.{oods[0]}" if len(oods) == 1 else ""
    return groups[teacher].get(key) if teacher and key else None


def _accuracy_figure(
    groups: dict[str, dict], teacher: str | None, runs: list[Run]
) -> list[tuple[str, str, Figure]]:
    """ID and OOD accuracy against sparsity: its own helper, so each figure reads on its own."""
    acc = {k: _sparsity_lines(groups, teacher, k) for k in ("acc_id", "acc_ood")}
    if not (acc["acc_id"] or acc["acc_ood"]):
        return []
    fig = _figure(10, 4)
    floor = ood_floor(groups, teacher, runs)
    for ax, k, t in zip(
        fig.subplots(1, 2), acc, ("ID accuracy", "OOD accuracy (pooled)"), strict=True
    ):
        _plot_lines(
            ax,
            acc[k],
            100,
            "accuracy (%)",
            f"{t} vs sparsity",
            _collapsed_points(groups, k),
            floor if k == "acc_ood" else None,
        )
    return [
        (
            "accuracy_vs_sparsity.png",
            f"ID and OOD accuracy versus sparsity, one line per loss{CI_CAPTION}"
            + (
                "; dotted: the OOD floor, what a constant predictor scores"
                if floor is not None
                else ""
            ),
            fig,
        )
    ]


def _easy_hard_figures(
    groups: dict[str, dict], teacher: str | None, s: str, bars: str, skip: str
) -> list[tuple[str, str, Figure]]:
    """The easy–hard gap and the easy/hard confidence of one split: a split's figures together,
    in the order the report shows them."""
    figs = []
    lines = _sparsity_lines(groups, teacher, f"eh.{s}.gap")
    if lines:
        fig = _figure(6, 4)
        _plot_lines(
            fig.subplots(),
            lines,
            100,
            "easy − hard accuracy (points)",
            f"Easy–hard gap on {s}",
            _collapsed_points(groups, f"eh.{s}.gap"),
        )
        figs.append(
            (
                f"easy_hard_gap_{s}.png",
                (
                    f"Easy minus hard accuracy gap on {s} versus sparsity{bars}; grey ×: "
                    "collapsed rows, not read"
                ),
                fig,
            )
        )
    have = {n: g for n, g in groups.items() if f"eh.{s}.easy_conf" in g and not collapsed(g)}
    if have:
        fig = _figure(max(6, 1.1 * len(have)), 4)
        ax, x = fig.subplots(), np.arange(len(have))
        for off, part in ((-0.2, "easy"), (0.2, "hard")):
            k = f"eh.{s}.{part}_conf"
            ax.bar(
                x + off,
                [100 * g[k] for g in have.values()],
                0.4,
                label=part,
                yerr=[100 * np.nan_to_num(g.get(f"{k}.std", math.nan)) for g in have.values()],
                capsize=3,
            )
        ax.set_xticks(x, [plain(n) for n in have], rotation=30, ha="right", fontsize=8)
        ax.set(
            ylabel="mean confidence (%)", title=plain(f"Confidence on easy vs hard examples of {s}")
        )
        ax.legend()
        figs.append(
            (
                f"confidence_easy_hard_{s}.png",
                f"Mean confidence on easy and hard examples of {s} per group{bars}{skip}",
                fig,
            )
        )
    return figs


def _speed_figures(
    groups: dict[str, dict], easy_splits: list[str], runtimes: list[str]
) -> list[tuple[str, str, Figure]]:
    """The speed–robustness Pareto figures: the study's own precision, then one per runtime."""
    figs = []
    speed = {n: g for n, g in groups.items() if "speedup" in g and "acc_id" in g}
    if len(speed) > 1:
        figs.append(
            ("speed_robustness.png", speed_figure_caption(speed), speed_figure(speed, easy_splits))
        )
    for rt in runtimes:  # one Pareto figure per deployable runtime
        key = f"speedup.{rt}"
        on = {n: g for n, g in groups.items() if key in g and "acc_id" in g}
        if len(on) > 1:
            figs.append(
                (
                    f"speed_robustness_{rt}.png",
                    speed_figure_caption(on, rt),
                    speed_figure(on, easy_splits, key, rt),
                )
            )
    return figs


def _reliability_figure(groups: dict[str, dict], runs: list[Run]) -> list[tuple[str, str, Figure]]:
    """Reliability diagrams, one panel per group with an ID split: its own helper, so the panel
    layout stays in one place."""
    with_id = [n for n in groups if any(r.unit == n and r.id_split for r in runs)]
    if not with_id:
        return []
    cols = min(4, len(with_id))
    rows = math.ceil(len(with_id) / cols)
    fig = _figure(3.2 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    edges = np.linspace(0, 1, 11)
    for ax, n in zip(axes, with_id, strict=False):
        df = pd.concat([r.tables[r.id_split] for r in runs if r.unit == n and r.id_split])
        which = np.clip(np.digitize(df["confidence"], edges[1:-1], right=True), 0, 9)
        accs = [df["correct"][which == b].mean() if (which == b).any() else 0 for b in range(10)]
        ax.bar(edges[:-1], accs, 0.1, align="edge", edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.set(
            title=plain(
                f"{n}{' ⚠ collapsed' if collapsed(groups[n]) else ''} "
                f"(ECE {100 * groups[n].get('ece_id', math.nan):.1f}%)"
            ),
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
        )
        ax.title.set_fontsize(9)
    for ax in axes[len(with_id) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return [
        (
            "reliability.png",
            (
                "Reliability diagrams on the ID split, one panel per group, seeds pooled "
                "(⚠: a collapsed row)"
            ),
            fig,
        )
    ]


def make_figures(
    groups: dict[str, dict],
    teacher: str | None,
    runs: list[Run],
    easy_splits: list[str],
    runtimes: list[str] = (),
) -> list[tuple[str, str, Figure]]:
    """(file name, alt text, figure) for each figure the study's data supports."""
    bars = bars_caption(groups)
    left_out = [n for n, g in groups.items() if collapsed(g)]
    skip = f"; collapsed rows left out: {', '.join(left_out)}" if left_out else ""
    figs = _accuracy_figure(groups, teacher, runs)
    for s in easy_splits:
        figs += _easy_hard_figures(groups, teacher, s, bars, skip)
    figs += _speed_figures(groups, easy_splits, runtimes)
    figs += _reliability_figure(groups, runs)
    return figs


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better for
    both)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any(
            (x2 >= x and y2 >= y) and (x2 > x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        ):
            front.append(i)
    return front


def speed_figure_caption(groups: dict[str, dict], runtime: str | None = None) -> str:
    where = f" on {runtime} (the teacher on {runtime} = 1×)" if runtime else ""
    return (
        f"Measured inference speed-up against the teacher{where} (x) and accuracy (y): ID, and the "
        "hardest robustness signal the study has (hard examples, else pooled OOD); one point per "
        "compression × loss with its 95 % interval (y), Pareto front (faster and more accurate "
        f"than every other point) circled; grey: speed-ups within {SPEED_NOISE:.0%} of 1 (timing "
        "noise: ≈ 1×, on no front); ×: collapsed rows"
    )


def speed_figure(
    groups: dict[str, dict],
    easy_splits: list[str],
    speed_key: str = "speedup",
    runtime: str | None = None,
) -> Figure:
    fig = _figure(11, 4.5)
    hard_key = next(
        (
            f"eh.{s}.hard_acc"
            for s in easy_splits
            if any(f"eh.{s}.hard_acc" in g for g in groups.values())
        ),
        "acc_ood",
    )
    for ax, key, title in zip(
        fig.subplots(1, 2),
        ("acc_id", hard_key),
        ("ID accuracy", "hard-example accuracy" if hard_key != "acc_ood" else "OOD accuracy"),
        strict=True,
    ):
        names = [n for n, g in groups.items() if key in g]
        pts = [(groups[n][speed_key], groups[n][key]) for n in names]
        real = [
            i
            for i, n in enumerate(names)
            if abs(pts[i][0] - 1) >= SPEED_NOISE and not collapsed(groups[n])
        ]
        front = {real[j] for j in pareto([pts[i] for i in real])}
        for i, (n, (x, y)) in enumerate(zip(names, pts, strict=True)):
            lo, hi = _bar(groups[n], key)
            grey = i not in real
            ax.errorbar(
                [x],
                [100 * y],
                yerr=[[100 * lo], [100 * hi]],
                fmt="x" if collapsed(groups[n]) else "o",
                ms=8 if i in front else 4,
                capsize=2,
                color="grey" if grey else None,
                mec="k" if i in front else None,
            )
            ax.annotate(
                plain(n), (x, 100 * y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        fx = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in fx], [100 * p[1] for p in fx], "--", color="gray", lw=1)
        ax.set(
            xlabel="measured speed-up vs teacher (×)" + (f", {runtime}" if runtime else ""),
            ylabel=f"{title} (%)",
            title=f"{title} vs speed" + (f" ({runtime})" if runtime else ""),
        )
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
