"""A study's report: the paper's tables and figures, recomputed from every run's prediction tables.

summary.json files may come from older code or other settings; the report recomputes every
accuracy, CI, Δ, F_bias, per-heuristic cell and easy/hard number from `predictions/<split>.parquet`
(only sizes and speed come from compression.json / speed.json), so each number traces back to
saved examples. Output (`<study>/report/`) is written atomically: a bad input leaves no folder.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .evaluate import bootstrap_ci, f_bias, relative_bias, split_summary
from .io import UserError, atomic_dir
from .shortcut import reliance

STANDARD = {"id", "gold", "pred", "correct", "confidence", "loss"}
REQUIRED = ("id", "gold", "pred", "correct", "confidence")
INDEX_KEYS = ("name", "path", "group", "method", "loss", "seed", "is_teacher")  # + optional sparsity
MAX_META_VALUES = 30  # a column with more distinct values is carried text, not a grouping
# two-sided 95% Student t quantiles for 1..30 degrees of freedom (CI over seeds)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1,h2{border-bottom:1px solid #ddd;
padding-bottom:.2em}table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;
padding:.3em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr:nth-child(even){background:#fafafa}td:first-child{white-space:nowrap}figure{margin:1.5em 0}img{max-width:100%}
figcaption{color:#555;font-size:.9em}.note{color:#555}"""
BARS = " (error bars: std over seeds)"


@dataclass
class Run:
    """One index entry with its loaded tables; `roles` keeps summary.json's split order."""

    name: str
    group: str  # index group; rows aggregate seeds of one `unit` = group, or group/loss if losses differ
    method: str
    loss: str
    sparsity: float | None
    seed: int
    is_teacher: bool
    roles: dict[str, str]
    id_split: str | None
    tables: dict[str, pd.DataFrame]
    compression: dict[str, Any]
    speed: float | None
    unit: str = ""


# ---------------------------------------------------------------- loading (all checks before writing)

def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: malformed JSON ({e})") from None


