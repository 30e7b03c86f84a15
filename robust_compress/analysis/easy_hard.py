"""Easy / hard examples by a bias-only model (Gururangan et al. 2018: easy = the bias model is
right), and how far low uncertainty agrees with that split (the paper's 82.8 %)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import softmax
from ..train.logit_cache import LogitCache


def bias_probs(
    model_dir: str,
    examples: list[dict],
    cache: LogitCache,
    max_length: int,
    labels: list[str] | None = None,
    label_map: dict[str, str] | None = None,
) -> np.ndarray:
    """Class probabilities of a bias-only model (partial-input transformer or lexical-overlap
    model), in the order of `labels` (default: the model's own)."""
    return softmax(cache.get(model_dir, examples, max_length, labels, label_map).astype(np.float64))


def easy_mask(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    return probs.argmax(1) == gold


def easy_hard_table(examples: list[dict], probs: np.ndarray) -> pd.DataFrame:
    gold = np.array([e["label"] for e in examples])
    return pd.DataFrame({"id": [e["id"] for e in examples], "easy": easy_mask(probs, gold)})


def agreement(v: np.ndarray, bias_easy: np.ndarray) -> float:
    """Share of examples where 'low uncertainty' (the |easy| lowest v) agrees with the bias-model
    split."""
    k = int(bias_easy.sum())
    unc_easy = np.zeros(len(v), dtype=bool)
    unc_easy[np.argsort(v, kind="stable")[:k]] = True
    return float((unc_easy == bias_easy).mean())
