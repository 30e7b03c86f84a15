"""`compress --method ...`: magnitude pruning, head pruning, distillation, truncation, int8 quantization.

Each method prepares a model (and hooks) and then goes through the one training loop with the
configured loss, so every mitigation loss works with every compression. The result is a
Hugging Face model folder plus `compression.json` (method, settings, parameters, FLOPs, sparsity).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batching import Collator, EncodedSplit
from .config import RunConfig
from .distill import LogitCache, logits_as_extras, model_labels
from .io import UserError, atomic_dir, write_json, write_yaml
from .losses import NEEDS
from .models import (
    count_parameters,
    load_model,
    load_tokenizer,
    save_model,
    set_threads,
    truncate_layers,
)
from .runner import (
    eval_split_names,
    evaluate_model,
    load_reference,
    load_train_split,
    train_and_save,
)
from .tasks import TaskSpec, load_task


def encoder_flops(model, seq_len: int = 128) -> dict[str, float]:
    """Multiply-adds x2 of the encoder per example at `seq_len` tokens: dense, and counting only
    non-zero weights (what a sparse kernel could at best reach; dense kernels do not gain)."""
    dense = sparse = 0.0
    for name, mod in model.base_model.encoder.named_modules():
        if isinstance(mod, torch.nn.Linear):
            dense += 2 * mod.in_features * mod.out_features * seq_len
            sparse += 2 * int(torch.count_nonzero(mod.weight)) * seq_len
    attn = 0.0
    for layer in model.base_model.encoder.layer:
        width = layer.attention.self.query.out_features  # heads x head_dim after head pruning
        attn += 2 * 2 * seq_len * seq_len * width  # QK^T and AV
    return {"seq_len": seq_len, "flops_dense": dense + attn, "flops_nonzero": sparse + attn}


def _extras(cfg: RunConfig, task: TaskSpec, examples: list[dict], student_labels: list[str]) -> dict[str, list]:
    """Per-example inputs the loss needs (teacher logits now; uncertainty etc. via `shortcut`)."""
    needs = NEEDS[cfg.loss.name]
    extras: dict[str, list] = {}
    if "teacher_logits" in needs:
        teacher = cfg.compression.teacher
        if model_labels(teacher) != student_labels:
            raise UserError(f"{teacher}: teacher labels {model_labels(teacher)} differ from the student's "
                            f"{student_labels}")
        logits = LogitCache(cfg.cache_dir).get(teacher, examples, cfg.max_length, cfg.eval_batch_size, cfg.bf16)
        extras["teacher_logits"] = logits_as_extras(logits)
    rest = needs - set(extras)
    if rest:
        from . import shortcut

        extras.update(shortcut.loss_extras(cfg, task, examples, rest))
    return extras


def train_batches(data: EncodedSplit, batch_size: int, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data))[: n * batch_size]
    collate = Collator(0)
    return [collate([data[int(i)] for i in idx[j:j + batch_size]]) for j in range(0, len(idx), batch_size)]


def quantize_dynamic(model):
    """Post-training dynamic int8 quantization of every nn.Linear (weights int8, activations on the fly)."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def state_bytes(model) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def compress(cfg: RunConfig, resume: bool = True, overwrite: bool = False) -> Path:
    if cfg.compression is None:
        raise UserError("compress needs a `compression` section (method and its settings)")
    c = cfg.compression
    set_threads()
    task = load_task(cfg.task)
    eval_split_names(cfg, task)
    reference = load_reference(c.teacher) if c.teacher and (Path(c.teacher) / "summary.json").is_file() else None

    if c.method == "quantize":
        return _quantize(cfg, task, reference, overwrite)

    train_split = load_train_split(cfg, task)
    model = load_model(cfg.model, task.labels, dropout=cfg.dropout)
    tokenizer = load_tokenizer(cfg.model, model)
    record: dict[str, Any] = {"method": c.method, "settings": c.model_dump(mode="json"), "loss": cfg.loss.name,
                              "start_model": cfg.model}
    before, _ = count_parameters(model)
    hooks = []
    if c.method == "magnitude":
        from .magnitude import MagnitudePruning, measured_sparsity

        snap_root = Path(cfg.output_dir).with_name(Path(cfg.output_dir).name + "-snapshots")

        def on_snapshot(sparsity: float, snap_model) -> None:
            with atomic_dir(snap_root / f"sparsity-{sparsity:.2f}") as tmp:
                save_model(snap_model, tokenizer, tmp)
                write_json(tmp / "compression.json", {"method": "magnitude-snapshot", "sparsity": sparsity,
                                                      "measured_sparsity": measured_sparsity(snap_model)})

        hooks.append(MagnitudePruning(c, on_snapshot=on_snapshot if c.snapshots else None))
    elif c.method == "heads":
        from .heads import head_importance, prune_heads, select_heads

        data = EncodedSplit(train_split.examples, tokenizer, cfg.max_length)
        total_heads = sum(layer.attention.self.num_attention_heads for layer in model.base_model.encoder.layer)
        amount = c.heads if c.heads >= 1 else round(c.heads * total_heads)
        rounds = [amount // c.iterative_steps + (1 if r < amount % c.iterative_steps else 0)
                  for r in range(c.iterative_steps)]
        for r, k in enumerate(rounds):
            imp = head_importance(model, train_batches(data, 32, c.importance_batches, cfg.seed + r))
            prune_heads(model, select_heads(imp, k))  # records original head numbers in the config
        record["heads_removed"] = int(amount)
        record["pruned_heads"] = model.config.pruned_heads
    elif c.method == "truncate":
        truncate_layers(model, c.layers)
        record["layers"] = c.layers
    # distill: the student is cfg.model as loaded; its loss (kd/rmc/...) brings the teacher in.

    extras = _extras(cfg, task, train_split.examples, task.labels)
    record["parameters_before"] = before
    out = train_and_save(cfg, model, tokenizer, task, train_split, extras=extras, hooks=hooks, record=record,
                         reference=reference, resume=resume, overwrite=overwrite)
    _finish_record(out, cfg, task, tokenizer)
    return out