def _read_parquet(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UserError(f"{path}: unreadable parquet ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}")
    return df


def _load_run(study: Path, index: Path, i: int, e: Any) -> Run:
    if not isinstance(e, dict) or (missing := [k for k in INDEX_KEYS if k not in e]):
        raise UserError(f"{index}: entry {i} must be an object with keys {list(INDEX_KEYS)}"
                        + (f" (missing {missing})" if isinstance(e, dict) else ""))
    e = {"sparsity": None} | e
    if not isinstance(e["is_teacher"], bool) or not (e["sparsity"] is None or isinstance(e["sparsity"], int | float)):
        raise UserError(f"{index}: entry {i} ({e['name']}): is_teacher must be a bool, sparsity a number or null")
    folder = study / str(e["path"])
    summary = _read_json(folder / "summary.json")
    splits = summary.get("splits") if isinstance(summary, dict) else None
    if not isinstance(splits, dict) or not splits:
        raise UserError(f"{folder / 'summary.json'}: no 'splits'")
    roles = {s: (v or {}).get("role") for s, v in splits.items()}
    if bad := [s for s, r in roles.items() if r not in ("id", "ood", "cue")]:
        raise UserError(f"{folder / 'summary.json'}: split(s) {bad} lack a role 'id', 'ood' or 'cue'")
    ids = [s for s, r in roles.items() if r == "id"]
    id_split = summary.get("id_split") if summary.get("id_split") in ids else (ids[0] if ids else None)
    tables = {}
    for s in roles:
        df = _read_parquet(folder / "predictions" / f"{s}.parquet", REQUIRED)
        tables[s] = df.assign(id=df["id"].astype(str), correct=df["correct"].astype(bool))
    speed = None
    if (folder / "speed.json").is_file():
        speed = _read_json(folder / "speed.json").get("examples_per_s")
        if not isinstance(speed, int | float):
            raise UserError(f"{folder / 'speed.json'}: 'examples_per_s' must be a number")
    return Run(str(e["name"]), str(e["group"]), str(e["method"]), str(e["loss"]), e["sparsity"],
               int(e["seed"]), e["is_teacher"], roles, id_split, tables,
               _read_json(folder / "compression.json"), speed)


def load_study(study: Path) -> tuple[list[Run], dict[str, pd.DataFrame], dict[str, dict], list[str]]:
    """Runs, easy/hard partitions (split -> id, easy), shortcut results (run name -> dict) and the
    shortcut files naming no indexed run (a partial study: index.json lists finished runs only).

    Run names may hold slashes (`magnitude-0.40/rmc/seed1`): the shortcut file is then nested.
    """
    index = study / "index.json"
    entries = _read_json(index)
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{index}: expected a non-empty list of runs")
    runs = [_load_run(study, index, i, e) for i, e in enumerate(entries)]
    if dup := sorted({r.name for r in runs if [x.name for x in runs].count(r.name) > 1}):
        raise UserError(f"{index}: duplicate run name(s) {dup}")
    for r in runs:
        several = len({x.loss for x in runs if x.group == r.group}) > 1
        r.unit = f"{r.group}/{r.loss}" if several else r.group
        first = next(x for x in runs if x.unit == r.unit)
        if (r.method, r.sparsity, r.is_teacher) != (first.method, first.sparsity, first.is_teacher):
            raise UserError(f"{index}: runs {first.name!r} and {r.name!r} of group {r.group!r} differ in "
                            "method, sparsity or is_teacher")
    if len(teachers := sorted({r.unit for r in runs if r.is_teacher})) > 1:
        raise UserError(f"{index}: runs of several groups/losses are marked is_teacher: {teachers}")
    easy_hard = {}
    for p in sorted((study / "easy_hard").glob("*.parquet"), key=lambda p: (p.stem.count("."), p.stem)):
        part = _read_parquet(p, ("id", "easy"))
        if part["id"].duplicated().any() or part["easy"].isna().any():
            raise UserError(f"{p}: ids must be unique and 'easy' must have no missing values")
        # `<split>.parquet`, or `<split>.<name>.parquet` for more splits of one set (several bias models)
        easy_hard[p.stem] = pd.DataFrame({"id": part["id"].astype(str), "easy": part["easy"].astype(bool)})
        easy_hard[p.stem].attrs.update(path=str(p), split=p.stem.split(".")[0])
    shortcut, orphans = {}, []
    for p in sorted((study / "shortcut").rglob("*.json")):
        name = p.relative_to(study / "shortcut").as_posix()[: -len(".json")]
        if name not in {r.name for r in runs}:
            orphans.append(str(p.relative_to(study)))
            continue
        d = _read_json(p)
        if not isinstance(d, dict) or not all(isinstance(d.get(k), int | float) for k in ("aligned", "conflicting")):
            raise UserError(f"{p}: expected numbers 'aligned' and 'conflicting'")
        shortcut[name] = d
    return runs, easy_hard, shortcut, orphans


# ---------------------------------------------------------------- metrics

def meta_columns(df: pd.DataFrame) -> list[str]:
    """Grouping columns of a prediction table (e.g. HANS `heuristic`): the non-standard, few-valued ones."""
    def few(c: str) -> bool:
        try:
            return df[c].nunique(dropna=True) <= MAX_META_VALUES
        except TypeError:  # unhashable values (lists): not a grouping
            return False
    return [c for c in df.columns if c not in STANDARD and not str(c).startswith("p_") and few(c)]


def run_metrics(run: Run, easy_hard: dict[str, pd.DataFrame], shortcut: dict[str, dict],
                cells: dict[tuple[str, str], dict[str, str]]) -> dict[str, float]:
    """Flat metrics of one run; accuracies keep their bootstrap CI as `<key>.ci_lo/.ci_hi`.

    `cells` collects the breakdown layout: (split, meta column) -> {metric key: "value/gold"}.
    """
    m: dict[str, float] = {}
    for split, df in run.tables.items():
        if run.roles[split] == "cue":
            continue
        s = split_summary(df, meta_columns(df))
        m[f"acc.{split}"], (m[f"acc.{split}.ci_lo"], m[f"acc.{split}.ci_hi"]) = s["accuracy"], s["ci95"]
        m[f"ece.{split}"], m[f"conf.{split}"] = s["ece"], s["mean_confidence"]
        for key, by in s.items():
            if key.startswith("by_") and key != "by_gold" and not key.endswith("_only"):
                for cell, v in by.items():
                    m[f"by.{split}.{key[3:]}.{cell}"] = v
                    cells.setdefault((split, key[3:]), {})[f"by.{split}.{key[3:]}.{cell}"] = cell
    oods = [s for s, r in run.roles.items() if r == "ood"]
    if run.id_split and oods and run.tables[run.id_split]["correct"].any():  # Δ needs acc_ID > 0
        pooled = pd.concat([run.tables[s]["correct"] for s in oods]).to_numpy()
        m["acc_id"] = m[f"acc.{run.id_split}"]
        m["acc_id.ci_lo"], m["acc_id.ci_hi"] = m[f"acc.{run.id_split}.ci_lo"], m[f"acc.{run.id_split}.ci_hi"]
        m["acc_ood"] = float(pooled.mean())
        m["acc_ood.ci_lo"], m["acc_ood.ci_hi"] = bootstrap_ci(pooled)
        m["delta"], m["ece_id"] = relative_bias(m["acc_id"], m["acc_ood"]), m[f"ece.{run.id_split}"]
    for key in ("parameters", "nonzero_parameters"):
        if isinstance(run.compression.get(key), int | float):
            m[key] = float(run.compression[key])
    if run.speed is not None:
        m["examples_per_s"] = float(run.speed)
    for split, part in easy_hard.items():
        if part.attrs["split"] not in run.tables:
            continue
        j = run.tables[part.attrs["split"]].merge(part, on="id", how="inner")
        if j.empty:
            raise UserError(f"{part.attrs['path']}: no ids in common with run {run.name!r}")
        easy, hard = j[j["easy"]], j[~j["easy"]]
        m.update({f"eh.{split}.easy_acc": easy["correct"].mean(), f"eh.{split}.hard_acc": hard["correct"].mean(),
                  f"eh.{split}.easy_conf": easy["confidence"].mean(),
                  f"eh.{split}.hard_conf": hard["confidence"].mean(),
                  f"eh.{split}.n_easy": len(easy), f"eh.{split}.n_hard": len(hard)})
        m[f"eh.{split}.gap"] = m[f"eh.{split}.easy_acc"] - m[f"eh.{split}.hard_acc"]
    cue = reliance(run.tables)  # cue copies of ID splits in the predictions win over shortcut/<run>.json
    sc = cue.get(run.id_split) or next(iter(cue.values()), None) or shortcut.get(run.name)
    if sc:
        m["shortcut.aligned"], m["shortcut.conflicting"] = sc["aligned"], sc["conflicting"]
        m["shortcut.reliance"] = sc["aligned"] - sc["conflicting"]
    return {k: float(v) for k, v in m.items()}


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and std over seeds; 95% CI over seeds (t, clipped to [0, 1]) when >1 seed, else the run's
    bootstrap CI over examples (seeds are the larger source of variance when there are several)."""
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.endswith((".ci_lo", ".ci_hi"))))
    out: dict[str, float] = {}
    for k in keys:
        have = [r for r in rows if k in r and not math.isnan(r[k])]
        if not have:
            continue
        v = np.array([r[k] for r in have])
        n = len(v)
        out[k], out[f"{k}.std"] = float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan
        if n != len(rows):
            out[f"{k}.n"] = n  # fewer seeds have this metric than the group has runs
        if f"{k}.ci_lo" in have[0]:
            if n == 1:
                out[f"{k}.ci_lo"], out[f"{k}.ci_hi"] = have[0][f"{k}.ci_lo"], have[0][f"{k}.ci_hi"]
            else:
                half = T975[min(n - 1, len(T975)) - 1] * out[f"{k}.std"] / math.sqrt(n)
                out[f"{k}.ci_lo"], out[f"{k}.ci_hi"] = max(out[k] - half, 0.0), min(out[k] + half, 1.0)
    return out


# ---------------------------------------------------------------- tables

def _pct(g: dict, k: str) -> str:
    """`mean ± std [CI]` in percent; the CI is over seeds when n > 1, else over examples."""
    if k not in g:
        return "–"
    s = f"{100 * g[k]:.1f}"
    if not math.isnan(g.get(f"{k}.std", math.nan)):
        s += f" ± {100 * g[f'{k}.std']:.1f}"
    if f"{k}.ci_lo" in g:
        s += f" [{100 * g[f'{k}.ci_lo']:.1f}, {100 * g[f'{k}.ci_hi']:.1f}]"
    return s


def _num(g: dict, k: str, fmt: str = "{:.3f}", scale: float = 1.0, suffix: str = "", spread: bool = True) -> str:
    if k not in g:
        return "–"
    s = fmt.format(g[k] * scale)
    if spread and not math.isnan(g.get(f"{k}.std", math.nan)):
        s += " ± " + fmt.format(g[f"{k}.std"] * scale)
    return s + suffix


def make_tables(groups: dict[str, dict], splits: dict[str, str], easy_splits: list[str],
                cells: dict[tuple[str, str], dict[str, str]]) -> list[tuple]:
    """(title, header, rows) for each paper-style table that the study's data supports."""
    first = [[n, g["method"], g["loss"], "–" if g["sparsity"] is None else f"{g['sparsity']:.2f}",
              str(g["n_seeds"])] for n, g in groups.items()]
    tables = [("Table 1: Accuracy per split (%)",
               ["Group", "Method", "Loss", "Sparsity", "Seeds"] + [f"{s} ({r.upper()})" for s, r in splits.items()],
               [f + [_pct(g, f"acc.{s}") for s in splits] for f, g in zip(first, groups.values(), strict=True)])]
    speed = any("speedup" in g for g in groups.values())
    tables.append(("Table 2: Relative bias and model size",
                   ["Group", "Seeds", "ID acc (%)", "OOD acc, pooled (%)", "Δ", "F_bias", "ECE (ID, %)",
                    "Params (M)", "Non-zero (M)"] + (["Speed-up"] if speed else []),
                   [[n, str(g["n_seeds"]), _pct(g, "acc_id"), _pct(g, "acc_ood"), _num(g, "delta"),
                     _num(g, "f_bias"), _num(g, "ece_id", "{:.1f}", 100),
                     _num(g, "parameters", "{:.2f}", 1e-6, spread=False),
                     _num(g, "nonzero_parameters", "{:.2f}", 1e-6, spread=False)]
                    + ([_num(g, "speedup", "{:.2f}", suffix="×")] if speed else []) for n, g in groups.items()]))
    for (split, meta), mine in cells.items():
        tables.append((f"Table 3: {split} accuracy by {meta} × gold label (%)",
                       ["Group", "Seeds"] + list(mine.values()),
                       [[n, str(g["n_seeds"])] + [_num(g, k, "{:.1f}", 100) for k in mine]
                        for n, g in groups.items() if any(k in g for k in mine)]))
    for s in easy_splits:
        tables.append((f"Table 4: Easy / hard examples of {s.replace('.', ', split by ', 1)}",
                       ["Group", "Seeds", "Easy acc (%)", "Hard acc (%)", "Gap E−H (points)",
                        "Conf. easy (%)", "Conf. hard (%)", "n easy", "n hard"],
                       [[n, str(g["n_seeds"])] + [_num(g, f"eh.{s}.{k}", "{:.1f}", 100) for k in
                        ("easy_acc", "hard_acc", "gap", "easy_conf", "hard_conf")]
                        + [_num(g, f"eh.{s}.{k}", "{:.0f}", spread=False) for k in ("n_easy", "n_hard")]
                        for n, g in groups.items() if f"eh.{s}.gap" in g]))
    if any("shortcut.reliance" in g for g in groups.values()):
        tables.append(("Table 5: Controlled-shortcut reliance",
                       ["Group", "Seeds", "Aligned (%)", "Conflicting (%)", "Reliance A−C (points)"],
                       [[n, str(int(g.get("shortcut.reliance.n", g["n_seeds"])))]
                        + [_num(g, f"shortcut.{k}", "{:.1f}", 100) for k in ("aligned", "conflicting", "reliance")]
                        for n, g in groups.items() if "shortcut.reliance" in g]))
    return tables


# ---------------------------------------------------------------- figures

def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _sparsity_lines(groups: dict[str, dict], teacher: str | None, key: str) -> dict[str, list[tuple]]:
    """label -> [(sparsity, mean, std)], one line per loss (per method/loss if methods differ)."""
    sparse = {n: g for n, g in groups.items() if g["sparsity"] is not None and n != teacher and key in g}
    by_method = len({g["method"] for g in sparse.values()}) > 1
    lines: dict[str, list[tuple]] = {}
    for g in sparse.values():
        lines.setdefault(f"{g['method']} / {g['loss']}" if by_method else g["loss"], []).append(
            (g["sparsity"], g[key], np.nan_to_num(g[f"{key}.std"])))
    for pts in lines.values():
        if teacher and key in groups[teacher]:
            pts.append((0.0, groups[teacher][key], np.nan_to_num(groups[teacher][f"{key}.std"])))
        pts.sort()
    return lines


def _plot_lines(ax, lines: dict[str, list[tuple]], scale: float, ylabel: str, title: str) -> None:
    for label, pts in lines.items():
        x, y, e = (np.array(c, float) for c in zip(*pts, strict=True))
        ax.errorbar(x, y * scale, yerr=e * scale, marker="o", capsize=3, label=label)
    ax.set(xlabel="sparsity (teacher at 0)", ylabel=ylabel, title=title)
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)


