"""The speed stage: inference examples/s of every model of a study and of its dense teacher,
measured side by side in one process with the harness `benchmarks/` uses
(`models.infer.throughput`), so a speed-up is a ratio of two numbers taken under the same
conditions.

`examples_per_s` is the study's own precision (fp32, or bf16 autocast with int8 models on fp32
activations), as always. With `runtimes`, every model is also timed on each named runtime
(`models.runtimes`: PyTorch fp32 / bf16, onnxruntime fp32 / int8), side by side within a runtime; a
model a runtime cannot run is recorded under `missing` with its reason."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from .. import schemas
from ..config import RunConfig
from ..data.batching import EncodedSplit
from ..data.load import eval_split_names, load_split
from ..data.tasks import load_task
from ..io import UserError, claim_output
from ..models.infer import pytorch_runs, round_robin_seconds
from ..models.load import load_tokenizer, model_labels, resolve_model_dir, set_threads
from ..models.quantized import load_for_inference
from ..models.runtimes import cpu_name, time_rounds
from .progress import Reporter


def measure_speed(
    models: dict[str, str | Path],
    cfg: RunConfig,
    out: Path,
    n: int = 512,
    repeats: int = 3,
    progress: Reporter | None = None,
    runtimes: list[str] | None = None,
    overwrite: bool = False,
    record: bool = False,
) -> dict[str, Any]:
    """examples/s of each model (folder or hub id) on the same `n` examples of the task's first ID
    split (each model with its own tokenizer), fp32 (or bf16 autocast if cfg.bf16), batch
    cfg.eval_batch_size; and on each of `runtimes` when given. `record`: `out` is a user-facing
    file (claimed before any timing; see `io.claim_output`)."""
    if Path(out).is_dir():  # before any timing: the result would fail to land after it
        raise UserError(
            f"{out}: a folder; speed writes one JSON file (e.g. {Path(out) / 'speed.json'})"
        )
    rep = progress or Reporter()
    if record:
        read = [(m, "model") for m in models.values()] + cfg.input_paths()
        claim_output(out, read, overwrite, folder=False)
    task = load_task(cfg.task)
    have = eval_split_names(
        cfg.data_args(), task
    )  # the chosen sets the source has (offline: no QQP dev)
    chosen = [s for s in task.splits if s in have]
    ids = [
        s for s in chosen if task.splits[s].role == "id"
    ] or chosen  # (a 2-way model audited on HANS alone)
    if not ids:
        raise UserError(f"task {task.name!r}: no eval split to time inference on")
    split = load_split(task, ids[0], cfg.data_dir, cfg.source, limit=n, seed=cfg.data_seed)
    set_threads()
    entries = {}
    for name, folder in models.items():
        folder = resolve_model_dir(
            str(folder)
        )  # timing is the same in any label order: the model's own
        model = load_for_inference(folder, model_labels(folder) or task.labels)
        tok = load_tokenizer(str(folder), model)
        entries[name] = (model, EncodedSplit(split.examples, tok, cfg.max_length))
    phase = len(entries) * (repeats + 1)
    rep.task("time inference", phase * (1 + len(runtimes or [])), "passes")
    runs = pytorch_runs(entries, cfg.eval_batch_size, cfg.bf16)
    seconds = round_robin_seconds({k: r for k, (r, _) in runs.items()}, repeats, rep.update)
    rates = {k: runs[k][1] / max(min(v), 1e-9) for k, v in seconds.items()}
    per_runtime = {}
    with tempfile.TemporaryDirectory(
        prefix="speed-onnx-"
    ) as exports:  # one export per model, both onnxruntimes
        for i, runtime in enumerate(runtimes or [], 1):
            secs, n_ex, missing = time_rounds(
                entries,
                runtime,
                cfg.eval_batch_size,
                repeats,
                workdir=Path(exports),
                progress=lambda k, done=i * phase: rep.update(done + k),
            )
            per_runtime[runtime] = {
                "examples_per_s": {
                    k: round(n_ex[k] / max(min(v), 1e-9), 2) for k, v in secs.items()
                },
                "missing": missing,
                "seconds": {k: [round(x, 5) for x in v] for k, v in secs.items()},
            }
    result = {
        "examples_per_s": {k: round(v, 2) for k, v in rates.items()},
        "seconds": {k: [round(x, 5) for x in v] for k, v in seconds.items()},
        "harness": {
            "split": ids[0],
            "examples": len(split),
            "batch_size": cfg.eval_batch_size,
            "max_length": cfg.max_length,
            "bf16": cfg.bf16,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "machine": platform.machine(),
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
        },
    }
    if runtimes:
        result["runtimes"] = per_runtime
    schemas.write(Path(out), result, record=record)
    return result
