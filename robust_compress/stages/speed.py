"""The speed stage: inference examples/s of every model of a study and of its dense teacher,
measured side by side in one process with the harness `benchmarks/` uses (`models.infer.throughput`),
so a speed-up is a ratio of two numbers taken under the same conditions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from .. import schemas
from ..config import RunConfig
from ..data.batching import EncodedSplit
from ..data.load import eval_split_names, load_split
from ..data.tasks import load_task
from ..io import UserError
from ..models.infer import throughput
from ..models.load import load_tokenizer, model_labels, resolve_model_dir, set_threads
from ..models.quantized import load_for_inference
from .progress import Reporter


def measure_speed(models: dict[str, str | Path], cfg: RunConfig, out: Path, n: int = 512, repeats: int = 3,
                  progress: Reporter | None = None) -> dict[str, Any]:
    """examples/s of each model (folder or hub id) on the same `n` examples of the task's first ID split
    (each model with its own tokenizer), fp32 (or bf16 autocast if cfg.bf16), batch cfg.eval_batch_size."""
    rep = progress or Reporter()
    task = load_task(cfg.task)
    have = eval_split_names(cfg.data_args(), task)  # the chosen sets the source has (offline: no QQP dev)
    chosen = [s for s in task.splits if s in have]
    ids = [s for s in chosen if task.splits[s].role == "id"] or chosen  # (a 2-way model audited on HANS alone)
    if not ids:
        raise UserError(f"task {task.name!r}: no eval split to time inference on")
    split = load_split(task, ids[0], cfg.data_dir, cfg.source, limit=n, seed=cfg.data_seed)
    set_threads()
    entries = {}
    for name, folder in models.items():
        folder = resolve_model_dir(str(folder))  # timing is the same in any label order: the model's own
        model = load_for_inference(folder, model_labels(folder) or task.labels)
        tok = load_tokenizer(str(folder), model)
        entries[name] = (model, EncodedSplit(split.examples, tok, cfg.max_length))
    rep.task("time inference", len(entries) * (repeats + 1), "passes")
    rates = throughput(entries, cfg.eval_batch_size, repeats, cfg.bf16, progress=rep.update)
    result = {"examples_per_s": {k: round(v, 2) for k, v in rates.items()},
              "harness": {"split": ids[0], "examples": len(split), "batch_size": cfg.eval_batch_size,
                          "max_length": cfg.max_length, "bf16": cfg.bf16, "repeats": repeats,
                          "threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu",
                          "machine": platform.machine(), "cpus": os.cpu_count()}}
    schemas.write(Path(out), result)
    return result