def make_figures(groups: dict[str, dict], teacher: str | None, runs: list[Run],
                 easy_splits: list[str]) -> list[tuple[str, str, Figure]]:
    """(file name, alt text, figure) for each figure the study's data supports."""
    figs = []
    acc = {k: _sparsity_lines(groups, teacher, k) for k in ("acc_id", "acc_ood")}
    if acc["acc_id"] or acc["acc_ood"]:
        fig = _figure(10, 4)
        for ax, k, t in zip(fig.subplots(1, 2), acc, ("ID accuracy", "OOD accuracy (pooled)"), strict=True):
            _plot_lines(ax, acc[k], 100, "accuracy (%)", f"{t} vs sparsity")
        figs.append(("accuracy_vs_sparsity.png", f"ID and OOD accuracy versus sparsity, one line per loss{BARS}", fig))
    for s in easy_splits:
        lines = _sparsity_lines(groups, teacher, f"eh.{s}.gap")
        if lines:
            fig = _figure(6, 4)
            _plot_lines(fig.subplots(), lines, 100, "easy − hard accuracy (points)", f"Easy–hard gap on {s}")
            figs.append((f"easy_hard_gap_{s}.png", f"Easy minus hard accuracy gap on {s} versus sparsity{BARS}", fig))
        have = {n: g for n, g in groups.items() if f"eh.{s}.easy_conf" in g}
        if have:
            fig = _figure(max(6, 1.1 * len(have)), 4)
            ax, x = fig.subplots(), np.arange(len(have))
            for off, part in ((-0.2, "easy"), (0.2, "hard")):
                k = f"eh.{s}.{part}_conf"
                ax.bar(x + off, [100 * g[k] for g in have.values()], 0.4, label=part,
                       yerr=[100 * np.nan_to_num(g[f"{k}.std"]) for g in have.values()], capsize=3)
            ax.set_xticks(x, list(have), rotation=30, ha="right", fontsize=8)
            ax.set(ylabel="mean confidence (%)", title=f"Confidence on easy vs hard examples of {s}")
            ax.legend()
            figs.append((f"confidence_easy_hard_{s}.png",
                         f"Mean confidence on easy and hard examples of {s} per group{BARS}", fig))
    with_id = [n for n in groups if any(r.unit == n and r.id_split for r in runs)]
    if with_id:
        cols = min(4, len(with_id))
        rows = math.ceil(len(with_id) / cols)
        fig = _figure(3.2 * cols, 3.2 * rows)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        edges = np.linspace(0, 1, 11)
        for ax, n in zip(axes, with_id, strict=False):
            df = pd.concat([r.tables[r.id_split] for r in runs if r.unit == n and r.id_split])
            which = np.clip(np.digitize(df["confidence"], edges[1:-1], right=True), 0, 9)
            accs = [df["correct"][which == b].mean() if (which == b).any() else 0 for b in range(10)]
            ax.bar(edges[:-1], accs, 0.1, align="edge", edgecolor="k", alpha=.7, label="accuracy")
            ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
            ax.set(title=f"{n} (ECE {100 * groups[n].get('ece_id', math.nan):.1f}%)", xlim=(0, 1), ylim=(0, 1),
                   xlabel="confidence", ylabel="accuracy")
            ax.title.set_fontsize(9)
        for ax in axes[len(with_id):]:
            ax.set_visible(False)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        figs.append(("reliability.png", "Reliability diagrams on the ID split, one panel per group, seeds pooled",
                     fig))
    return figs


