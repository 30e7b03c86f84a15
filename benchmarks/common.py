"""Shared set-up for the benchmarks: real model and data from ../shared, printed figures."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUST_COMPRESS_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
DATA = SHARED / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def mnli(split: str, n: int, seed: int = 0):
    from robust_compress.data.load import load_split
    from robust_compress.data.tasks import BUILTIN

    return load_split(BUILTIN["mnli"], split, DATA, limit=n, seed=seed)


LABELS = ["entailment", "neutral", "contradiction"]


def model_and_dev(path: str, n: int, max_length: int = 128):
    """A model for scoring, its tokenizer and n dev-matched examples encoded for it."""
    from robust_compress.data.batching import EncodedSplit
    from robust_compress.models.load import load_model, load_tokenizer, set_threads

    set_threads()
    model, tok = load_model(path, LABELS).eval(), load_tokenizer(path)
    return model, tok, EncodedSplit(mnli("dev_matched", n).examples, tok, max_length)


def row(name: str, value: float, unit: str = "") -> None:
    print(f"{name:48s} {value:10.2f} {unit}")
