"""Model logits per example (teacher logits for KD, bias-model and snapshot outputs): computed
once, cached on disk, reused by every student, seed and loss.

The cache key hashes the model's weights, the examples (ids and texts) and the tokenization
settings, so a changed teacher or data set can never be served stale logits.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from .batching import EncodedSplit
from .evaluate import predict_logits
from .io import UserError


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_digest(folder: str | Path) -> str:
    """Content hash of a saved model's weights (and config), independent of where it lives."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    if not all(f.is_file() for f in files) or len(files) < 2:
        raise UserError(f"{folder}: not a saved model folder (needs config.json and *.safetensors)")
    return hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()[:16]


def examples_digest(examples: list[dict]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e["id"], e["text_a"], e["text_b"], e["label"]]).encode())
    return h.hexdigest()[:16]


class LogitCache:
    """On-disk cache of per-example logits, keyed by (model weights, data, tokenization)."""

    def __init__(self, cache_dir: str | Path):
        self.root = Path(cache_dir) / "logits"
        self.misses = 0  # how many times a model had to run (tests assert on it)

    def key(self, model_dir: str | Path, examples: list[dict], max_length: int) -> str:
        from .shortcut import model_input_field

        field = model_input_field(model_dir) or "pair"
        return f"{model_digest(model_dir)}-{examples_digest(examples)}-L{max_length}-{field}"

    def get(self, model_dir: str | Path, examples: list[dict], max_length: int,
            batch_size: int = 128, bf16: bool = False) -> np.ndarray:
        """Logits of the model in `model_dir`, tokenized with its own tokenizer (a student's may differ)."""
        path = self.root / f"{self.key(model_dir, examples, max_length)}.safetensors"
        if path.is_file():
            return load_file(str(path))["logits"]
        self.misses += 1
        from .compress import load_for_inference
        from .models import load_tokenizer
        from .shortcut import model_input_field

        model = load_for_inference(model_dir, model_labels(model_dir))
        tokenizer = load_tokenizer(str(model_dir), model)
        data = EncodedSplit(examples, tokenizer, max_length, field=model_input_field(model_dir))
        logits, _ = predict_logits(model, data, batch_size, bf16=bf16)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem}.", suffix=".tmp")  # shards may race
        os.close(fd)
        save_file({"logits": logits.astype(np.float32)}, tmp)
        os.replace(tmp, path)
        return logits


def model_labels(folder: str | Path) -> list[str]:
    """Label names of a saved classifier, in index order."""
    id2label = json.loads((Path(folder) / "config.json").read_text()).get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))]


def logits_as_extras(logits: np.ndarray) -> list[torch.Tensor]:
    return list(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)))
