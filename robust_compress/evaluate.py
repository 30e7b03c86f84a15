"""Per-example predictions for any model on any split, and the metrics derived from them.

Predictions are the source of truth: every number in a summary or report is recomputed from
the saved per-example tables (`predictions/<split>.parquet`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .batching import Collator, EncodedSplit, sorted_batches
from .data import Split


def collapse_probs(probs: np.ndarray, model_labels: list[str], collapse: dict[str, str],
                   target_labels: list[str]) -> np.ndarray:
    """Map a model's class probabilities onto a coarser label set by summing, e.g. 3-way MNLI
    (entailment, neutral, contradiction) onto 2-way HANS (entailment, non-entailment)."""
    out = np.zeros((probs.shape[0], len(target_labels)), dtype=probs.dtype)
    for j, name in enumerate(model_labels):
        out[:, target_labels.index(collapse[name])] += probs[:, j]
    return out


@torch.no_grad()
def predict_logits(model, data: EncodedSplit, batch_size: int = 128, bf16: bool = False,
                   device: torch.device | str | None = None) -> tuple[np.ndarray, float]:
    """Logits in the split's order, and examples/s. Batches are length-sorted and padded per batch.
    Without `device`, the model moves to the GPU when there is one (it stays there afterwards)."""
    model.eval()
    # int8 dynamic-quantized linears run on CPU with fp32 activations only: no GPU, no autocast for them
    quantized = any(m.__class__.__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    if device is None:
        device = "cuda" if torch.cuda.is_available() and not quantized else next(model.parameters()).device
    model.to(device)
    bf16 = bf16 and not quantized
    collate = Collator(getattr(model.config, "pad_token_id", 0) or 0)
    out = None
    t0 = time.perf_counter()
    for rows in sorted_batches(data.lengths, batch_size):
        batch = collate([data[i] for i in rows])
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**inputs).logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(data), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    return out, len(data) / max(time.perf_counter() - t0, 1e-9)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def prediction_table(split: Split, logits: np.ndarray, model_labels: list[str]) -> pd.DataFrame:
    """One row per example: id, gold, predicted label, class probabilities, loss, meta columns."""
    probs = softmax(logits.astype(np.float64))
    if split.collapse is not None:
        probs = collapse_probs(probs, model_labels, split.collapse, split.labels)
    gold = np.array([e["label"] for e in split.examples])
    pred = probs.argmax(1)
    df = pd.DataFrame({
        "id": [e["id"] for e in split.examples],
        "gold": [split.labels[g] for g in gold],
        "pred": [split.labels[p] for p in pred],
        "correct": pred == gold,
        "confidence": probs.max(1),
        "loss": -np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None)),
    })
    for j, name in enumerate(split.labels):
        df[f"p_{name}"] = probs[:, j]
    for meta in split.group_by:
        df[meta] = [e.get(meta) for e in split.examples]
    return df


# ---------------------------------------------------------------- metrics from prediction tables

def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% CI of accuracy over resampled examples."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    accs = correct[idx].mean(1)
    return float(np.percentile(accs, 2.5)), float(np.percentile(accs, 97.5))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def split_summary(df: pd.DataFrame, group_by: list[str] | None = None) -> dict[str, Any]:
    lo, hi = bootstrap_ci(df["correct"].to_numpy())
    out: dict[str, Any] = {"n": len(df), "accuracy": float(df["correct"].mean()), "ci95": [lo, hi],
                           "ece": expected_calibration_error(df["confidence"], df["correct"]),
                           "mean_confidence": float(df["confidence"].mean())}
    out["by_gold"] = {str(k): float(v) for k, v in df.groupby("gold")["correct"].mean().items()}
    for g in group_by or []:
        cells = df.groupby([g, "gold"])["correct"].mean()
        out[f"by_{g}"] = {f"{a}/{b}": float(v) for (a, b), v in cells.items()}
        out[f"by_{g}_only"] = {str(k): float(v) for k, v in df.groupby(g)["correct"].mean().items()}
    return out


def relative_bias(acc_id: float, acc_ood: float) -> float:
    """Delta = (acc_ID - acc_OOD) / acc_ID."""
    return (acc_id - acc_ood) / acc_id


def f_bias(delta_model: float, delta_teacher: float) -> float:
    """F_bias = Delta_compressed / Delta_teacher (> 1: more biased than the teacher)."""
    return delta_model / delta_teacher if delta_teacher != 0 else math.nan


def summarize(tables: dict[str, pd.DataFrame], roles: dict[str, str], group_by: dict[str, list[str]],
              reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summary of one model: per-split metrics, Delta against the first ID split, F_bias vs `reference`.

    OOD accuracy for Delta pools every OOD split's examples (the paper's convention for FEVER/QQP).
    """
    splits = {name: split_summary(df, group_by.get(name)) | {"role": roles[name]} for name, df in tables.items()}
    out: dict[str, Any] = {"splits": splits}
    ids = [n for n in tables if roles[n] == "id"]
    oods = [n for n in tables if roles[n] == "ood"]
    if ids and oods:
        acc_id = splits[ids[0]]["accuracy"]
        acc_ood = float(pd.concat([tables[n]["correct"] for n in oods]).mean())
        out.update(id_split=ids[0], acc_id=acc_id, acc_ood=acc_ood, delta=relative_bias(acc_id, acc_ood))
        if reference is not None and "delta" in reference:
            out["f_bias"] = f_bias(out["delta"], reference["delta"])
    return out


def save_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)


def load_tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted(Path(folder).glob("*.parquet"))}
