"""Stages of the shortcut analysis: per-sample uncertainty, bias-only models, easy/hard splits."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..analysis import easy_hard, uncertainty
from ..config import RunConfig
from ..data.batching import EncodedSplit
from ..data.load import folds_of, load_eval_splits, load_split, load_train_split, text_key
from ..data.tasks import load_task
from ..io import UserError, atomic_file, claim_output, read_json, read_parquet, write_json
from ..metrics import easy_hard_metrics, summarize
from ..models.load import load_model, load_tokenizer
from ..models.overlap import FILE as OVERLAP_FILE
from ..models.overlap import OverlapModel
from ..train.extras import BIAS_RECORD, EXTRAS, TRAIN_PROBS, Context, load_per_example
from ..train.logit_cache import LogitCache
from .artifact import write_artifact
from .predict import prediction_table
from .progress import Reporter
from .training import finetune


def _write_parquet(df: pd.DataFrame, out: Path) -> None:
    with atomic_file(out, record=True) as tmp:
        df.to_parquet(tmp, index=False)


def compute_uncertainty(
    cfg: RunConfig,
    out: Path,
    models: list[str] | None = None,
    snapshots: str | None = None,
    oneshot: str | None = None,
    sparsities: list[float] | None = None,
    dynamics: str | None = None,
    stat: str = "loss",
    progress: Reporter | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """v_i over the configured training examples from (a) a snapshot folder, (b) explicit model
    folders, (c) one model one-shot pruned to several sparsities without retraining, or (d) the
    training dynamics a teacher recorded while it was fine-tuned (free)."""
    rep = progress or Reporter()
    out = Path(out)
    read = (
        [(m, "model") for m in models or []]
        + [
            (snapshots, "snapshot folder"),
            (oneshot, "model"),
            (dynamics, "teacher folder"),
        ]
        + cfg.input_paths()
    )
    for o in (out, out.with_suffix(".json")):
        claim_output(o, read, overwrite, folder=False)
    if sum(x is not None and x != [] for x in (models, snapshots, oneshot, dynamics)) != 1:
        raise UserError("give exactly one of --models, --snapshots, --oneshot or --dynamics")
    examples = load_train_split(cfg.data_args()).examples
    if dynamics:
        path = Path(dynamics) / uncertainty.DYNAMICS
        if not path.is_file():
            raise UserError(f"{path}: not found (fine-tune the teacher with record_dynamics: true)")
        df = uncertainty.from_dynamics(pd.read_parquet(path), examples, stat)
        _write_parquet(df, out)
        write_json(
            out.with_suffix(".json"),
            record=True,
            data={
                "source": "dynamics",
                "model": dynamics,
                "stat": stat,
                "train_limit": cfg.train_limit,
                "data_seed": cfg.data_seed,
                "task": cfg.task,
            },
        )
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
        model = load_model(
            oneshot, load_task(cfg.task).labels, label_map=cfg.label_map
        )  # scored on gold labels
        tok = load_tokenizer(oneshot, model)
        rep.task("score (one-shot pruned)", len(sparsities), "models")
        df, stats = uncertainty.from_oneshot(
            model,
            EncodedSplit(examples, tok, cfg.max_length),
            examples,
            sparsities,
            cfg.eval_batch_size,
            cfg.bf16,
            progress=rep.update,
        )
        source: dict[str, Any] = {"source": "oneshot", "model": oneshot, "sparsities": sparsities}
    else:
        rep.task("score the training set", len(models), "models")
        df, stats = uncertainty.from_models(
            models, examples, cache, cfg.max_length, progress=rep.update
        )
        source = {"source": "snapshots" if snapshots else "models", "models": models}
    _write_parquet(df, out)
    labels = load_task(cfg.task).labels
    for st in stats:
        st["top_pred"] = labels[st["top_pred"]]
        if st["top_pred_share"] >= 0.9:
            rep.note(
                f"scoring model {st['model']} predicts {st['top_pred']!r} on "
                f"{100 * st['top_pred_share']:.0f}% of the training set (collapsed)"
            )
    write_json(
        out.with_suffix(".json"),
        record=True,
        data=source
        | {
            "train_limit": cfg.train_limit,
            "data_seed": cfg.data_seed,
            "task": cfg.task,
            "models_scored": stats,
        },
    )
    return df


class BiasKind:
    """A kind of bias-only model: how it is trained into an artifact, and how a model of it trained
    without one fold of the training set scores that fold (cross-fitting)."""

    name: ClassVar[str]
    fold_stages: ClassVar[bool] = (
        False  # cross-fitting trains one model per fold, each a study stage
    )

    def params(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Its settings that change the artifact (in a study stage's key), from all the settings
        (`features`, `subset`, `epochs`: a study's `BiasSpec`, dumped)."""
        return {}

    def fit_config(self, cfg: RunConfig, settings: dict[str, Any]) -> RunConfig:
        """The config its model (and each fold model) is trained with: `cfg`, with what its own
        settings change in it."""
        return cfg

    def train(
        self,
        cfg: RunConfig,
        task,
        overwrite: bool,
        progress: Reporter | None,
        files: dict[str, Any],
        features: str,
    ) -> Path:
        raise NotImplementedError

    def fold_probs(
        self,
        cfg: RunConfig,
        task,
        seen: list[dict],
        held: list[dict],
        fold_model: str | None,
        features: str,
        cache: LogitCache,
    ) -> np.ndarray:
        raise NotImplementedError


