"""Inference: logits for a tokenized split, and throughput measured the same way everywhere
(the study's speed stage and `benchmarks/` share `throughput`)."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable

import numpy as np
import torch

from ..data.batching import Collator, EncodedSplit, sorted_batches
from .quantized import is_quantized

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@functools.cache
def _accepted(cls: type) -> tuple[str, ...]:
    params = inspect.signature(cls.forward).parameters
    return tuple(k for k in INPUT_KEYS if k in params)


def model_inputs(model: torch.nn.Module, batch: dict, device=None) -> dict[str, torch.Tensor]:
    """The batch's token fields that this model's forward takes (DistilBERT and MPNet have no
    token_type_ids), moved to `device` if given."""
    model = getattr(model, "module", model)  # DDP wrapper
    return {
        k: batch[k] if device is None else batch[k].to(device)
        for k in _accepted(type(model))
        if k in batch
    }


def device_of(model: torch.nn.Module, device=None) -> torch.device:
    """Where inference runs: `device` if given, else the GPU when there is one (int8 dynamic linears
    run on the CPU only), else where the model is."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available() and not is_quantized(model):
        return torch.device("cuda")
    return next(model.parameters()).device


@torch.no_grad()
def predict_logits(
    model,
    data: EncodedSplit,
    batch_size: int = 64,
    bf16: bool = False,
    device: torch.device | str | None = None,
    progress=None,
) -> tuple[np.ndarray, float]:
    """Logits in the split's order, and examples/s. Batches are length-sorted and padded per batch.
    Without `device`, the model moves to the GPU when there is one (it stays there afterwards).
    `progress(n)` is called after each batch with the number of examples done."""
    model.eval()
    dev = device_of(model, device)
    model.to(dev)
    bf16 = bf16 and not is_quantized(model)  # quantized linears take fp32 activations only
    collate = Collator(getattr(model.config, "pad_token_id", 0) or 0)
    out = None
    done = 0
    t0 = time.perf_counter()
    for rows in sorted_batches(data.lengths, batch_size):
        batch = collate([data[i] for i in rows])
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**model_inputs(model, batch, dev)).logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(data), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
        done += len(rows)
        if progress is not None:
            progress(done)
    return out, len(data) / max(time.perf_counter() - t0, 1e-9)


def round_robin_seconds(
    runs: dict[str, Callable[[], None]], repeats: int = 3, progress=None
) -> dict[str, list[float]]:
    """Seconds of every timed `run()` of each entry, the runs taking turns (round-robin, `repeats`
    rounds after a warm-up round) so machine drift hits all alike. `progress(k)` is called after
    each pass with the number of passes done."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    passes = 0
    for r in range(repeats + 1):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if r:  # round 0 warms caches and allocators
                out[name].append(time.perf_counter() - t0)
            passes += 1
            if progress is not None:
                progress(passes)
    return out


def round_robin(
    runs: dict[str, tuple[Callable[[], None], int]], repeats: int = 3, progress=None
) -> dict[str, float]:
    """examples/s of each `run()` (one pass over its n examples) in its best round of
    `round_robin_seconds`."""
    seconds = round_robin_seconds({k: run for k, (run, _) in runs.items()}, repeats, progress)
    return {k: runs[k][1] / max(min(v), 1e-9) for k, v in seconds.items()}


def pytorch_runs(
    entries: dict[str, tuple[torch.nn.Module, EncodedSplit]],
    batch_size: int = 64,
    bf16: bool = False,
) -> dict[str, tuple[Callable[[], None], int]]:
    """One timed pass (and its example count) per (model, its tokenized data). fp32 unless `bf16`
    (int8 models always take fp32 activations)."""
    runs = {}
    for name, (m, data) in entries.items():
        m.eval()
        collate = Collator(getattr(m.config, "pad_token_id", 0) or 0)
        batches = [
            collate([data[i] for i in rows]) for rows in sorted_batches(data.lengths, batch_size)
        ]
        runs[name] = (pytorch_pass(m, batches, bf16 and not is_quantized(m)), len(data))
    return runs


def throughput(
    entries: dict[str, tuple[torch.nn.Module, EncodedSplit]],
    batch_size: int = 64,
    repeats: int = 3,
    bf16: bool = False,
    progress=None,
) -> dict[str, float]:
    """Inference examples/s of each (model, its tokenized data), measured side by side
    (`round_robin`)."""
    return round_robin(pytorch_runs(entries, batch_size, bf16), repeats, progress)


def pytorch_pass(m: torch.nn.Module, batches: list[dict], bf16: bool) -> Callable[[], None]:
    """One timed pass of a PyTorch model over pre-collated batches (on the GPU when there is
    one)."""
    dev = device_of(m)
    m.to(dev)

    @torch.no_grad()
    def run() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        for b in batches:
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
                m(**model_inputs(m, b, dev))
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return run
