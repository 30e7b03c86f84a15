"""Comparing two rows of a study: the difference of a metric with its 95 % interval (over seeds, or
a paired bootstrap over the examples both share), and ratios of differences (the share of a cost a
loss wins back). Pure numpy and pandas."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from .scores import T975, default_rule, expected_calibration_error

Parts = dict[
    str, pd.Series
]  # named per-example correctness, indexed by example key (arrays in the bootstrap)


def cell_metric(split: str, column: str, value: str, gold: str) -> str:
    """The name of a breakdown cell's accuracy as a comparable metric, e.g. HANS non-entailed
    lexical overlap: cell:hans:heuristic=lexical_overlap/non-entailment."""
    return f"cell:{split}:{column}={value}/{gold}"


def metric_parts(
    tables: dict[str, pd.DataFrame],
    roles: dict[str, str],
    id_split: str | None,
    metric: str,
    easy: pd.DataFrame | None = None,
    rule: dict | None = None,
) -> Parts | None:
    """The per-example correctness a comparable metric is computed from; None if the run lacks it.
    metric: acc_id | acc_ood | hard | easy | gap | reliance | ece (ID; correctness and confidence) |
    a breakdown cell (`cell_metric`)."""
    rule = rule or default_rule(roles)

    def series(df: pd.DataFrame, prefix: str = "") -> pd.Series:
        return pd.Series(df["correct"].to_numpy(float), index=prefix + df["id"].astype(str))

    if metric == "acc_id" and id_split:
        return {"all": series(tables[id_split])}
    if metric == "ece" and id_split:
        df = tables[id_split]
        return {
            "calibration": pd.DataFrame(
                {
                    "correct": df["correct"].to_numpy(float),
                    "confidence": df["confidence"].to_numpy(float),
                },
                index=df["id"].astype(str),
            )
        }
    if metric.startswith("cell:"):
        _, split, cell = metric.split(":", 2)
        (column, value), gold = cell.rsplit("/", 1)[0].split("=", 1), cell.rsplit("/", 1)[1]
        df = tables.get(split)
        if df is None or column not in df:
            return None
        df = df[(df[column].astype(str) == value) & (df["gold"] == gold)]
        return {"all": series(df)} if len(df) else None
    if metric == "acc_ood":
        oods = [s for s in rule["splits"] if s in tables]
        if not oods:
            return None
        if rule.get("combine") == "mean":  # each set's accuracy, then their mean
            return {f"mean:{s}": series(tables[s]) for s in oods}
        return {"all": pd.concat([series(tables[s], f"{s}:") for s in oods])}
    if metric in ("hard", "easy", "gap") and easy is not None and easy.attrs.get("split") in tables:
        j = tables[easy.attrs["split"]].merge(easy, on="id", how="inner")
        parts = {"easy": series(j[j["easy"]]), "hard": series(j[~j["easy"]])}
        return {metric: parts[metric]} if metric != "gap" else parts
    if metric == "reliance" and id_split and f"{id_split}+cue_aligned" in tables:
        return {
            "aligned": series(tables[f"{id_split}+cue_aligned"]),
            "conflicting": series(tables[f"{id_split}+cue_conflicting"]),
        }
    return None


def parts_stat(metric: str, parts: Parts) -> float:
    if metric == "ece":
        v = np.asarray(parts["calibration"], float)  # columns: correct, confidence
        return expected_calibration_error(v[:, 1], v[:, 0])
    if all(k.startswith("mean:") for k in parts):
        return float(np.mean([v.mean() for v in parts.values()]))
    if metric == "gap":
        return float(parts["easy"].mean() - parts["hard"].mean())
    if metric == "reliance":
        return float(parts["aligned"].mean() - parts["conflicting"].mean())
    return float(next(iter(parts.values())).mean())


def compare(
    metric: str,
    a: list[Parts],
    b: list[Parts],
    seeds_a: list[int],
    seeds_b: list[int],
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean difference a - b of a metric, with a 95% interval: over seeds when either side has
    several runs (paired by seed where both have it; against the other side's mean when it has one
    run), else a paired bootstrap. Always on the examples every run shares (a given teacher may have
    been evaluated on a subset of the study's sets)."""
    shared = {
        k: functools.reduce(lambda x, y: x.intersection(y), [p[k].index for p in (*a, *b)])
        for k in a[0]
    }
    a = [{k: p[k].loc[idx] for k, idx in shared.items()} for p in a]
    b = [{k: p[k].loc[idx] for k, idx in shared.items()} for p in b]
    if any(len(idx) == 0 for idx in shared.values()):
        return math.nan, math.nan, math.nan
    va = [parts_stat(metric, p) for p in a]
    vb = [parts_stat(metric, p) for p in b]
    if len(a) > 1 or len(b) > 1:
        if len(a) > 1 and len(b) > 1 and set(seeds_a) == set(seeds_b):
            order = {s: i for i, s in enumerate(seeds_b)}
            return diff_ci(va, [vb[order[s]] for s in seeds_a])
        if len(b) == 1:
            return diff_ci(va, vb * len(va))
        if len(a) == 1:
            return diff_ci(va * len(vb), vb)
        return diff_ci(va, vb)
    rng = np.random.default_rng(seed)
    xa = {k: v.to_numpy() for k, v in a[0].items()}
    xb = {k: v.to_numpy() for k, v in b[0].items()}
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        draw = {k: rng.integers(0, len(v), len(v)) for k, v in xa.items()}
        diffs[i] = parts_stat(metric, {k: xa[k][d] for k, d in draw.items()}) - parts_stat(
            metric, {k: xb[k][d] for k, d in draw.items()}
        )
    d = parts_stat(metric, xa) - parts_stat(metric, xb)
    return d, float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def ratio_ci(
    metric: str,
    num: tuple[list[Parts], list[Parts]],
    den: tuple[list[Parts], list[Parts]],
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean(A) - mean(B)) / (mean(C) - mean(D)) of a metric over runs, e.g. the share of a
    compression's hard-example cost a loss wins back, (loss - vanilla) / (teacher - vanilla), or the
    share of a teacher's debiasing gain a compressed model keeps. 95 % interval by one bootstrap
    that resamples the examples all runs share (one draw for all) and, per list, its runs (seeds);
    NaN bounds when there is nothing to resample, NaN altogether when the denominator is 0."""
    lists = [*num, *den]
    keys = list(lists[0][0])
    shared = {
        k: functools.reduce(
            lambda a, b: a.intersection(b), [p[k].index for runs in lists for p in runs]
        )
        for k in keys
    }
    arrays = [[{k: np.asarray(p[k].loc[shared[k]]) for k in keys} for p in runs] for runs in lists]

    def value(draw: dict[str, np.ndarray] | None, picks: list[np.ndarray]) -> float:
        means = []
        for runs, pick in zip(arrays, picks, strict=True):
            means.append(
                np.mean(
                    [
                        parts_stat(
                            metric, {k: (r[k] if draw is None else r[k][draw[k]]) for k in keys}
                        )
                        for r in (runs[i] for i in pick)
                    ]
                )
            )
        d = means[2] - means[3]
        return (means[0] - means[1]) / d if d != 0 else math.nan

    point = value(None, [np.arange(len(r)) for r in arrays])
    if any(len(v) == 0 for v in shared.values()) or math.isnan(point):
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        draw = {k: rng.integers(0, len(shared[k]), len(shared[k])) for k in keys}
        boots.append(value(draw, [rng.integers(0, len(r), len(r)) for r in arrays]))
    boots = np.array([b for b in boots if not math.isnan(b)])
    if len(boots) < n_boot // 2:
        return point, math.nan, math.nan
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def diff_ci(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean difference a - b over seeds with a 95% t interval (paired by position when the lengths
    match; Welch-like otherwise). One value each: (d, nan, nan)."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    d = float(a_.mean() - b_.mean())
    if len(a_) == len(b_) and len(a_) > 1:
        diffs = a_ - b_
        half = T975[min(len(a_) - 1, len(T975)) - 1] * diffs.std(ddof=1) / math.sqrt(len(a_))
    elif len(a_) > 1 and len(b_) > 1:
        se = math.sqrt(a_.var(ddof=1) / len(a_) + b_.var(ddof=1) / len(b_))
        half = T975[min(min(len(a_), len(b_)) - 1, len(T975)) - 1] * se
    else:
        return d, math.nan, math.nan
    return d, d - half, d + half
