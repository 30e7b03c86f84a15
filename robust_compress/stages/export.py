"""`export MODEL --format onnx`: any saved model (pruned with uneven heads, truncated, distilled,
int8) to ONNX through torch's exporter, checked against PyTorch on real examples, and timed in
onnxruntime.

An int8 artifact is exported from its float weights (dequantized for torchao's int8) and quantized
again by onnxruntime's own dynamic int8 (`--int8`), since neither int8 kernel set crosses the
exporter. Writes `model.onnx` (and `model.int8.onnx`) plus `export.json` (parity and speed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.batching import Collator, EncodedSplit, sorted_batches
from ..data.load import load_split
from ..data.tasks import load_task
from ..io import UserError, atomic_dir, claim_output, read_yaml, write_json
from ..models.load import load_model, load_tokenizer, model_labels, set_threads
from ..models.quantized import QUANT_FILE, load_for_inference
from ..models.runtimes import Logits, export_onnx_file, onnx_inputs, onnx_session, quantize_onnx
from .progress import Reporter


def _float_model(folder: Path, labels: list[str]) -> torch.nn.Module:
    if not (folder / QUANT_FILE).is_file():
        return load_model(str(folder), labels).eval()
    model = load_for_inference(folder, labels)
    if any(type(p).__module__.startswith("torchao") for p in model.parameters()):
        for mod in model.modules():  # torchao int8 -> float (its dequantized weights)
            if isinstance(mod, torch.nn.Linear) and type(mod.weight).__module__.startswith(
                "torchao"
            ):
                mod.weight = torch.nn.Parameter(
                    mod.weight.dequantize().float(), requires_grad=False
                )
        return model.eval()
    return load_model(str(folder), labels).eval()  # the torch.ao fallback stores float weights


def _examples(folder: Path, n: int) -> list[dict]:
    """Real examples of the model's own task when its run config names one, else the task 'mnli'."""
    cfg = read_yaml(folder / "run_config.yaml") if (folder / "run_config.yaml").is_file() else {}
    task = load_task(cfg.get("task", "mnli"))
    split = next(s for s, spec in task.splits.items() if spec.role == "id")
    return load_split(
        task, split, cfg.get("data_dir"), cfg.get("source", "local"), limit=n, seed=0
    ).examples


def _onnx_bytes(path: Path) -> int:
    """The graph and the external weights the exporter writes beside it (`<name>.data`)."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.is_file())


def _batches(
    data: EncodedSplit, pad: int, names: tuple[str, ...], batch_size: int
) -> list[dict[str, np.ndarray]]:
    collate = Collator(pad)
    return [
        {k: collate([data[i] for i in rows])[k].numpy() for k in names}
        for rows in sorted_batches(data.lengths, batch_size)
    ]


def export_onnx(
    model_dir: str | Path,
    out: str | Path | None = None,
    int8: bool = False,
    n: int = 256,
    batch_size: int = 32,
    progress: Reporter | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export to `out` (default `<model>-onnx` beside the model, never inside it)."""
    rep = progress or Reporter()
    folder = Path(model_dir)
    out = Path(out) if out else folder.with_name(folder.name + "-onnx")
    claim_output(out, [(folder, "model folder")], overwrite)
    labels = model_labels(folder)
    if not labels:
        raise UserError(
            f"{folder}: not a saved classifier (config.json names no *ForSequenceClassification)"
        )
    set_threads()
    model = _float_model(folder, labels)
    tokenizer = load_tokenizer(str(folder), model)
    data = EncodedSplit(_examples(folder, n), tokenizer, 128)
    names = onnx_inputs(model, data[0])
    pad = getattr(model.config, "pad_token_id", 0) or 0
    batches = _batches(data, pad, names, batch_size)
    wrapper = Logits(model).eval()
    example = {k: torch.from_numpy(batches[-1][k]) for k in names}
    record: dict[str, Any] = {
        "model": str(folder),
        "inputs": list(names),
        "examples": len(data),
        "batch_size": batch_size,
    }
    with atomic_dir(out) as tmp:
        rep.task("export to ONNX", 1, "model")
        export_onnx_file(model, example, tmp / "model.onnx")
        variants = {"fp32": tmp / "model.onnx"}
        if int8:
            quantize_onnx(tmp / "model.onnx", tmp / "model.int8.onnx")
            variants["int8"] = tmp / "model.int8.onnx"
        with torch.no_grad():
            torch_logits = [
                wrapper(*(torch.from_numpy(b[k]) for k in names)).numpy() for b in batches
            ]
        t0 = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                wrapper(*(torch.from_numpy(b[k]) for k in names))
        record["torch_examples_per_s"] = round(len(data) / (time.perf_counter() - t0), 2)
        for name, path in variants.items():
            sess = onnx_session(path)
            sess.run(None, batches[0])  # warm-up
            t0 = time.perf_counter()
            got = [sess.run(None, b)[0] for b in batches]
            rate = len(data) / (time.perf_counter() - t0)
            diff = max(float(np.abs(g - t).max()) for g, t in zip(got, torch_logits, strict=True))
            agree = float(
                np.mean(
                    np.concatenate(
                        [g.argmax(1) == t.argmax(1) for g, t in zip(got, torch_logits, strict=True)]
                    )
                )
            )
            record[name] = {
                "file": path.name,
                "max_abs_logit_diff": diff,
                "prediction_agreement": agree,
                "examples_per_s": round(rate, 2),
                "speedup_vs_torch": round(rate / record["torch_examples_per_s"], 3),
                "bytes": _onnx_bytes(path),
            }
        write_json(tmp / "export.json", record)
    return record
