"""Per-sample uncertainty for RMC: the variance of each training example's loss across models of
different sparsities (Du et al. 2023). Four sources: separate pruning runs (the paper), the
snapshots of one pruning run, one model one-shot pruned without retraining, or, at no cost at all,
the teacher's own training dynamics (each example's loss every time its fine-tuning saw it, as in
dataset cartography; needs at least two epochs)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..compress.magnitude import oneshot_prune
from ..data.batching import EncodedSplit
from ..io import UserError
from ..metrics import softmax
from ..models.infer import predict_logits
from ..train.logit_cache import LogitCache

DYNAMICS = "dynamics.parquet"  # in a trained model's folder: id, epoch, loss, p_gold


def from_dynamics(frame: pd.DataFrame, examples: list[dict], stat: str = "loss") -> pd.DataFrame:
    """v_i = variance over epochs of example i's training loss (`loss`) or of its gold-label
    probability (`p_gold`: cartography's variability, squared)."""
    per = frame.groupby("id")
    v = per[stat].var(ddof=0)
    seen = per["epoch"].nunique()
    missing = [e["id"] for e in examples if e["id"] not in v.index]
    if missing:
        raise UserError(
            f"training dynamics cover no record of {len(missing)} training examples (first: "
            f"{missing[0]}): the teacher must be trained on (a superset of) these examples"
        )
    ids = [e["id"] for e in examples]
    if (seen.loc[ids] < 2).any():
        raise UserError(
            "training dynamics need every example seen in at least two epochs (train the teacher "
            "for epochs >= 2)"
        )
    return pd.DataFrame(
        {"id": ids, "v": v.loc[ids].to_numpy(), "loss_mean": per["loss"].mean().loc[ids].to_numpy()}
    )


def example_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each example under one model."""
    p = softmax(logits.astype(np.float64))
    return -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))


def loss_variance(losses: np.ndarray) -> np.ndarray:
    """v_i = (1/n) sum_t (l_it - mean_t l_it)^2 over n models (rows)."""
    return losses.var(axis=0)


def table(examples: list[dict], losses: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [e["id"] for e in examples], "v": loss_variance(losses), "loss_mean": losses.mean(0)}
    )


def model_stats(name: str, logits: np.ndarray, labels: np.ndarray) -> dict:
    """How each scoring model does on the training examples: a collapsed snapshot (one class
    everywhere) still adds to the variance, and the report says so."""
    pred = logits.argmax(1)
    share = np.bincount(pred, minlength=logits.shape[1]) / len(pred)
    return {
        "model": name,
        "train_acc": float((pred == labels).mean()),
        "top_pred_share": float(share.max()),
        "top_pred": int(share.argmax()),
    }


def from_models(
    model_dirs: list[str | Path],
    examples: list[dict],
    cache: LogitCache,
    max_length: int,
    progress=None,
) -> tuple[pd.DataFrame, list[dict]]:
    """v_i across saved models (snapshots of one run, or separate runs), and each model's stats."""
    if len(model_dirs) < 2:
        raise UserError(f"uncertainty needs at least 2 models, got {len(model_dirs)}")
    labels = np.array([e["label"] for e in examples])
    losses, stats = [], []
    for i, m in enumerate(model_dirs, 1):
        logits = cache.get(m, examples, max_length)
        losses.append(example_losses(logits, labels))
        stats.append(model_stats(Path(m).name, logits, labels))
        if progress is not None:
            progress(i)
    return table(examples, np.stack(losses)), stats


@torch.no_grad()
def from_oneshot(
    model,
    data: EncodedSplit,
    examples: list[dict],
    sparsities: list[float],
    batch_size: int = 64,
    bf16: bool = False,
    progress=None,
) -> tuple[pd.DataFrame, list[dict]]:
    """The cheap signal: the *unretrained* model one-shot magnitude-pruned (globally) to each
    sparsity."""
    labels = np.array([e["label"] for e in examples])
    losses, stats = [], []
    for s in sparsities:
        m = oneshot_prune(copy.deepcopy(model), s)
        logits = predict_logits(m, data, batch_size, bf16=bf16)[0]
        losses.append(example_losses(logits, labels))
        stats.append(model_stats(f"oneshot-{s:.2f}", logits, labels))
        if progress is not None:
            progress(len(losses))
    return table(examples, np.stack(losses)), stats
