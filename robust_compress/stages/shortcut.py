"""Stages of the shortcut analysis: per-sample uncertainty, bias-only models, easy/hard splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..analysis import easy_hard, uncertainty
from ..config import RunConfig
from ..data.batching import EncodedSplit
from ..data.load import load_eval_splits, load_split, load_train_split
from ..data.tasks import load_task
from ..evaluate import prediction_table, summarize
from ..io import UserError, atomic_file, check_writable, write_json
from ..models.load import load_model, load_tokenizer
from ..models.overlap import FILE as OVERLAP_FILE
from ..models.overlap import OverlapModel
from ..train.logit_cache import LogitCache
from .artifact import check_output, write_artifact
from .progress import Reporter
from .training import finetune


def _write_parquet(df: pd.DataFrame, out: Path) -> None:
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)


def compute_uncertainty(cfg: RunConfig, out: Path, models: list[str] | None = None, snapshots: str | None = None,
                        oneshot: str | None = None, sparsities: list[float] | None = None,
                        dynamics: str | None = None, stat: str = "loss",
                        progress: Reporter | None = None) -> pd.DataFrame:
    """v_i over the configured training examples from (a) a snapshot folder, (b) explicit model
    folders, (c) one model one-shot pruned to several sparsities without retraining, or (d) the
    training dynamics a teacher recorded while it was fine-tuned (free)."""
    rep = progress or Reporter()
    out = Path(out)
    check_writable(out.parent)
    if sum(x is not None and x != [] for x in (models, snapshots, oneshot, dynamics)) != 1:
        raise UserError("give exactly one of --models, --snapshots, --oneshot or --dynamics")
    examples = load_train_split(cfg.data_args()).examples
    if dynamics:
        path = Path(dynamics) / uncertainty.DYNAMICS
        if not path.is_file():
            raise UserError(f"{path}: not found (fine-tune the teacher with record_dynamics: true)")
        df = uncertainty.from_dynamics(pd.read_parquet(path), examples, stat)
        _write_parquet(df, out)
        write_json(out.with_suffix(".json"), {"source": "dynamics", "model": dynamics, "stat": stat,
                                              "train_limit": cfg.train_limit, "data_seed": cfg.data_seed,
                                              "task": cfg.task})
        return df
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    if snapshots:
        models = sorted(str(p) for p in Path(snapshots).glob("sparsity-*") if p.is_dir())
        if not models:
            raise UserError(f"{snapshots}: no sparsity-* snapshot folders")
    if oneshot:
        sparsities = sparsities or [0.2, 0.4, 0.6, 0.7, 0.85]
        bad = [s for s in sparsities if not 0 <= s < 1]
        if bad:
            raise UserError(f"sparsities {bad} must be in [0, 1)")
        model = load_model(oneshot, load_task(cfg.task).labels, label_map=cfg.label_map)  # scored on gold labels
        tok = load_tokenizer(oneshot, model)
        rep.task("score (one-shot pruned)", len(sparsities), "models")
        df, stats = uncertainty.from_oneshot(model, EncodedSplit(examples, tok, cfg.max_length), examples,
                                             sparsities, cfg.eval_batch_size, cfg.bf16, progress=rep.update)
        source: dict[str, Any] = {"source": "oneshot", "model": oneshot, "sparsities": sparsities}
    else:
        rep.task("score the training set", len(models), "models")
        df, stats = uncertainty.from_models(models, examples, cache, cfg.max_length, progress=rep.update)
        source = {"source": "snapshots" if snapshots else "models", "models": models}
    _write_parquet(df, out)
    labels = load_task(cfg.task).labels
    for st in stats:
        st["top_pred"] = labels[st["top_pred"]]
        if st["top_pred_share"] >= 0.9:
            rep.note(f"scoring model {st['model']} predicts {st['top_pred']!r} on {100 * st['top_pred_share']:.0f}% "
                     "of the training set (collapsed)")
    write_json(out.with_suffix(".json"), source | {"train_limit": cfg.train_limit, "data_seed": cfg.data_seed,
                                                   "task": cfg.task, "models_scored": stats})
    return df


def train_bias_model(cfg: RunConfig, kind: Literal["partial", "overlap"] = "partial", overwrite: bool = False,
                     progress: Reporter | None = None) -> Path:
    """A bias-only model: `partial` fine-tunes cfg.model on one side of the pair (hypothesis / claim);
    `overlap` fits a logistic regression on lexical-overlap features (the HANS heuristics)."""
    task = load_task(cfg.task)
    if kind == "partial":
        return finetune(cfg.model_copy(update={"input_field": task.bias_field}), overwrite=overwrite,
                        progress=progress)
    if kind != "overlap":
        raise UserError(f"unknown bias-model kind {kind!r}: use 'partial' or 'overlap'")
    out = Path(cfg.output_dir)
    check_output(out, overwrite)
    args = cfg.data_args()
    splits = {n: s for n, s in load_eval_splits(args, task).items() if s.role != "cue"}
    model = OverlapModel.fit(load_train_split(args, task).examples, task.labels)
    tables = {n: prediction_table(s, np.log(np.clip(model.predict_proba(s.examples), 1e-12, None)), task.labels)
              for n, s in splits.items()}
    summary = summarize(tables, {n: s.role for n, s in splits.items()}, {n: s.group_by for n, s in splits.items()},
                        rule=task.delta_rule(list(splits)))
    write_artifact(out, cfg=cfg, tables=tables, files={"summary.json": summary, OVERLAP_FILE: model.to_json()})
    return out


def write_easy_hard(cfg: RunConfig, bias_model: str, split_name: str, out: Path) -> pd.DataFrame:
    """Easy/hard partition of an eval split by a bias-only model (easy = the bias model is right)."""
    task = load_task(cfg.task)
    split = load_split(task, split_name, cfg.data_dir, cfg.source, limit=cfg.eval_limit, seed=cfg.data_seed)
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    probs = easy_hard.bias_probs(bias_model, split.examples, cache, cfg.max_length, task.labels, cfg.label_map)
    df = easy_hard.easy_hard_table(split.examples, probs)
    _write_parquet(df, Path(out))
    return df
