"""Stages of the shortcut analysis: per-sample uncertainty, bias-only models, easy/hard splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..analysis import easy_hard, uncertainty
from ..config import RunConfig
from ..data.batching import EncodedSplit
from ..data.load import folds_of, load_eval_splits, load_split, load_train_split, text_key
from ..data.tasks import load_task
from ..evaluate import prediction_table, summarize
from ..io import UserError, atomic_file, check_writable, write_json
from ..models.load import load_model, load_tokenizer, model_labels
from ..models.overlap import FILE as OVERLAP_FILE
from ..models.overlap import OverlapModel
from ..train.extras import BIAS_RECORD, TRAIN_PROBS
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
        model = load_model(oneshot, model_labels(oneshot))
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
                     progress: Reporter | None = None, easy_hard_split: str | None = None,
                     files: dict[str, Any] | None = None, scoring: str | None = None, folds: int = 5,
                     fold_models: list[str] | None = None, features: str = "basic") -> Path:
    """A bias-only model: `partial` fine-tunes cfg.model on one side of the pair (hypothesis / claim);
    `overlap` fits a logistic regression on lexical-overlap features (the HANS heuristics).
    With `easy_hard_split`, the artifact also holds that split's easy/hard partition
    (`easy_hard.parquet`); with `scoring` (crossfit | insample), the training set's probabilities
    (`train_probs.parquet`, read by the known-bias losses; cross-fitting a transformer needs its
    `fold_models`). Both are written before the artifact is complete: no finished bias model lacks them.
    `features`: the overlap model's feature set (basic | literature)."""
    if scoring == "crossfit" and kind == "partial" and len(fold_models or []) != folds:
        raise UserError(f"cross-fitting a {kind} bias model needs its {folds} fold models")
    task = load_task(cfg.task)
    files = dict(files or {})
    if easy_hard_split is not None:
        files = {"easy_hard.parquet": lambda tmp: easy_hard_frame(cfg, str(tmp), easy_hard_split)} | files
    if scoring is not None:  # the training set's probabilities, for the losses (before the record)
        made: dict[str, Any] = {}

        def probs(tmp: Path) -> pd.DataFrame:
            made["table"], made["record"] = bias_train_probs(cfg, kind, str(tmp), scoring, folds, fold_models,
                                                             features)
            return made["table"]

        files = {TRAIN_PROBS: probs, BIAS_RECORD: lambda tmp: made["record"]} | files
    if kind == "partial":
        return finetune(cfg.model_copy(update={"input_field": task.bias_field}), overwrite=overwrite,
                        progress=progress, files=files)
    if kind != "overlap":
        raise UserError(f"unknown bias-model kind {kind!r}: use 'partial' or 'overlap'")
    out = Path(cfg.output_dir)
    check_output(out, overwrite)
    args = cfg.data_args()
    splits = {n: s for n, s in load_eval_splits(args, task).items() if s.role != "cue"}
    model = OverlapModel.fit(load_train_split(args, task).examples, task.labels, features=features)
    tables = {n: prediction_table(s, np.log(np.clip(model.predict_proba(s.examples), 1e-12, None)), task.labels)
              for n, s in splits.items()}
    summary = summarize(tables, {n: s.role for n, s in splits.items()}, {n: s.group_by for n, s in splits.items()},
                        rule=task.delta_rule(list(splits)))
    write_artifact(out, cfg=cfg, tables=tables, files={OVERLAP_FILE: model.to_json(), "summary.json": summary} | files)
    return out


def bias_train_probs(cfg: RunConfig, kind: str, model_dir: str, scoring: str = "crossfit", folds: int = 5,
                     fold_models: list[str] | None = None, features: str = "basic"
                     ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A bias model's probabilities on its training split: in-sample (the model trained on all of it)
    and, cross-fitted, out-of-fold: each example scored by the fold model that never saw it (Clark et
    al. 2019's caveat: an in-sample bias model is over-confident on its own training examples).
    Returns the table (id, text key, fold, label, insample_p<j>, crossfit_p<j>) and a record."""
    task = load_task(cfg.task)
    args = cfg.data_args().model_copy(update={"cv_fold": None})
    examples = load_train_split(args, task).examples
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    gold = np.array([e["label"] for e in examples])
    columns: dict[str, Any] = {"id": [e["id"] for e in examples], "key": [text_key(e) for e in examples],
                               "label": gold}
    probs = {"insample": easy_hard.bias_probs(model_dir, examples, cache, cfg.max_length)}
    if scoring == "crossfit":
        fold = np.array(folds_of(examples, folds, cfg.data_seed))
        out = np.zeros_like(probs["insample"])
        for k in range(folds):
            held = [examples[i] for i in np.flatnonzero(fold == k)]
            if kind == "overlap":
                seen = [examples[i] for i in np.flatnonzero(fold != k)]
                out[fold == k] = OverlapModel.fit(seen, task.labels, features=features).predict_proba(held)
            else:
                out[fold == k] = easy_hard.bias_probs(fold_models[k], held, cache, cfg.max_length)
        probs["crossfit"] = out
        columns["fold"] = fold
    record: dict[str, Any] = {"kind": kind, "scoring": scoring, "folds": folds if scoring == "crossfit" else None,
                              "n": len(examples)}
    for mode, p in probs.items():
        for j in range(p.shape[1]):
            columns[f"{mode}_p{j}"] = p[:, j]
        record[f"train_accuracy_{mode}"] = float((p.argmax(1) == gold).mean())
        record[f"train_confidence_gold_{mode}"] = float(p[np.arange(len(gold)), gold].mean())
    return pd.DataFrame(columns), record


def easy_hard_frame(cfg: RunConfig, bias_model: str, split_name: str) -> pd.DataFrame:
    """Easy/hard partition (id, easy) of an eval split by a bias-only model (easy = it is right)."""
    task = load_task(cfg.task)
    split = load_split(task, split_name, cfg.data_dir, cfg.source, limit=cfg.eval_limit, seed=cfg.data_seed)
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    return easy_hard.easy_hard_table(split.examples, easy_hard.bias_probs(bias_model, split.examples, cache,
                                                                          cfg.max_length))


def write_easy_hard(cfg: RunConfig, bias_model: str, split_name: str, out: Path) -> pd.DataFrame:
    """Easy/hard partition of an eval split by a bias-only model, written to `out` (parquet)."""
    df = easy_hard_frame(cfg, bias_model, split_name)
    _write_parquet(df, Path(out))
    return df
