"""Per-example logits of a saved model (teacher logits for KD, bias-model and snapshot outputs):
computed once, cached on disk, reused by every student, seed and loss. An entry that cannot be
used (unreadable, or not one row per example and one column per label) is only a cache's loss:
one warning naming it, removed and recomputed.

The key hashes the model folder's content, the examples (ids, texts, labels) and the
tokenization settings, so a changed teacher or data set can never be served stale logits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ..data.batching import EncodedSplit
from ..io import atomic_file, log, read_yaml
from ..models.infer import predict_logits
from ..models.labels import is_identity
from ..models.load import label_order, load_tokenizer, model_digest, model_labels, resolve_model_dir
from ..models.overlap import OverlapModel, is_overlap_model
from ..models.quantized import load_for_inference


def examples_digest(examples: list[dict]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e["id"], e["text_a"], e["text_b"], e["label"]]).encode())
    return h.hexdigest()[:16]


def model_input_field(model_dir: str | Path) -> str | None:
    """The partial input a saved model was trained on (bias-only models), from its run config."""
    p = Path(model_dir) / "run_config.yaml"
    return read_yaml(p).get("input_field") if p.is_file() else None


class LogitCache:
    """On-disk cache of per-example logits, keyed by (model content, data, tokenization)."""

    def __init__(self, cache_dir: str | Path, batch_size: int = 64, bf16: bool = False):
        self.root = Path(cache_dir) / "logits"
        self.batch_size, self.bf16 = batch_size, bf16
        self.misses = 0  # how many times a model had to run (tests assert on it)

    def key(
        self,
        model_dir: str | Path,
        examples: list[dict],
        max_length: int,
        perm: list[int] | None = None,
    ) -> str:
        field = model_input_field(model_dir) or "pair"
        order = "" if perm is None or is_identity(perm) else "-P" + ".".join(map(str, perm))
        return f"{model_digest(model_dir)}-{examples_digest(examples)}-L{max_length}-{field}{order}"

    def get(
        self,
        model_dir: str | Path,
        examples: list[dict],
        max_length: int,
        labels: list[str] | None = None,
        label_map: dict[str, str] | None = None,
    ) -> np.ndarray:
        """Logits of the model in `model_dir` (a folder or hub id), tokenized with its own tokenizer
        (a student's may differ), in the order of `labels` (default: the model's own order). A
        lexical-overlap bias model answers with its log-probabilities (no cache: it is instant)."""
        if is_overlap_model(model_dir):
            return np.log(
                np.clip(OverlapModel.load(Path(model_dir)).predict_proba(examples), 1e-12, None)
            )
        model_dir = resolve_model_dir(str(model_dir))
        labels = list(labels) if labels is not None else model_labels(model_dir)
        perm = label_order(model_dir, labels, label_map)
        path = self.root / f"{self.key(model_dir, examples, max_length, perm)}.safetensors"
        if path.is_file():
            try:
                cached = load_file(str(path))["logits"]
            except (SafetensorError, KeyError) as e:  # truncated or corrupt: it is only a cache
                log.warning(f"{path}: unreadable logit cache entry ({e}); removed, recomputing")
                path.unlink(missing_ok=True)
            else:  # the key hashes the examples: another shape is a damaged entry, not other data
                cols = len(labels) or (cached.shape[1] if cached.ndim == 2 else 0)
                want = (len(examples), cols)
                if cached.shape == want:
                    return cached
                log.warning(
                    f"{path}: logit cache entry of {' x '.join(map(str, cached.shape))} logits, "
                    f"expected {want[0]} x {want[1]} (examples x labels); removed, recomputing"
                )
                path.unlink(missing_ok=True)
        self.misses += 1
        model = load_for_inference(model_dir, labels, label_map)
        tokenizer = load_tokenizer(str(model_dir), model)
        data = EncodedSplit(examples, tokenizer, max_length, field=model_input_field(model_dir))
        logits, _ = predict_logits(model, data, self.batch_size, bf16=self.bf16)
        with atomic_file(path) as tmp:  # shards may race: each writes its own file, then renames
            save_file({"logits": logits.astype(np.float32)}, str(tmp))
        return logits
