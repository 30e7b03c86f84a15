"""A lexical-overlap bias-only model: multinomial logistic regression on features of the HANS
heuristics (word overlap, subsequence, negation, length ratio). Hand-written because it is six
features and an LBFGS fit: no library model would be simpler, and its JSON file runs no code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..io import read_json, write_json

FILE = "overlap_model.json"
_WORD = re.compile(r"[a-z0-9]+")
NEGATIONS = {"not", "no", "never", "nobody", "nothing", "none", "n't", "nt", "cannot"}


def overlap_features(a: str, b: str) -> list[float]:
    pa, pb = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    sa = set(pa)
    frac = sum(w in sa for w in pb) / max(len(pb), 1)
    sub = float(" ".join(pb) in " ".join(pa)) if pb else 0.0
    return [frac, float(frac == 1.0), sub, float(any(w in NEGATIONS for w in pb)),
            len(pb) / max(len(pa), 1), 1.0]


class OverlapModel:
    def __init__(self, weight: torch.Tensor, labels: list[str]):
        self.weight, self.labels = weight, labels

    @classmethod
    def fit(cls, examples: list[dict], labels: list[str], steps: int = 500) -> OverlapModel:
        """Deterministic: zero init, full-batch LBFGS (no random choice to seed)."""
        x = torch.tensor([overlap_features(e["text_a"], e["text_b"]) for e in examples], dtype=torch.float64)
        y = torch.tensor([e["label"] for e in examples])
        w = torch.zeros(x.shape[1], len(labels), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=steps)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w, y) + 1e-4 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return cls(w.detach(), labels)

    def predict_proba(self, examples: list[dict]) -> np.ndarray:
        x = torch.tensor([overlap_features(e["text_a"], e["text_b"]) for e in examples], dtype=torch.float64)
        return torch.softmax(x @ self.weight.double(), -1).numpy()

    def to_json(self) -> dict:
        return {"labels": self.labels, "weight": self.weight.tolist(), "features": "overlap_features v1"}

    def save(self, folder: Path) -> None:
        write_json(Path(folder) / FILE, self.to_json())

    @classmethod
    def load(cls, folder: Path) -> OverlapModel:
        d = read_json(Path(folder) / FILE)
        return cls(torch.tensor(d["weight"], dtype=torch.float64), d["labels"])


def is_overlap_model(folder: str | Path) -> bool:
    return (Path(folder) / FILE).is_file()
