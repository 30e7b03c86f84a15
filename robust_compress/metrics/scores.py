"""Every metric of one model, from its per-example prediction tables: accuracy with its bootstrap
interval, calibration, collapse, per-group breakdowns, Δ and F_bias, cue reliance, easy/hard; then a
study's rows per run and over seeds. Pure numpy and pandas: the report computes with these alone."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

STANDARD = {"id", "gold", "pred", "correct", "confidence", "loss"}
MAX_META_VALUES = 30  # a column with more distinct values is carried text, not a grouping
# two-sided 95% Student t quantiles for 1..30 degrees of freedom (CI over seeds)
T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]
COLLAPSE_SHARE = 0.9  # a model predicting one class on >= 90 % of an ID split, or
COLLAPSE_MARGIN = 0.05  # within 5 points of the majority-class rate there, is not read as a model


def collapse_probs(
    probs: np.ndarray, model_labels: list[str], collapse: dict[str, str], target_labels: list[str]
) -> np.ndarray:
    """Map a model's class probabilities onto a coarser label set by summing, e.g. 3-way MNLI
    (entailment, neutral, contradiction) onto 2-way HANS (entailment, non-entailment)."""
    out = np.zeros((probs.shape[0], len(target_labels)), dtype=probs.dtype)
    for j, name in enumerate(model_labels):
        out[:, target_labels.index(collapse[name])] += probs[:, j]
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% CI of accuracy over resampled examples."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    accs = correct[idx].mean(1)
    return float(np.percentile(accs, 2.5)), float(np.percentile(accs, 97.5))


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10
) -> float:
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def meta_columns(df: pd.DataFrame) -> list[str]:
    """Grouping columns of a prediction table (e.g. HANS `heuristic`): the non-standard, few-valued
    ones."""

    def few(c: str) -> bool:
        try:
            return df[c].nunique(dropna=True) <= MAX_META_VALUES
        except TypeError:  # unhashable values (lists): not a grouping
            return False

    return [c for c in df.columns if c not in STANDARD and not str(c).startswith("p_") and few(c)]


def collapse_check(df: pd.DataFrame) -> dict[str, float]:
    """How close a model is to a constant predictor on one split: the share of its most frequent
    prediction, the majority-class rate of the gold labels, and the constant predictor's accuracy
    (predicting the model's own most frequent class)."""
    top = df["pred"].value_counts(normalize=True)
    gold = df["gold"].value_counts(normalize=True)
    return {
        "top_pred_share": float(top.iloc[0]),
        "top_pred": str(top.index[0]),
        "majority_rate": float(gold.iloc[0]),
        "constant_acc": float((df["gold"] == top.index[0]).mean()),
    }


def is_collapsed(df: pd.DataFrame) -> bool:
    """Near-constant on this split: one class predicted on >= 90 % of examples, or accuracy within
    5 points of the majority-class rate. Its accuracy then says nothing about robustness."""
    c = collapse_check(df)
    return (
        c["top_pred_share"] >= COLLAPSE_SHARE
        or float(df["correct"].mean()) < c["majority_rate"] + COLLAPSE_MARGIN
    )


def split_summary(df: pd.DataFrame, group_by: list[str] | None = None) -> dict[str, Any]:
    lo, hi = bootstrap_ci(df["correct"].to_numpy())
    out: dict[str, Any] = {
        "n": len(df),
        "accuracy": float(df["correct"].mean()),
        "ci95": [lo, hi],
        "ece": expected_calibration_error(df["confidence"], df["correct"]),
        "mean_confidence": float(df["confidence"].mean()),
    }
    out["by_gold"] = {str(k): float(v) for k, v in df.groupby("gold")["correct"].mean().items()}
    out.update(collapse_check(df))
    for g in group_by or []:
        cells = df.groupby([g, "gold"])["correct"].mean()
        out[f"by_{g}"] = {f"{a}/{b}": float(v) for (a, b), v in cells.items()}
        out[f"by_{g}_only"] = {str(k): float(v) for k, v in df.groupby(g)["correct"].mean().items()}
    return out


def relative_bias(acc_id: float, acc_ood: float) -> float:
    """Delta = (acc_ID - acc_OOD) / acc_ID."""
    return (acc_id - acc_ood) / acc_id


F_BIAS_MIN_TEACHER_DELTA = 0.01


def f_bias(delta_model: float, delta_teacher: float) -> float:
    """F_bias = Delta_compressed / Delta_teacher (> 1: more biased than the teacher). Undefined
    (NaN) when the teacher shows (almost) no ID-OOD gap or the model's gap is reversed: a ratio to
    about zero, or of a reversed gap, says nothing about robustness."""
    if delta_teacher < F_BIAS_MIN_TEACHER_DELTA or delta_model < 0:
        return math.nan
    return delta_model / delta_teacher


def reliance(tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Shortcut reliance = acc(aligned) - acc(conflicting), per ID split with cue copies."""
    out = {}
    for name, df in tables.items():
        if name.endswith("+cue_aligned"):
            base = name[: -len("+cue_aligned")]
            conf = tables.get(f"{base}+cue_conflicting")
            if conf is not None:
                a, c = float(df["correct"].mean()), float(conf["correct"].mean())
                out[base] = {"aligned": a, "conflicting": c, "reliance": a - c}
    return out


def default_rule(roles: dict[str, str]) -> dict:
    """Every OOD split, examples pooled: the rule of a summary that does not state one."""
    return {"splits": [s for s, r in roles.items() if r == "ood"], "combine": "pooled"}


def ood_accuracy(tables: dict[str, pd.DataFrame], rule: dict) -> tuple[float, tuple[float, float]]:
    """OOD accuracy of Delta by the task's rule, with a bootstrap 95% CI: the rule's splits pooled
    (size-weighted; the paper's QQP convention) or the plain mean of their accuracies (FEVER)."""
    parts = [tables[s]["correct"].to_numpy(float) for s in rule["splits"] if s in tables]
    if rule.get("combine") == "mean":
        rng = np.random.default_rng(0)
        boots = np.mean([p[rng.integers(0, len(p), (1000, len(p)))].mean(1) for p in parts], axis=0)
        return float(np.mean([p.mean() for p in parts])), (
            float(np.percentile(boots, 2.5)),
            float(np.percentile(boots, 97.5)),
        )
    pooled = np.concatenate(parts)
    return float(pooled.mean()), bootstrap_ci(pooled)


def summarize(
    tables: dict[str, pd.DataFrame],
    roles: dict[str, str],
    group_by: dict[str, list[str]],
    reference: dict[str, Any] | None = None,
    rule: dict | None = None,
) -> dict[str, Any]:
    """Summary of one model: per-split metrics, Delta against the first ID split, F_bias vs
    `reference`.

    OOD accuracy for Delta follows `rule` (the task's: which OOD splits, pooled or averaged)."""
    rule = rule or default_rule(roles)
    splits = {
        name: split_summary(df, group_by.get(name)) | {"role": roles[name]}
        for name, df in tables.items()
    }
    out: dict[str, Any] = {"splits": splits, "delta_ood": rule}
    ids = [n for n in tables if roles[n] == "id"]
    if ids and rule["splits"]:
        acc_id = splits[ids[0]]["accuracy"]
        acc_ood = ood_accuracy(tables, rule)[0]
        out.update(
            id_split=ids[0],
            acc_id=acc_id,
            acc_ood=acc_ood,
            delta=relative_bias(acc_id, acc_ood) if acc_id > 0 else None,
        )
        if (
            reference is not None
            and reference.get("delta") is not None
            and out["delta"] is not None
        ):
            fb = f_bias(out["delta"], reference["delta"])
            out["f_bias"] = None if math.isnan(fb) else fb
    cue = reliance(tables)
    if cue:
        out["shortcut"] = cue
    return out


# --------------------------------------------------------- a study's rows: per run, then over seeds


def easy_hard_metrics(pred: pd.DataFrame, easy: pd.DataFrame) -> dict[str, float]:
    """Accuracy and confidence on the easy and hard parts of one split (ids joined)."""
    df = pred.merge(easy[["id", "easy"]], on="id", how="inner")
    if df.empty:
        return {}
    e, h = df[df["easy"]], df[~df["easy"]]
    out = {
        "n_easy": len(e),
        "n_hard": len(h),
        "easy_acc": float(e["correct"].mean()),
        "hard_acc": float(h["correct"].mean()),
        "easy_conf": float(e["confidence"].mean()),
        "hard_conf": float(h["confidence"].mean()),
    }
    out["gap"] = out["easy_acc"] - out["hard_acc"]
    return out


def _add_split(
    m: dict[str, float], split: str, df: pd.DataFrame, cells: dict[tuple[str, str], dict[str, str]]
) -> None:
    """One split's accuracy (with CI), calibration, collapse signs and per-cell breakdowns into `m`
    (in place, so the run's keys keep their order); run_metrics then reads as a list of parts."""
    s = split_summary(df, meta_columns(df))
    m[f"acc.{split}"], (m[f"acc.{split}.ci_lo"], m[f"acc.{split}.ci_hi"]) = (
        s["accuracy"],
        s["ci95"],
    )
    m[f"ece.{split}"], m[f"conf.{split}"] = s["ece"], s["mean_confidence"]
    m[f"top_pred_share.{split}"], m[f"majority_rate.{split}"] = (
        s["top_pred_share"],
        s["majority_rate"],
    )
    m[f"constant_acc.{split}"] = s["constant_acc"]
    for key, by in s.items():
        if key.startswith("by_") and key != "by_gold" and not key.endswith("_only"):
            for cell, v in by.items():
                m[f"by.{split}.{key[3:]}.{cell}"] = v
                cells.setdefault((split, key[3:]), {})[f"by.{split}.{key[3:]}.{cell}"] = cell


def _add_id_ood(
    m: dict[str, float],
    tables: dict[str, pd.DataFrame],
    roles: dict[str, str],
    id_split: str | None,
    rule: dict | None,
) -> None:
    """Collapse flag, ID and OOD accuracy, Delta and ID ECE into `m`: Delta needs an ID split, OOD
    splits under the rule and any correct ID prediction, else it would mean nothing."""
    if id_split:
        m["collapsed"] = float(is_collapsed(tables[id_split]))
    rule = rule or default_rule(roles)
    if id_split and rule["splits"] and tables[id_split]["correct"].any():
        m["acc_id"] = m[f"acc.{id_split}"]
        m["acc_id.ci_lo"], m["acc_id.ci_hi"] = (
            m[f"acc.{id_split}.ci_lo"],
            m[f"acc.{id_split}.ci_hi"],
        )
        m["acc_ood"], (m["acc_ood.ci_lo"], m["acc_ood.ci_hi"]) = ood_accuracy(tables, rule)
        m["delta"], m["ece_id"] = relative_bias(m["acc_id"], m["acc_ood"]), m[f"ece.{id_split}"]


def _add_easy_hard(
    m: dict[str, float], tables: dict[str, pd.DataFrame], easy_hard: dict[str, pd.DataFrame]
) -> None:
    """Easy/hard metrics of every easy/hard table whose split this run was evaluated on (a run
    may cover fewer splits than the study has tables for)."""
    for name, part in easy_hard.items():
        split = part.attrs["split"]
        if split in tables:
            for k, v in easy_hard_metrics(tables[split], part).items():
                m[f"eh.{name}.{k}"] = v


def run_metrics(
    tables: dict[str, pd.DataFrame],
    roles: dict[str, str],
    id_split: str | None,
    easy_hard: dict[str, pd.DataFrame],
    record: dict[str, Any],
    cells: dict[tuple[str, str], dict[str, str]],
    rule: dict | None = None,
) -> dict[str, float]:
    """Flat metrics of one run; accuracies keep their bootstrap CI as `<key>.ci_lo/.ci_hi`.
    `cells` collects the breakdown layout: (split, meta column) -> {metric key: "value/gold"}."""
    m: dict[str, float] = {}
    for split, df in tables.items():
        if roles[split] == "cue":
            continue
        _add_split(m, split, df, cells)
    _add_id_ood(m, tables, roles, id_split, rule)
    for key in ("parameters", "nonzero_parameters", "flops_dense", "bytes_on_disk"):
        if isinstance(record.get(key), int | float):
            m[key] = float(record[key])
    _add_easy_hard(m, tables, easy_hard)
    cue = reliance(tables)
    sc = cue.get(id_split) or next(iter(cue.values()), None)
    if sc:
        m["shortcut.aligned"], m["shortcut.conflicting"] = sc["aligned"], sc["conflicting"]
        m["shortcut.reliance"] = sc["reliance"]
    return {k: float(v) for k, v in m.items()}


def teacher_delta_on(
    tables: dict[str, pd.DataFrame],
    roles: dict[str, str],
    id_split: str | None,
    teacher_tables: dict[str, pd.DataFrame],
    rule: dict | None = None,
) -> float | None:
    """The teacher's Δ on exactly the examples a run was evaluated on (a study evaluates compressed
    models on subsets, the teacher on full sets): F_bias then compares like with like.
    None when the teacher's tables do not cover them."""
    rule = rule or default_rule(roles)
    if id_split is None or not rule["splits"]:
        return None
    subset = {}
    for split in [id_split, *rule["splits"]]:
        if split not in teacher_tables:
            return None
        ids = set(tables[split]["id"])
        t = teacher_tables[split]
        subset[split] = t[t["id"].isin(ids)]
        if len(subset[split]) != len(ids):
            return None
    acc_id = float(subset[id_split]["correct"].mean())
    return relative_bias(acc_id, ood_accuracy(subset, rule)[0]) if acc_id > 0 else None


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and std over seeds; 95% CI over seeds (t, clipped to [0, 1]) when >1 seed, else the
    run's bootstrap CI over examples (seeds are the larger source of variance when there are
    several)."""
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
                out[f"{k}.ci_lo"], out[f"{k}.ci_hi"] = (
                    max(out[k] - half, 0.0),
                    min(out[k] + half, 1.0),
                )
    return out
