"""A lexical-overlap bias-only model: multinomial logistic regression on features of the HANS
heuristics (word overlap, subsequence, negation, length ratio). Hand-written because it is six
features and an LBFGS fit: no library model would be simpler, and its JSON file runs no code."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from ..io import UserError, read_json, write_json

FILE = "overlap_model.json"
_WORD = re.compile(r"[a-z0-9]+")
NEGATIONS = {"not", "no", "never", "nobody", "nothing", "none", "n't", "nt", "cannot"}


def overlap_features(a: str, b: str) -> list[float]:
    """`basic`: hypothesis words in the premise (share, all of them), contiguous subsequence,
    negation in the hypothesis, length ratio."""
    pa, pb = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    sa = set(pa)
    frac = sum(w in sa for w in pb) / max(len(pb), 1)
    sub = float(" ".join(pb) in " ".join(pa)) if pb else 0.0
    return [
        frac,
        float(frac == 1.0),
        sub,
        float(any(w in NEGATIONS for w in pb)),
        len(pb) / max(len(pa), 1),
        1.0,
    ]


def literature_features(a: str, b: str) -> list[float]:
    """`literature`: the features of the HANS bias models of the debiasing literature (McCoy et al.
    2019's heuristics as used by Clark et al. 2019 and Utama et al. 2020), without word vectors:
    the basic ones, plus negation in the premise and its mismatch, bigram overlap, the share of the
    premise the hypothesis covers, hypothesis words absent from the premise and the length
    difference."""
    pa, pb = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    sa, sb = set(pa), set(pb)
    neg_a, neg_b = any(w in NEGATIONS for w in pa), any(w in NEGATIONS for w in pb)
    bi_a = set(pairwise(pa))
    bi_b = list(pairwise(pb))
    missing = sum(w not in sa for w in pb)
    return overlap_features(a, b)[:-1] + [
        float(neg_a),
        float(neg_a != neg_b),
        sum(g in bi_a for g in bi_b) / max(len(bi_b), 1),
        len(sa & sb) / max(len(sa), 1),
        float(np.log1p(missing)),
        (len(pa) - len(pb)) / 10.0,
        1.0,
    ]


FEATURES = {
    "basic": (overlap_features, "overlap_features v1"),
    "literature": (literature_features, "literature_features v1"),
}


class OverlapModel:
    def __init__(self, weight: torch.Tensor, labels: list[str], features: str = "basic"):
        self.weight, self.labels, self.features = weight, labels, features

    def _x(self, examples: list[dict]) -> torch.Tensor:
        fn = FEATURES[self.features][0]
        return torch.tensor([fn(e["text_a"], e["text_b"]) for e in examples], dtype=torch.float64)

    @classmethod
    def fit(
        cls, examples: list[dict], labels: list[str], steps: int = 500, features: str = "basic"
    ) -> OverlapModel:
        """Deterministic: zero init, full-batch LBFGS (no random choice to seed)."""
        model = cls(torch.zeros(0), labels, features)
        x = model._x(examples)
        y = torch.tensor([e["label"] for e in examples])
        w = torch.zeros(x.shape[1], len(labels), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=steps)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w, y) + 1e-4 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        model.weight = w.detach()
        return model

    def predict_proba(self, examples: list[dict]) -> np.ndarray:
        return torch.softmax(self._x(examples) @ self.weight.double(), -1).numpy()

    def to_json(self) -> dict:
        return {
            "labels": self.labels,
            "weight": self.weight.tolist(),
            "features": FEATURES[self.features][1],
        }

    def save(self, folder: Path) -> None:
        write_json(Path(folder) / FILE, self.to_json())

    @classmethod
    def load(cls, folder: Path) -> OverlapModel:
        d = read_json(Path(folder) / FILE)
        names = {v[1]: k for k, v in FEATURES.items()}
        if d.get("features", "overlap_features v1") not in names:
            raise UserError(
                f"{Path(folder) / FILE}: unknown features {d.get('features')!r}; have "
                f"{sorted(names)}"
            )
        return cls(
            torch.tensor(d["weight"], dtype=torch.float64),
            d["labels"],
            names[d.get("features", "overlap_features v1")],
        )


def is_overlap_model(folder: str | Path) -> bool:
    return (Path(folder) / FILE).is_file()