class PartialInput(BiasKind):
    """A transformer fine-tuned on one side of the pair (hypothesis / claim only)."""

    name = "partial"
    fold_stages = True

    def train(self, cfg, task, overwrite, progress, files, features):
        return finetune(
            cfg.model_copy(update={"input_field": task.bias_field}),
            overwrite=overwrite,
            progress=progress,
            files=files,
        )

    def fold_probs(self, cfg, task, seen, held, fold_model, features, cache):
        return easy_hard.bias_probs(fold_model, held, cache, cfg.max_length)


class Shallow(BiasKind):
    """The task's encoder fit on a small seeded subset till over-confident (needs no known bias)."""

    # Utama et al. 2020 ("Towards debiasing NLU models from unknown biases"): a model fit on a few
    # thousand examples for a few epochs learns mostly what a shortcut gives; its confident-correct
    # examples are the easy ones. It sees the full input (both texts) and needs no `bias_field`.
    name = "shallow"
    fold_stages = True

    def params(self, settings):
        return {"subset": settings["subset"], "epochs": settings["epochs"]}

    def fit_config(self, cfg, settings):
        if not (isinstance(settings["subset"], int) and settings["subset"] >= 1):
            raise UserError(f"shallow bias model: subset {settings['subset']!r} must be >= 1")
        if not settings["epochs"] > 0:
            raise UserError(f"shallow bias model: epochs {settings['epochs']!r} must be > 0")
        # a fold model's subset is drawn from the examples its fold leaves (cv_fold, then subset)
        return cfg.model_copy(
            update={
                "input_field": None,
                "train_subset": settings["subset"],
                "epochs": float(settings["epochs"]),
            }
        )

    def train(self, cfg, task, overwrite, progress, files, features):
        return finetune(cfg, overwrite=overwrite, progress=progress, files=files)

    def fold_probs(self, cfg, task, seen, held, fold_model, features, cache):
        return easy_hard.bias_probs(fold_model, held, cache, cfg.max_length)


class Overlap(BiasKind):
    """A logistic regression on lexical-overlap features (the HANS heuristics)."""

    name = "overlap"

    def params(self, settings):
        return {"features": settings["features"]}

    def train(self, cfg, task, overwrite, progress, files, features):
        out = claim_output(cfg.output_dir, cfg.input_paths(), overwrite)
        args = cfg.data_args()
        splits = {n: s for n, s in load_eval_splits(args, task).items() if s.role != "cue"}
        model = OverlapModel.fit(
            load_train_split(args, task).examples, task.labels, features=features
        )
        tables = {
            n: prediction_table(
                s, np.log(np.clip(model.predict_proba(s.examples), 1e-12, None)), task.labels
            )
            for n, s in splits.items()
        }
        summary = summarize(
            tables,
            {n: s.role for n, s in splits.items()},
            {n: s.group_by for n, s in splits.items()},
            rule=task.delta_rule(list(splits)),
        )
        write_artifact(
            out,
            cfg=cfg,
            tables=tables,
            files={OVERLAP_FILE: model.to_json(), "summary.json": summary} | files,
        )
        return out

    def fold_probs(self, cfg, task, seen, held, fold_model, features, cache):
        return OverlapModel.fit(seen, task.labels, features=features).predict_proba(held)


BIAS_KINDS: dict[str, BiasKind] = {k.name: k() for k in (PartialInput, Overlap, Shallow)}


def bias_kind(name: str) -> BiasKind:
    if name not in BIAS_KINDS:
        raise UserError(
            f"unknown bias-model kind {name!r}: use {' or '.join(map(repr, BIAS_KINDS))}"
        )
    return BIAS_KINDS[name]


