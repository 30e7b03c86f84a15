"""Runs: train a model under a config, save it with its config and metrics, evaluate it.

Checkpoints of an unfinished run live in `<output_dir>.partial/`; the finished artifact is
written under a temporary name and renamed to `<output_dir>` only when complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .batching import EncodedSplit
from .config import RunConfig
from .data import Split, available_eval_splits, load_split
from .evaluate import predict_logits, prediction_table, save_tables, summarize
from .io import UserError, atomic_dir, write_json, write_yaml
from .losses import NEEDS, make_loss
from .models import count_parameters, load_model, load_tokenizer, save_model, set_threads
from .shortcut import add_cue, cue_markers, cue_test_sets, reliance
from .tasks import TaskSpec, load_task
from .train import Hook, TrainResult, make_accelerator, train, write_train_metrics


def eval_split_names(cfg: RunConfig, task: TaskSpec) -> list[str]:
    names = cfg.eval_sets or available_eval_splits(task, cfg.data_dir, cfg.source)
    unknown = [n for n in names if n not in task.splits or task.splits[n].role == "train"]
    if unknown:
        raise UserError(f"unknown eval set(s) {unknown} for task {task.name!r}; have {task.eval_splits()}")
    return names


def evaluate_model(model, tokenizer, task: TaskSpec, split_names: list[str], cfg: RunConfig,
                   reference: dict[str, Any] | None = None, splits: dict[str, Split] | None = None
                   ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Prediction tables for each split and the summary derived from them."""
    tables, speed, roles, groups = {}, {}, {}, {}
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    todo: list[Split] = []
    for name in split_names:
        split = (splits or {}).get(name) or load_split(task, name, cfg.data_dir, cfg.source,
                                                       limit=cfg.eval_limit, seed=cfg.data_seed)
        todo.append(split)
        if cfg.cue is not None and split.role == "id":  # controlled-shortcut test sets
            todo.extend(cue_test_sets(split, cue_markers(cfg.cue, task.labels), cfg.data_seed))
    for split in todo:
        enc = EncodedSplit(split.examples, tokenizer, cfg.max_length, field=cfg.input_field)
        logits, rate = predict_logits(model, enc, cfg.eval_batch_size, bf16=cfg.bf16)
        tables[split.name] = prediction_table(split, logits, model_labels)
        speed[split.name], roles[split.name], groups[split.name] = rate, split.role, split.group_by
    summary = summarize(tables, roles, groups, reference)
    summary["eval_examples_per_s"] = {k: round(v, 1) for k, v in speed.items()}
    if cfg.cue is not None:
        summary["shortcut"] = reliance(tables)
    return tables, summary


def load_reference(path: str | Path | None) -> dict[str, Any] | None:
    """A teacher's summary.json (or the model folder holding one) for F_bias."""
    if path is None:
        return None
    p = Path(path)
    p = p / "summary.json" if p.is_dir() else p
    if not p.is_file():
        raise UserError(f"{p}: reference summary not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: malformed JSON ({e.msg}, line {e.lineno})") from None


def train_and_save(cfg: RunConfig, model, tokenizer, task: TaskSpec, train_split: Split,
                   extras: dict[str, list] | None = None, hooks: list[Hook] | None = None,
                   record: dict[str, Any] | None = None, reference: dict[str, Any] | None = None,
                   resume: bool = True, overwrite: bool = False) -> Path:
    """Train, then write model + tokenizer + config + metrics + predictions + summary atomically."""
    out = Path(cfg.output_dir)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    missing = NEEDS[cfg.loss.name] - set(extras or {})
    if missing:
        raise UserError(f"loss {cfg.loss.name!r} needs per-example {sorted(missing)}")
    set_threads()
    accelerator = make_accelerator(cfg)
    work = out.with_name(out.name + ".partial")
    data = EncodedSplit(train_split.examples, tokenizer, cfg.max_length, field=cfg.input_field, extras=extras)
    result: TrainResult = train(model, data, cfg, make_loss(cfg.loss), work, hooks=hooks, resume=resume,
                                accelerator=accelerator)
    model = accelerator.unwrap_model(model)
    if not accelerator.is_main_process:
        return out
    names = eval_split_names(cfg, task)
    tables, summary = evaluate_model(model, tokenizer, task, names, cfg, reference)
    total, nonzero = count_parameters(model)
    with atomic_dir(out, overwrite=True) as tmp:
        save_model(model, tokenizer, tmp)
        write_yaml(tmp / "run_config.yaml", cfg.model_dump(mode="json"))
        write_train_metrics(tmp, result, {"train_examples": len(data), "train_origin": train_split.origin})
        write_json(tmp / "compression.json", {"parameters": total, "nonzero_parameters": nonzero,
                                              **(record or {"method": "none"})})
        save_tables(tmp / "predictions", tables)
        write_json(tmp / "summary.json", summary)
    shutil.rmtree(work, ignore_errors=True)
    return out


def load_train_split(cfg: RunConfig, task: TaskSpec) -> Split:
    """The training split as configured: seeded subset, synthetic cue if asked."""
    split = load_split(task, task.train_split, cfg.data_dir, cfg.source, limit=cfg.train_limit, seed=cfg.data_seed)
    if cfg.cue is not None:
        split.examples = add_cue(split.examples, cue_markers(cfg.cue, task.labels), cfg.cue.rho, cfg.data_seed)
    return split


def finetune(cfg: RunConfig, resume: bool = True, overwrite: bool = False) -> Path:
    """Fine-tune `cfg.model` on the task's training split (the teacher, or any baseline)."""
    task = load_task(cfg.task)
    eval_split_names(cfg, task)  # fail on a bad eval set before any training
    train_split = load_train_split(cfg, task)
    model = load_model(cfg.model, task.labels, dropout=cfg.dropout)
    tokenizer = load_tokenizer(cfg.model, model)
    return train_and_save(cfg, model, tokenizer, task, train_split, resume=resume, overwrite=overwrite)


def evaluate_folder(model_dir: str | Path, task_name: str | None, cfg: RunConfig, output: Path | None = None,
                    reference: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a saved model; write predictions/ and summary.json to `output` (default model_dir/eval)."""
    model_dir = Path(model_dir)
    task = load_task(task_name or cfg.task)
    model = load_model(str(model_dir), task.labels)
    tokenizer = load_tokenizer(str(model_dir), model)
    names = eval_split_names(cfg, task)
    tables, summary = evaluate_model(model, tokenizer, task, names, cfg, load_reference(reference))
    out = output or (model_dir / "eval")
    with atomic_dir(out, overwrite=True) as tmp:
        save_tables(tmp / "predictions", tables)
        write_json(tmp / "summary.json", summary)
        write_yaml(tmp / "eval_config.yaml", cfg.model_dump(mode="json") | {"model": str(model_dir)})
    return summary
