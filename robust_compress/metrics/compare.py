"""Comparing two rows of a study: the per-example scores a comparable metric is computed from, and
the metric as a weighted sum of their means, so that a difference between models (its interval:
`metrics.multiboot`) is a linear statistic of per-seed, per-example scores. numpy and pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .scores import default_rule

Parts = dict[
    str, pd.Series
]  # named per-example correctness, indexed by example key (arrays in the bootstrap)

CALIBRATION_BINS = 10  # as `scores.expected_calibration_error`


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
    a breakdown cell (`cell_metric`) | acc:SPLIT (one set's accuracy)."""
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
    if metric.startswith("acc:"):
        df = tables.get(metric[4:])
        return {"all": series(df)} if df is not None and len(df) else None
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


def metric_weights(metric: str, keys) -> dict[str, float]:
    """The metric as sum_k weight_k x mean of part k's per-example scores (`metric_parts`' keys):
    gap = easy - hard, reliance = aligned - conflicting, a mean over sets (FEVER) = each set / n,
    every other metric its one part."""
    keys = list(keys)
    if all(k.startswith("mean:") for k in keys):
        return {k: 1.0 / len(keys) for k in keys}
    if metric == "gap":
        return {"easy": 1.0, "hard": -1.0}
    if metric == "reliance":
        return {"aligned": 1.0, "conflicting": -1.0}
    if len(keys) != 1:
        raise ValueError(f"{metric}: expected one part, got {keys}")
    return {keys[0]: 1.0}


def example_scores(key: str, part: pd.Series | pd.DataFrame) -> np.ndarray:
    """A part's per-example scores, whose mean is the part's statistic on these examples: 0/1
    correctness, or for ECE ("calibration": correct and confidence) its linearisation, the sign of
    each example's bin gap x (correct - confidence): its mean is the ECE of these examples exactly,
    and its bootstrap the delta method's (the bins and their signs held at the estimate)."""
    if key != "calibration":
        return np.asarray(part, float)
    correct = part["correct"].to_numpy(float)
    confidence = part["confidence"].to_numpy(float)
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, CALIBRATION_BINS - 1)
    gap = np.bincount(which, correct - confidence, minlength=CALIBRATION_BINS)
    return np.sign(gap)[which] * (correct - confidence)