def train_bias_model(
    cfg: RunConfig,
    kind: str = "partial",
    overwrite: bool = False,
    progress: Reporter | None = None,
    easy_hard_split: str | None = None,
    files: dict[str, Any] | None = None,
    scoring: str | None = None,
    folds: int = 5,
    fold_models: list[str] | None = None,
    features: str = "basic",
    subset: int = 2000,
    epochs: float = 3.0,
) -> Path:
    """A bias-only model of a kind in `BIAS_KINDS` (`partial`: one side of the pair; `overlap`:
    lexical-overlap features; `shallow`: the full input, fit on a small subset). With
    `easy_hard_split`, the artifact also holds that split's easy/hard partition
    (`easy_hard.parquet`); with `scoring` (crossfit | insample), the training set's probabilities
    (`train_probs.parquet`, read by the known-bias losses; cross-fitting a kind that trains its
    folds as stages needs their `fold_models`). Both are written before the artifact is complete:
    no finished bias model lacks them. `features`: the overlap model's feature set; `subset`,
    `epochs`: the shallow model's seeded training subset (of `cfg`'s training examples: a fold
    model's, of those its `cv_fold` leaves) and its epochs on it."""
    spec = bias_kind(kind)
    fit = spec.fit_config(cfg, {"features": features, "subset": subset, "epochs": epochs})
    if scoring == "crossfit" and spec.fold_stages and len(fold_models or []) != folds:
        raise UserError(f"cross-fitting a {kind} bias model needs its {folds} fold models")
    task = load_task(cfg.task)
    files = dict(files or {})
    if easy_hard_split is not None:
        files = {
            "easy_hard.parquet": lambda tmp: easy_hard_frame(cfg, str(tmp), easy_hard_split)
        } | files
    if scoring is not None:  # the training set's probabilities, for the losses (before the record)
        made: dict[str, Any] = {}

        def probs(tmp: Path) -> pd.DataFrame:
            made["table"], made["record"] = bias_train_probs(
                cfg, kind, str(tmp), scoring, folds, fold_models, features
            )
            return made["table"]

        files = {TRAIN_PROBS: probs, BIAS_RECORD: lambda tmp: made["record"]} | files
    return spec.train(fit, task, overwrite, progress, files, features)


