"""Per-example predictions of a model on every split, as tables (the source of truth every metric is
computed from), and their files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..data.batching import EncodedSplit
from ..data.load import Split
from ..metrics import collapse_probs, softmax
from ..models.infer import predict_logits


def prediction_table(split: Split, logits: np.ndarray, model_labels: list[str]) -> pd.DataFrame:
    """One row per example: id, gold, predicted label, class probabilities, loss, meta columns."""
    probs = softmax(logits.astype(np.float64))
    if split.collapse is not None and list(model_labels) != list(
        split.labels
    ):  # (a 2-way model: as is)
        probs = collapse_probs(probs, model_labels, split.collapse, split.labels)
    gold = np.array([e["label"] for e in split.examples])
    pred = probs.argmax(1)
    df = pd.DataFrame(
        {
            "id": [e["id"] for e in split.examples],
            "gold": [split.labels[g] for g in gold],
            "pred": [split.labels[p] for p in pred],
            "correct": pred == gold,
            "confidence": probs.max(1),
            "loss": -np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None)),
        }
    )
    for j, name in enumerate(split.labels):
        df[f"p_{name}"] = probs[:, j]
    for meta in split.group_by:
        df[meta] = [e.get(meta) for e in split.examples]
    return df


def predict_tables(
    model, tokenizer, splits: dict[str, Split], cfg: RunConfig, progress=None
) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Prediction tables of one model on every split, and its examples/s on each.
    `progress(done)` gets the number of examples scored so far, over all splits."""
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    tables, speed, before = {}, {}, 0
    for name, split in splits.items():
        enc = EncodedSplit(split.examples, tokenizer, cfg.max_length, field=cfg.input_field)
        cb = None if progress is None else (lambda n, before=before: progress(before + n))
        logits, speed[name] = predict_logits(
            model, enc, cfg.eval_batch_size, bf16=cfg.bf16, progress=cb
        )
        tables[name] = prediction_table(split, logits, labels)
        before += len(split)
    return tables, speed


def save_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
