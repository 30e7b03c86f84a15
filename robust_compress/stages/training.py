"""`finetune` and `compress`: one path for every trained model.

Fine-tuning is a run without a compression method. A method prepares the model (and the loop's
hooks), the configured loss trains it through the one loop, so every mitigation loss works with
every compression. Every check runs before the first step; every measurement of the result
(parameters, FLOPs, method record, predictions) is made before anything is written, and the
artifact is written once, atomically.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.uncertainty import DYNAMICS
from ..compress import METHODS, Method, Prepare
from ..config import RunConfig
from ..data.batching import EncodedSplit
from ..evaluate import predict_tables, summarize
from ..models.families import encoder_flops
from ..models.load import count_parameters, load_model, load_tokenizer, set_threads
from ..models.quantized import quantize, save_quantized
from ..train.extras import Context, build_extras
from ..train.loop import make_accelerator, total_steps, train
from ..train.losses import make_loss
from .artifact import Checked, bytes_on_disk, load_reference, preflight, write_artifact
from .progress import Reporter


def method_of(cfg: RunConfig) -> Method | None:
    return METHODS[cfg.compression.method](cfg.compression) if cfg.compression is not None else None


def finetune(cfg: RunConfig, resume: bool = True, overwrite: bool = False, progress: Reporter | None = None) -> Path:
    """Fine-tune `cfg.model` on the task's training split (the teacher, or any baseline)."""
    if cfg.compression is not None:
        cfg = cfg.model_copy(update={"compression": None})
    return compress(cfg, resume=resume, overwrite=overwrite, progress=progress)


def _evaluate(model, tokenizer, cfg: RunConfig, checked: Checked, rep: Reporter):
    tables, speed = predict_tables(model, tokenizer, checked.evals, cfg, progress=rep.update)
    roles = {n: s.role for n, s in checked.evals.items()}
    groups = {n: s.group_by for n, s in checked.evals.items()}
    summary = summarize(tables, roles, groups, load_reference(cfg.inputs.teacher),
                        rule=checked.task.delta_rule(list(checked.evals)))
    summary["eval_examples_per_s"] = {k: round(v, 1) for k, v in speed.items()}
    return tables, summary


def compress(cfg: RunConfig, resume: bool = True, overwrite: bool = False, progress: Reporter | None = None) -> Path:
    rep = progress or Reporter()
    method = method_of(cfg)
    trains = method is None or method.trains
    checked = preflight(cfg, overwrite, needs_train=trains, method=method)
    set_threads()
    task = checked.task
    model = load_model(cfg.model, task.labels, dropout=cfg.dropout, seed=cfg.seed, label_map=cfg.label_map)
    tokenizer = load_tokenizer(cfg.model, model)
    parameters_before, _ = count_parameters(model)
    out = Path(cfg.output_dir)
    record: dict[str, Any] = {"method": method.name if method else "none",
                              "settings": cfg.compression.model_dump(mode="json") if cfg.compression else {},
                              "loss": cfg.loss.name if trains else None, "start_model": cfg.model,
                              "parameters_before": parameters_before}
    if not trains:  # post-training quantization: float weights + the recipe, scored as int8
        return _quantize(cfg, model, tokenizer, checked, record, rep)

    examples = checked.train.examples
    ctx = Context(labels=task.labels, alpha=task.alpha, cache_dir=cfg.cache_dir, max_length=cfg.max_length,
                  batch_size=cfg.eval_batch_size, bf16=cfg.bf16, label_map=cfg.label_map)
    extras = build_extras(cfg.loss, cfg.inputs, examples, ctx)
    data = EncodedSplit(examples, tokenizer, cfg.max_length, field=cfg.input_field, extras=extras)
    snap_root = out.with_name(out.name + "-snapshots")

    def on_snapshot(sparsity: float, snap_model) -> None:
        write_artifact(snap_root / f"sparsity-{sparsity:.2f}", model=snap_model, tokenizer=tokenizer,
                       files={"compression.json": {"method": "magnitude-snapshot", "sparsity": sparsity}})
        rep.note(f"snapshot at sparsity {sparsity:.2f} saved")

    hooks = []
    if method is not None:
        model, hooks = method.prepare(model, Prepare(data=data, seed=cfg.seed, on_snapshot=on_snapshot))
    loss = make_loss(cfg.loss, hidden_size=model.config.hidden_size, num_labels=len(task.labels))
    args = cfg.train_args()
    accelerator = make_accelerator(args, out.with_name(out.name + ".logs"))
    work = out.with_name(out.name + ".partial")
    rep.task("train", total_steps(len(data), args), "steps")
    result = train(model, data, args, loss, work, hooks=hooks, resume=resume, accelerator=accelerator,
                   progress=lambda e: rep.update(e["step"], loss=e["loss"], ex_s=e["examples_per_s"]))
    if result.resumed_from:
        rep.note(f"resumed from step {result.resumed_from}")
    model = accelerator.unwrap_model(model)
    if not accelerator.is_main_process:
        return out
    rep.task("evaluate", sum(len(s) for s in checked.evals.values()), "examples")
    tables, summary = _evaluate(model, tokenizer, cfg, checked, rep)
    total, nonzero = count_parameters(model)
    record |= {"parameters": total, "nonzero_parameters": nonzero, **encoder_flops(model)}
    record |= method.record(model) if method is not None else {}
    metrics = {"steps": result.steps, "examples_per_s": round(result.examples_per_s, 2),
               "seconds": round(result.seconds, 1), "loss_curve": result.losses, "train_examples": len(data),
               "train_origin": checked.train.origin}
    save = None
    if result.dynamics is not None:  # training dynamics: per example and epoch, what the steps computed
        d = result.dynamics
        frame = pd.DataFrame({"id": [examples[int(r)]["id"] for r in d[:, 0]], "epoch": d[:, 1].astype(int),
                              "loss": d[:, 2], "p_gold": d[:, 3]})
        save = lambda tmp: frame.to_parquet(tmp / DYNAMICS, index=False)
    write_artifact(out, model=model, tokenizer=tokenizer, cfg=cfg, tables=tables, save=save,
                   files={"train_metrics.json": metrics, "summary.json": summary,
                          "compression.json": lambda tmp: record | {"bytes_on_disk": bytes_on_disk(tmp)}})
    shutil.rmtree(work, ignore_errors=True)
    return out


def _quantize(cfg: RunConfig, model, tokenizer, checked: Checked, record: dict, rep: Reporter) -> Path:
    """Post-training int8 (models.quantized): saved as int8 (torchao) or as float weights + recipe
    (the torch.ao fallback); every loader (`load_for_inference`) gives back the int8 model."""
    scheme = cfg.compression.scheme
    qmodel = quantize(model, scheme)
    rep.task("evaluate", sum(len(s) for s in checked.evals.values()), "examples")
    tables, summary = _evaluate(qmodel, tokenizer, cfg, checked, rep)
    total, nonzero = count_parameters(model)
    record |= {"scheme": scheme, "parameters": total, "nonzero_parameters": nonzero, **encoder_flops(model)}
    return write_artifact(Path(cfg.output_dir), cfg=cfg, tables=tables,
                          save=lambda tmp: save_quantized(qmodel, model, tokenizer, tmp, scheme),
                          files={"summary.json": summary,
                                 "compression.json": lambda tmp: record | {"bytes_on_disk": bytes_on_disk(tmp)}})