def bias_train_probs(
    cfg: RunConfig,
    kind: str,
    model_dir: str,
    scoring: str = "crossfit",
    folds: int = 5,
    fold_models: list[str] | None = None,
    features: str = "basic",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A bias model's probabilities on its training split: in-sample (the model trained on all of
    it) and, cross-fitted, out-of-fold: each example scored by the fold model that never saw it
    (Clark et al. 2019's caveat: an in-sample bias model is over-confident on its own training
    examples). Returns the table (id, text key, fold, label, insample_p<j>, crossfit_p<j>) and a
    record."""
    task = load_task(cfg.task)
    args = cfg.data_args().model_copy(update={"cv_fold": None, "train_subset": None})
    examples = load_train_split(args, task).examples
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    gold = np.array([e["label"] for e in examples])
    columns: dict[str, Any] = {
        "id": [e["id"] for e in examples],
        "key": [text_key(e) for e in examples],
        "label": gold,
    }
    probs = {"insample": easy_hard.bias_probs(model_dir, examples, cache, cfg.max_length)}
    if scoring == "crossfit":
        fold = np.array(folds_of(examples, folds, cfg.data_seed))
        out = np.zeros_like(probs["insample"])
        spec = bias_kind(kind)
        for k in range(folds):
            held = [examples[i] for i in np.flatnonzero(fold == k)]
            seen = [examples[i] for i in np.flatnonzero(fold != k)]
            out[fold == k] = spec.fold_probs(
                cfg, task, seen, held, fold_models[k] if fold_models else None, features, cache
            )
        probs["crossfit"] = out
        columns["fold"] = fold
    record: dict[str, Any] = {
        "kind": kind,
        "scoring": scoring,
        "folds": folds if scoring == "crossfit" else None,
        "n": len(examples),
    }
    for mode, p in probs.items():
        for j in range(p.shape[1]):
            columns[f"{mode}_p{j}"] = p[:, j]
        record[f"train_accuracy_{mode}"] = float((p.argmax(1) == gold).mean())
        record[f"train_confidence_gold_{mode}"] = float(p[np.arange(len(gold)), gold].mean())
    return pd.DataFrame(columns), record


def easy_hard_frame(cfg: RunConfig, bias_model: str, split_name: str) -> pd.DataFrame:
    """Easy/hard partition (id, easy) of an eval split by a bias-only model (easy = it is right)."""
    task = load_task(cfg.task)
    split = load_split(
        task, split_name, cfg.data_dir, cfg.source, limit=cfg.eval_limit, seed=cfg.data_seed
    )
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    probs = easy_hard.bias_probs(
        bias_model, split.examples, cache, cfg.max_length, task.labels, cfg.label_map
    )
    return easy_hard.easy_hard_table(split.examples, probs)


def write_easy_hard(
    cfg: RunConfig,
    bias_model: str,
    split_name: str,
    out: Path,
    models: list[Path] = (),
    overwrite: bool = False,
) -> pd.DataFrame:
    """Easy/hard partition of an eval split by a bias-only model, written to `out` (parquet);
    `models`: the evaluated folders to be scored on it (read, so never written over)."""
    read = [(bias_model, "bias model")] + [(m, "model") for m in models] + cfg.input_paths()
    claim_output(out, read, overwrite, folder=False)
    df = easy_hard_frame(cfg, bias_model, split_name)
    _write_parquet(df, Path(out))
    return df


def score_easy_hard(
    model_dirs: list[Path], split_name: str, easy: pd.DataFrame
) -> list[tuple[Path, dict[str, float]]]:
    """Each evaluated model's accuracy and confidence on the easy and the hard part of a split,
    from its saved predictions."""
    out = []
    for m in model_dirs:
        pred = Path(m) / "predictions" / f"{split_name}.parquet"
        if not pred.is_file():
            raise UserError(f"{pred}: no predictions for split {split_name!r}")
        r = easy_hard_metrics(read_parquet(pred, ("id", "correct", "confidence")), easy)
        if not r:
            raise UserError(f"{pred}: shares no example id with the easy/hard split")
        out.append((Path(m), r))
    return out


def bias_model_analysis(
    cfg: RunConfig,
    teacher_dir: Path,
    uncertainty_source: tuple[str, Path] | None,
    biases: list[tuple[str, str, str, Path]],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """How a study's bias models did: each one's accuracy, how it scored the training set, and its
    agreement with every uncertainty source the study has (its own, and the teacher's training
    dynamics when recorded) and with the other bias models. `biases`: (name, kind, stage, folder),
    the first making the study's main split; `uncertainty_source`: (source, uncertainty file).
    Returns the per-model record and the first model's agreement with the study's uncertainty."""
    examples = load_train_split(cfg.data_args().model_copy(update={"cv_fold": None})).examples
    gold = np.array([e["label"] for e in examples])
    sources: dict[str, np.ndarray] = {}
    if uncertainty_source is not None:
        sources[uncertainty_source[0]] = load_per_example(uncertainty_source[1], "v", examples)
    if uncertainty_source is None or uncertainty_source[0] != "dynamics":
        dyn = Path(teacher_dir) / uncertainty.DYNAMICS
        if dyn.is_file():
            with contextlib.suppress(
                UserError
            ):  # a teacher of one epoch, or of other examples: none
                sources["dynamics"] = uncertainty.from_dynamics(
                    pd.read_parquet(dyn), examples, "loss"
                )["v"].to_numpy()
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    easy: dict[str, np.ndarray] = {}
    record: dict[str, dict] = {}
    for name, kind, stage, path in biases:
        ctx = Context(
            labels=load_task(cfg.task).labels,
            alpha=0.5,
            cache_dir=cfg.cache_dir,
            max_length=cfg.max_length,
            batch_size=cfg.eval_batch_size,
            bf16=cfg.bf16,
        )
        try:  # what the losses read: the stage's own (cross-fitted) probabilities, else in-sample
            probs = np.stack(EXTRAS["bias_probs"].build(str(path), examples, None, ctx))
        except (
            UserError
        ):  # it was trained on other data than the compressed runs: score them in-sample
            probs = easy_hard.bias_probs(str(path), examples, cache, cfg.max_length)
        easy[name] = easy_hard.easy_mask(probs, gold)
        summary = read_json(path / "summary.json")
        p = float(easy[name].mean())
        record[name] = {
            "kind": kind,
            "stage": stage,
            "path": str(path),
            "accuracy": {
                s: v["accuracy"] for s, v in summary["splits"].items() if v.get("role") != "cue"
            },
            "training_set": read_json(path / BIAS_RECORD)
            if (path / BIAS_RECORD).is_file()
            else None,
            "train_examples_scored": len(examples),
            "easy_fraction": p,
            "chance": p * p + (1 - p) * (1 - p),
            "agreement": {src: easy_hard.agreement(v, easy[name]) for src, v in sources.items()},
        }
    for a, rec in record.items():
        rec["agreement_with_bias_models"] = {
            b: float((easy[a] == easy[b]).mean()) for b in record if b != a
        }
    first = record[biases[0][0]]
    agree = None
    if uncertainty_source is not None:
        agree = {
            "n": len(examples),
            "agreement": first["agreement"][uncertainty_source[0]],
            "bias_easy_fraction": first["easy_fraction"],
            "chance": first["chance"],
            "uncertainty": str(uncertainty_source[1]),
            "bias_model": str(biases[0][3]),
        }
    return record, agree
