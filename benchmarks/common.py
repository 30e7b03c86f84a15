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


def row(name: str, value: float, unit: str = "") -> None:
    print(f"{name:48s} {value:10.2f} {unit}")