# ---------------------------------------------------------------- rendering

def _md_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _html_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<h2>{e(title)}</h2>\n<table><thead><tr>{''.join(f'<th>{e(h)}</th>' for h in header)}"
            f"</tr></thead><tbody>{body}</tbody></table>\n")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _teacher_delta_on(run: Run, teacher: Run) -> float | None:
    """The teacher's Δ on exactly the examples `run` was evaluated on (a study evaluates compressed
    models on subsets, the teacher on full sets): F_bias then compares like with like.
    None when the teacher's tables do not cover them."""
    oods = [s for s, r in run.roles.items() if r == "ood"]
    if run.id_split is None or not oods:
        return None
    parts = []
    for split in [run.id_split, *oods]:
        if split not in teacher.tables:
            return None
        ids = run.tables[split]["id"]
        t = teacher.tables[split]
        sub = t[t["id"].isin(set(ids))]
        if len(sub) != len(ids):
            return None
        parts.append(sub["correct"])
    acc_id, acc_ood = float(parts[0].mean()), float(pd.concat(parts[1:]).mean())
    return relative_bias(acc_id, acc_ood) if acc_id > 0 else None


def compute(runs: list[Run], easy_hard: dict[str, pd.DataFrame], shortcut: dict[str, dict]) -> tuple:
    """Per-run metrics (F_bias and speed-up against the teacher's mean), per-row aggregates, layout."""
    teacher = next((r.unit for r in runs if r.is_teacher), None)
    cells: dict[tuple[str, str], dict[str, str]] = {}
    per_run = {r.name: run_metrics(r, easy_hard, shortcut, cells) for r in runs}
    t_runs = [r for r in runs if r.unit == teacher]
    t_rows = [per_run[r.name] for r in t_runs]
    t_delta, t_speed = (float(np.mean(v)) if (v := [m[k] for m in t_rows if k in m]) else math.nan
                        for k in ("delta", "examples_per_s"))
    for r in runs:
        m = per_run[r.name]
        paired = [d for t in t_runs if (d := _teacher_delta_on(r, t)) is not None]
        ref = float(np.mean(paired)) if len(paired) == len(t_runs) and paired else t_delta
        if "delta" in m and not math.isnan(ref):
            m["f_bias"] = f_bias(m["delta"], ref)
        if "examples_per_s" in m and not math.isnan(t_speed):
            m["speedup"] = m["examples_per_s"] / t_speed
    groups = {}
    for u in ([teacher] if teacher else []) + [u for u in dict.fromkeys(r.unit for r in runs) if u != teacher]:
        members = [r for r in runs if r.unit == u]
        first = members[0]
        groups[u] = {"group": first.group, "method": first.method, "loss": first.loss, "sparsity": first.sparsity,
                     "n_seeds": len(members), **aggregate([per_run[r.name] for r in members])}
    return per_run, groups, teacher, cells