def _finish_record(out: Path, cfg: RunConfig, task: TaskSpec, tokenizer) -> None:
    """Add measured sparsity, FLOPs and CPU inference speed to the saved compression record."""
    import json

    model = load_model(str(out), task.labels)
    rec = json.loads((out / "compression.json").read_text())
    if rec.get("method") == "magnitude":
        from .magnitude import measured_sparsity

        rec["measured_sparsity"] = measured_sparsity(model)
    rec.update(encoder_flops(model))
    write_json(out / "compression.json", rec)


def _quantize(cfg: RunConfig, task: TaskSpec, reference: dict | None, overwrite: bool) -> Path:
    """Dynamic int8 is a pure function of the float weights: we save the float model and the
    recipe, and `load_quantized` re-applies it (no pickled quantized modules are ever loaded)."""
    out = Path(cfg.output_dir)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    model = load_model(cfg.model, task.labels)
    tokenizer = load_tokenizer(cfg.model, model)
    qmodel = quantize_dynamic(model)
    names = eval_split_names(cfg, task)
    tables, summary = evaluate_model(qmodel, tokenizer, task, names, cfg, reference)
    total, nonzero = count_parameters(model)
    record = {"method": "quantize", "scheme": "dynamic-int8 (torch.ao.quantization.quantize_dynamic, nn.Linear)",
              "start_model": cfg.model, "parameters": total, "nonzero_parameters": nonzero,
              "bytes_float": state_bytes(model), "bytes_int8": state_bytes(qmodel), "settings": cfg.compression.model_dump(mode="json")}
    from .evaluate import save_tables

    with atomic_dir(out, overwrite=True) as tmp:
        save_model(model, tokenizer, tmp)
        write_yaml(tmp / "run_config.yaml", cfg.model_dump(mode="json"))
        write_json(tmp / "compression.json", record)
        save_tables(tmp / "predictions", tables)
        write_json(tmp / "summary.json", summary)
    return out


def load_for_inference(folder: str | Path, labels: list[str]):
    """Load a saved model, re-applying int8 quantization when its record says so."""
    import json

    model = load_model(str(folder), labels)
    rec_path = Path(folder) / "compression.json"
    if rec_path.is_file() and json.loads(rec_path.read_text()).get("method") == "quantize":
        model = quantize_dynamic(model)
    return model
