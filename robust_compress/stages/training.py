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
from ..config import RunConfig, load_config
from ..data.batching import EncodedSplit
from ..io import UserError, digest, file_digest
from ..metrics import summarize
from ..models.families import encoder_flops
from ..models.load import (
    count_parameters,
    load_model,
    load_tokenizer,
    model_digest,
    resolve_model_dir,
    set_threads,
    vocab_digest,
)
from ..models.quantized import is_quantized, save_quantized
from ..train.extras import Context, LiveTeacher, build_extras, build_live
from ..train.loop import check_checkpoint, make_accelerator, total_steps, train
from ..train.losses import make_loss
from .artifact import Checked, bytes_on_disk, load_reference, preflight, write_artifact
from .predict import predict_tables
from .progress import Reporter

# settings that cannot change what a run trains (where it writes, how often it checkpoints, what it
# is evaluated on afterwards): a checkpoint may be resumed across them
NOT_IN_RUN = {
    "output_dir",
    "cache_dir",
    "checkpoint_every",
    "trackers",
    "eval_limit",
    "eval_sets",
    "eval_batch_size",
    "data_dir",
    "model",
    "inputs",
}


def _content(path: str) -> str:
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    if (p / "config.json").is_file():
        return model_digest(p)
    return (
        digest(sorted((f.name, file_digest(f)) for f in p.iterdir() if f.is_file()))
        if p.is_dir()
        else path
    )


def run_identity(cfg: RunConfig, checked: Checked) -> dict[str, Any]:
    """What makes a run this run, recorded in its checkpoints: the settings, and the content (not
    the paths) of the start model, the loss inputs, the task spec and the training examples."""
    ident = cfg.model_dump(mode="json", exclude=NOT_IN_RUN)
    ident["model content"] = _content(str(resolve_model_dir(cfg.model)))
    for name, source in cfg.inputs.model_dump().items():
        if source is not None:
            ident[f"inputs.{name} content"] = _content(source)
    ident["task spec"] = digest(checked.task.model_dump(mode="json"))
    ident["training examples"] = checked.train.digest() if checked.train is not None else None
    return ident


def method_of(cfg: RunConfig) -> Method | None:
    return METHODS[cfg.compression.method](cfg.compression) if cfg.compression is not None else None


def finetune(
    cfg: RunConfig,
    resume: bool = True,
    overwrite: bool = False,
    progress: Reporter | None = None,
    files: dict[str, Any] | None = None,
) -> Path:
    """Fine-tune `cfg.model` on the task's training split (the teacher, or any baseline)."""
    if cfg.compression is not None:
        raise UserError(
            f"finetune trains without compression (compression.method {cfg.compression.method!r} "
            "was given): use `robust-compress compress`"
        )
    return compress(cfg, resume=resume, overwrite=overwrite, progress=progress, files=files)


def _evaluate(model, tokenizer, cfg: RunConfig, checked: Checked, rep: Reporter):
    tables, speed = predict_tables(model, tokenizer, checked.evals, cfg, progress=rep.update)
    roles = {n: s.role for n, s in checked.evals.items()}
    groups = {n: s.group_by for n, s in checked.evals.items()}
    summary = summarize(
        tables,
        roles,
        groups,
        load_reference(cfg.inputs.teacher),
        rule=checked.task.delta_rule(list(checked.evals)),
    )
    summary["eval_examples_per_s"] = {k: round(v, 1) for k, v in speed.items()}
    return tables, summary


def finetune_config(path: str | Path, progress: Reporter | None = None) -> Path:
    """`finetune -c path`: a run config as it is (a study's missing teacher)."""
    return finetune(load_config(path), progress=progress)