def _metric_rows(runs: list[Run], per_run: dict, groups: dict, teacher: str | None) -> list[dict]:
    """One flat row per run and per table row (`level` says which), for metrics.csv/.json."""
    rows = [{"level": "run", "name": r.name, "unit": r.unit, "group": r.group, "method": r.method, "loss": r.loss,
             "sparsity": r.sparsity, "seed": r.seed, "is_teacher": r.is_teacher, "n_seeds": 1} | per_run[r.name]
            for r in runs]
    return rows + [{"level": "group", "name": u, "unit": u, "group": g["group"], "method": g["method"],
                    "loss": g["loss"], "sparsity": g["sparsity"], "seed": None, "is_teacher": u == teacher} | g
                   for u, g in groups.items()]


def build_report(study_dir: str | Path, out_dir: str | Path | None = None, name: str | None = None) -> Path:
    """Load and check everything first, then write report.md/.html, figures/ and metrics.csv/.json
    into `out_dir` (default `<study>/report`) in one rename; returns that folder."""
    study = Path(study_dir)
    runs, easy_hard, shortcut, orphans = load_study(study)
    per_run, groups, teacher, cells = compute(runs, easy_hard, shortcut)
    splits = {s: role for r in runs for s, role in r.roles.items() if role != "cue"}
    splits = dict(sorted(splits.items(), key=lambda kv: kv[1] != "id"))  # ID splits first, order kept
    easy_splits = [s for s, part in easy_hard.items() if any(part.attrs["split"] in r.tables for r in runs)]
    tables = make_tables(groups, splits, easy_splits, cells)
    figures = make_figures(groups, teacher, runs, easy_splits)
    rows = _metric_rows(runs, per_run, groups, teacher)
    notes = [
        (f"Study: {name or study.resolve().name}; {len(runs)} runs in {len(groups)} rows (a row is a group, or "
         f"group/loss when a group holds several losses); teacher: {teacher or 'none (no F_bias, no speed-up)'}."),
        ("Every number is recomputed from the prediction tables. Accuracy cells: mean ± std over seeds "
         "[95% CI: over seeds (Student t) when a row has >1 seed, else bootstrap over examples]."),
        ("Δ = (acc_ID − acc_OOD) / acc_ID with OOD examples pooled over all OOD splits; "
         "F_bias = Δ / Δ of the teacher on the same examples (> 1: more biased than the teacher)."),
    ] + ([f"Ignored shortcut files naming no run in index.json: {', '.join(orphans)}."] if orphans else [])
    agree = study / "analysis" / "agreement.json"
    if agree.is_file():
        a = _read_json(agree)
        notes.append(f"Per-sample uncertainty vs the bias-only model on {a['n']} training examples: the "
                     f"{100 * a['bias_easy_fraction']:.1f}% lowest-variance examples (uncertainty-easy) agree with "
                     f"the bias-model easy/hard split on {100 * a['agreement']:.1f}% of examples (paper: 82.8%; "
                     f"chance at this split: {100 * a['chance']:.1f}%).")
    out = Path(out_dir) if out_dir is not None else study / "report"
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        md = ["# Robustness report", ""] + [f"{n}\n" for n in notes]
        page = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Robustness report</title>",
                f"<style>{CSS}</style></head><body><h1>Robustness report</h1>"]
        page += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
        for t in tables:
            md.append(_md_table(*t))
            page.append(_html_table(*t))
        md.append("## Figures\n")
        page.append("<h2>Figures</h2>")
        for fname, alt, fig in figures:
            buf = BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            (tmp / "figures" / fname).write_bytes(buf.getvalue())
            md.append(f"![{alt}](figures/{fname})\n")
            page.append(f"<figure><img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,"
                        f"{base64.b64encode(buf.getvalue()).decode()}'><figcaption>{html.escape(alt)}"
                        "</figcaption></figure>")
        (tmp / "report.md").write_text("\n".join(md), encoding="utf-8")
        (tmp / "report.html").write_text("\n".join(page) + "</body></html>\n", encoding="utf-8")
        pd.DataFrame(rows).to_csv(tmp / "metrics.csv", index=False)
        (tmp / "metrics.json").write_text(json.dumps(
            {"teacher": teacher, "rows": [{k: _clean(v) for k, v in r.items()} for r in rows]},
            indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out


RUN_FILES = ("summary.json", "compression.json", "run_config.yaml", "train_metrics.json", "stage.json", "speed.json")


def _compact_parquet(src: Path, dst: Path) -> None:
    """Probabilities as float32 and zstd: a committed export is ~45 % smaller; every reported number
    (accuracies, confidences to 0.1 %) is unchanged."""
    df = pd.read_parquet(src)
    floats = df.select_dtypes("float64").columns
    df[floats] = df[floats].astype("float32")
    df.to_parquet(dst, index=False, compression="zstd")


def export_study(study_dir: str | Path, dest: str | Path) -> Path:
    """A weights-free copy of a study (index, per-run records and prediction tables, easy/hard and
    analysis files) with its report: small enough to commit, and `report` regenerates from it."""
    import shutil

    study, dest = Path(study_dir), Path(dest)
    entries = _read_json(study / "index.json")
    with atomic_dir(dest) as tmp:
        rows = []
        for e in entries:
            src = study / str(e["path"])
            rel = Path("runs") / str(e["name"]).replace("/", "__")
            (tmp / rel / "predictions").mkdir(parents=True)
            for f in RUN_FILES:
                if (src / f).is_file():
                    shutil.copy2(src / f, tmp / rel / f)
            for p in sorted((src / "predictions").glob("*.parquet")):
                _compact_parquet(p, tmp / rel / "predictions" / p.name)
            rows.append(e | {"path": rel.as_posix()})
        (tmp / "index.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        for sub in ("easy_hard", "analysis", "shortcut"):
            if (study / sub).is_dir():
                shutil.copytree(study / sub, tmp / sub)
        build_report(tmp, name=dest.name)
    return dest