def compress(
    cfg: RunConfig,
    resume: bool = True,
    overwrite: bool = False,
    progress: Reporter | None = None,
    files: dict[str, Any] | None = None,
) -> Path:
    """Train (or quantize) `cfg.model` with the configured method and loss, evaluate it, write the
    artifact. `files`: more files written inside the artifact, last (a study's stage record)."""
    rep = progress or Reporter()
    method = method_of(cfg)
    trains = method is None or method.trains
    checked = preflight(
        cfg, overwrite, needs_train=method is None or method.reads_training_data(), method=method
    )
    out = Path(cfg.output_dir)
    work = out.with_name(out.name + ".partial")
    run = run_identity(cfg, checked) if trains else None
    if resume and trains:
        check_checkpoint(
            work / "checkpoint", run
        )  # another run's checkpoint: refused before any work
    set_threads()
    task = checked.task
    model = load_model(
        cfg.model, task.labels, dropout=cfg.dropout, seed=cfg.seed, label_map=cfg.label_map
    )
    tokenizer = load_tokenizer(cfg.model, model)
    parameters_before, _ = count_parameters(model)
    record: dict[str, Any] = {
        "method": method.name if method else "none",
        "settings": cfg.compression.model_dump(mode="json") if cfg.compression else {},
        "loss": cfg.loss.name if trains else None,
        "start_model": cfg.model,
        "parameters_before": parameters_before,
    }
    if not trains:  # post-training: int8, or retraining-free pruning
        return _post_training(cfg, method, model, tokenizer, checked, record, rep, files)

    examples = checked.train.examples
    ctx = Context(
        labels=task.labels,
        alpha=task.alpha,
        cache_dir=cfg.cache_dir,
        max_length=cfg.max_length,
        batch_size=cfg.eval_batch_size,
        bf16=cfg.bf16,
        label_map=cfg.label_map,
        student_vocab=vocab_digest(tokenizer),
    )
    extras = build_extras(cfg.loss, cfg.inputs, examples, ctx)
    live = build_live(cfg.loss, cfg.inputs, ctx)
    data = EncodedSplit(examples, tokenizer, cfg.max_length, field=cfg.input_field, extras=extras)
    snap_root = out.with_name(out.name + "-snapshots")

    def on_snapshot(sparsity: float, snap_model) -> None:
        write_artifact(
            snap_root / f"sparsity-{sparsity:.2f}",
            model=snap_model,
            tokenizer=tokenizer,
            files={"compression.json": {"method": "magnitude-snapshot", "sparsity": sparsity}},
        )
        rep.note(f"snapshot at sparsity {sparsity:.2f} saved")

    hooks = []
    if method is not None:
        model, hooks = method.prepare(
            model,
            Prepare(data=data, seed=cfg.seed, on_snapshot=on_snapshot, cache_dir=cfg.cache_dir),
        )
    teacher = next((x for x in live.values() if isinstance(x, LiveTeacher)), None)
    loss = make_loss(
        cfg.loss,
        hidden_size=model.config.hidden_size,
        num_labels=len(task.labels),
        teacher_hidden_size=teacher.hidden_size if teacher is not None else 0,
    )
    args = cfg.train_args()
    accelerator = make_accelerator(args, out.with_name(out.name + ".logs"))
    rep.task("train", total_steps(len(data), args), "steps")
    result = train(
        model,
        data,
        args,
        loss,
        work,
        hooks=hooks,
        resume=resume,
        accelerator=accelerator,
        progress=lambda e: rep.update(e["step"], loss=e["loss"], ex_s=e["examples_per_s"]),
        run=run,
        live=live,
    )
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
    metrics = {
        "steps": result.steps,
        "examples_per_s": round(result.examples_per_s, 2),
        "seconds": round(result.seconds, 1),
        "loss_curve": result.losses,
        "train_examples": len(data),
        "train_origin": checked.train.origin,
    }
    save = None
    if (
        result.dynamics is not None
    ):  # training dynamics: per example and epoch, what the steps computed
        d = result.dynamics
        frame = pd.DataFrame(
            {
                "id": [examples[int(r)]["id"] for r in d[:, 0]],
                "epoch": d[:, 1].astype(int),
                "loss": d[:, 2],
                "p_gold": d[:, 3],
            }
        )

        def save_dynamics(tmp: Path) -> None:
            frame.to_parquet(tmp / DYNAMICS, index=False)

        save = save_dynamics
    write_artifact(
        out,
        model=model,
        tokenizer=tokenizer,
        cfg=cfg,
        tables=tables,
        save=save,
        files={
            "train_metrics.json": metrics,
            "summary.json": summary,
            "compression.json": lambda tmp: record | {"bytes_on_disk": bytes_on_disk(tmp)},
        }
        | (files or {}),
    )
    shutil.rmtree(work, ignore_errors=True)
    return out


def _post_training(
    cfg: RunConfig,
    method: Method,
    model,
    tokenizer,
    checked: Checked,
    record: dict,
    rep: Reporter,
    files: dict[str, Any] | None,
) -> Path:
    """A method that does not train (int8, retraining-free pruning) applied to the start model. int8
    is saved as int8 (torchao) or as float weights + recipe (the torch.ao fallback), and every
    loader (`load_for_inference`) gives the int8 model back; anything else is saved as a model."""
    data = None
    if method.reads_training_data():
        data = EncodedSplit(
            checked.train.examples, tokenizer, cfg.max_length, field=cfg.input_field
        )
        rep.task(method.name, 1, "model")
    result = method.apply(model, Prepare(data=data, seed=cfg.seed, cache_dir=cfg.cache_dir))
    rep.task("evaluate", sum(len(s) for s in checked.evals.values()), "examples")
    tables, summary = _evaluate(result, tokenizer, cfg, checked, rep)
    int8 = is_quantized(result)
    plain = model if int8 else result  # int8 is counted on its float parent's weights
    total, nonzero = count_parameters(plain)
    record |= method.record(result) | {
        "parameters": total,
        "nonzero_parameters": nonzero,
        **encoder_flops(plain),
    }
    if data is not None:
        record["train_examples"] = len(data)
    save = (
        (lambda tmp: save_quantized(result, model, tokenizer, tmp, cfg.compression.scheme))
        if int8
        else None
    )
    return write_artifact(
        Path(cfg.output_dir),
        model=None if int8 else result,
        tokenizer=tokenizer,
        cfg=cfg,
        tables=tables,
        save=save,
        files={
            "summary.json": summary,
            "compression.json": lambda tmp: record | {"bytes_on_disk": bytes_on_disk(tmp)},
        }
        | (files or {}),
    )
