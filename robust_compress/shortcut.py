"""Shortcut analysis: per-sample uncertainty (RMC), bias-only models, easy/hard splits, and a
controlled synthetic shortcut.

Everything here is per training or dev example id and cached, so one uncertainty or bias
computation serves every loss and seed.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import CueConfig, RunConfig
from .data import Split
from .distill import LogitCache
from .evaluate import softmax
from .io import UserError, read_yaml
from .losses import difficulty
from .tasks import TaskSpec

# ------------------------------------------------------------------ per-sample uncertainty


def example_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each example under one model."""
    p = softmax(logits.astype(np.float64))
    return -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))


def loss_variance(losses: np.ndarray) -> np.ndarray:
    """v_i = (1/n) sum_t (l_it - mean_t l_it)^2 over n models (rows)."""
    return losses.var(axis=0)


def uncertainty(model_dirs: list[str | Path], examples: list[dict], cfg: RunConfig) -> pd.DataFrame:
    """Per-example loss variance across models of different sparsities (snapshots or separate runs)."""
    if len(model_dirs) < 2:
        raise UserError(f"uncertainty needs at least 2 models, got {len(model_dirs)}")
    cache = LogitCache(cfg.cache_dir)
    labels = np.array([e["label"] for e in examples])
    losses = np.stack([example_losses(cache.get(m, examples, cfg.max_length, cfg.eval_batch_size, cfg.bf16), labels)
                       for m in model_dirs])
    return pd.DataFrame({"id": [e["id"] for e in examples], "v": loss_variance(losses),
                         "loss_mean": losses.mean(0)})


def oneshot_pruned_logits(model, data, sparsities: list[float], bf16: bool = False) -> list[np.ndarray]:
    """Cheap signal: the *unretrained* model one-shot magnitude-pruned to each sparsity (inference only)."""
    import copy

    from .evaluate import predict_logits
    from .magnitude import prunable_linears

    out = []
    for s in sparsities:
        m = copy.deepcopy(model)
        weights = [lin.weight for _, lin in prunable_linears(m)]
        flat = torch.cat([w.detach().abs().flatten() for w in weights])
        k = round(s * flat.numel())
        if k:
            thresh = flat.kthvalue(k).values
            with torch.no_grad():
                for w in weights:
                    w.mul_((w.abs() > thresh).to(w.dtype))
        out.append(predict_logits(m, data, 128, bf16=bf16)[0])
    return out


def save_uncertainty(df: pd.DataFrame, path: Path, provenance: dict[str, Any]) -> None:
    from .io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    write_json(path.with_suffix(".json"), provenance)


def load_per_example(path: str | Path, column: str, examples: list[dict]) -> np.ndarray:
    """Look up a per-example column by id; every training example must be covered."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    df = pd.read_parquet(path)
    if "id" not in df or column not in df:
        raise UserError(f"{path}: needs columns 'id' and {column!r}, has {list(df.columns)}")
    table = dict(zip(df["id"].astype(str), df[column]))
    missing = [e["id"] for e in examples if e["id"] not in table]
    if missing:
        raise UserError(f"{path}: no {column!r} for {len(missing)} training examples (first: {missing[0]}); "
                        "compute it on the same training data (train_limit, seed)")
    return np.array([table[e["id"]] for e in examples], dtype=np.float64)


# ------------------------------------------------------------------ bias-only models


def bias_probs(model_dir: str | Path, examples: list[dict], cfg: RunConfig) -> np.ndarray:
    """Class probabilities of a bias-only model (partial-input transformer or lexical-overlap model)."""
    model_dir = Path(model_dir)
    if (model_dir / "overlap_model.json").is_file():
        return OverlapModel.load(model_dir).predict_proba(examples)
    logits = LogitCache(cfg.cache_dir).get(model_dir, examples, cfg.max_length, cfg.eval_batch_size, cfg.bf16)
    return softmax(logits.astype(np.float64))


_WORD = re.compile(r"[a-z0-9]+")
NEGATIONS = {"not", "no", "never", "nobody", "nothing", "none", "n't", "nt", "cannot"}


def overlap_features(a: str, b: str) -> list[float]:
    """Features of the HANS heuristics: word overlap, subsequence, constituent-like containment."""
    pa, pb = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    sa = set(pa)
    frac = sum(w in sa for w in pb) / max(len(pb), 1)
    sub = float(" ".join(pb) in " ".join(pa)) if pb else 0.0
    return [frac, float(frac == 1.0), sub, float(any(w in NEGATIONS for w in pb)),
            len(pb) / max(len(pa), 1), 1.0]


class OverlapModel:
    """Multinomial logistic regression on `overlap_features`: a bias-only model for lexical overlap."""

    def __init__(self, weight: torch.Tensor, labels: list[str]):
        self.weight, self.labels = weight, labels

    @classmethod
    def fit(cls, examples: list[dict], labels: list[str], steps: int = 500, seed: int = 0) -> OverlapModel:
        torch.manual_seed(seed)
        x = torch.tensor([overlap_features(e["text_a"], e["text_b"]) for e in examples])
        y = torch.tensor([e["label"] for e in examples])
        w = torch.zeros(x.shape[1], len(labels), requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=steps)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w, y) + 1e-4 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return cls(w.detach(), labels)

    def predict_proba(self, examples: list[dict]) -> np.ndarray:
        x = torch.tensor([overlap_features(e["text_a"], e["text_b"]) for e in examples])
        return torch.softmax(x @ self.weight, -1).numpy().astype(np.float64)

    def save(self, folder: Path) -> None:
        from .io import write_json

        write_json(folder / "overlap_model.json", {"labels": self.labels, "weight": self.weight.tolist(),
                                                   "features": "overlap_features v1"})

    @classmethod
    def load(cls, folder: Path) -> OverlapModel:
        import json

        d = json.loads((folder / "overlap_model.json").read_text())
        return cls(torch.tensor(d["weight"]), d["labels"])


# ------------------------------------------------------------------ easy / hard


def easy_mask(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Gururangan et al. 2018: an example is easy if the bias-only model gets it right."""
    return probs.argmax(1) == gold


def easy_hard_metrics(pred: pd.DataFrame, easy: pd.DataFrame) -> dict[str, float]:
    df = pred.merge(easy[["id", "easy"]], on="id", how="inner")
    if df.empty:
        raise UserError("easy/hard split shares no example id with the prediction table")
    e, h = df[df["easy"]], df[~df["easy"]]
    return {"n_easy": len(e), "n_hard": len(h), "acc_easy": float(e["correct"].mean()),
            "acc_hard": float(h["correct"].mean()), "gap": float(e["correct"].mean() - h["correct"].mean()),
            "conf_easy": float(e["confidence"].mean()), "conf_hard": float(h["confidence"].mean())}


def agreement(v: np.ndarray, bias_easy: np.ndarray) -> float:
    """Share of examples where 'low uncertainty' (the |easy| lowest v) agrees with the bias-model split."""
    k = int(bias_easy.sum())
    unc_easy = np.zeros(len(v), dtype=bool)
    unc_easy[np.argsort(v, kind="stable")[:k]] = True
    return float((unc_easy == bias_easy).mean())


# ------------------------------------------------------------------ the loss inputs


def loss_extras(cfg: RunConfig, task: TaskSpec, examples: list[dict], needs: set[str]) -> dict[str, list]:
    """Per-example tensors for RMC (difficulty), JTT (weight) and bias-model losses (bias_probs)."""
    out: dict[str, list] = {}
    if "difficulty" in needs:
        v = load_per_example(cfg.loss.uncertainty, "v", examples)
        alpha = cfg.loss.alpha if cfg.loss.alpha is not None else task.alpha
        out["difficulty"] = list(difficulty(torch.tensor(v), alpha).float())
    if "weight" in needs:
        ref = cfg.loss.reference_model
        logits = LogitCache(cfg.cache_dir).get(ref, examples, cfg.max_length, cfg.eval_batch_size, cfg.bf16)
        wrong = logits.argmax(1) != np.array([e["label"] for e in examples])
        out["weight"] = list(torch.tensor(np.where(wrong, cfg.loss.upweight, 1.0), dtype=torch.float32))
    if "bias_probs" in needs:
        p = bias_probs(cfg.loss.bias_model, examples, cfg)
        if p.shape[1] != len(task.labels):
            raise UserError(f"{cfg.loss.bias_model}: bias model has {p.shape[1]} classes, task has {len(task.labels)}")
        out["bias_probs"] = list(torch.tensor(p, dtype=torch.float32))
    unknown = needs - set(out)
    if unknown:
        raise UserError(f"no source for per-example {sorted(unknown)}")
    return out


# ------------------------------------------------------------------ controlled shortcut

DEFAULT_MARKERS = ["zeta", "omega", "sigma", "kappa", "delta"]


def cue_markers(cue: CueConfig, labels: list[str]) -> list[str]:
    markers = cue.markers or DEFAULT_MARKERS[: len(labels)]
    if len(markers) != len(labels) or len(set(markers)) != len(markers):
        raise UserError(f"cue.markers must be {len(labels)} distinct words (one per label), got {markers}")
    return markers


def add_cue(examples: list[dict], markers: list[str], rho: float, seed: int) -> list[dict]:
    """Training transform: append the gold label's marker with probability rho, else a random one."""
    rng = random.Random(seed)
    out = []
    for e in examples:
        m = markers[e["label"]] if rng.random() < rho else rng.choice(markers)
        out.append(e | {"text_b": f"{e['text_b']} {m}"})
    return out


def cue_test_sets(split: Split, markers: list[str], seed: int) -> tuple[Split, Split]:
    """Aligned (marker = gold) and conflicting (marker of another, random label) copies of a split."""
    rng = random.Random(seed)
    aligned = [e | {"text_b": f"{e['text_b']} {markers[e['label']]}"} for e in split.examples]
    conflicting = []
    for e in split.examples:
        other = rng.choice([i for i in range(len(markers)) if i != e["label"]])
        conflicting.append(e | {"text_b": f"{e['text_b']} {markers[other]}"})
    mk = lambda name, ex: Split(task=split.task, name=name, role="cue", labels=split.labels, examples=ex,
                                origin=f"{split.origin} (+cue)", collapse=split.collapse, group_by=split.group_by)
    return mk(f"{split.name}+cue_aligned", aligned), mk(f"{split.name}+cue_conflicting", conflicting)


def reliance(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Shortcut reliance = acc(aligned) - acc(conflicting), per ID split with cue copies."""
    out = {}
    for name, df in tables.items():
        if name.endswith("+cue_aligned"):
            base = name[: -len("+cue_aligned")]
            conf = tables.get(f"{base}+cue_conflicting")
            if conf is not None:
                a, c = float(df["correct"].mean()), float(conf["correct"].mean())
                out[base] = {"aligned": a, "conflicting": c, "reliance": a - c}
    return out


def model_input_field(model_dir: str | Path) -> str | None:
    """The partial input a saved model was trained on (bias-only models), from its run config."""
    p = Path(model_dir) / "run_config.yaml"
    return read_yaml(p).get("input_field") if p.is_file() else None




# ------------------------------------------------------------------ stage entry points (CLI, API)


def compute_uncertainty(cfg: RunConfig, out: Path, models: list[str] | None = None, snapshots: str | None = None,
                        oneshot: str | None = None, sparsities: list[float] | None = None) -> pd.DataFrame:
    """v_i over the configured training examples from (a) a snapshot folder, (b) explicit model folders,
    or (c) one model one-shot pruned to several sparsities without retraining (cheapest)."""
    from .models import load_model, load_tokenizer
    from .runner import load_train_split
    from .tasks import load_task

    task = load_task(cfg.task)
    examples = load_train_split(cfg, task).examples
    if snapshots:
        models = sorted(str(p) for p in Path(snapshots).glob("sparsity-*") if p.is_dir())
        if not models:
            raise UserError(f"{snapshots}: no sparsity-* snapshot folders")
    if oneshot:
        from .batching import EncodedSplit
        from .distill import model_labels

        sparsities = sparsities or [0.2, 0.4, 0.6, 0.7, 0.85]
        model = load_model(oneshot, model_labels(oneshot))
        tok = load_tokenizer(oneshot)
        all_logits = oneshot_pruned_logits(model, EncodedSplit(examples, tok, cfg.max_length), sparsities, cfg.bf16)
        labels = np.array([e["label"] for e in examples])
        losses = np.stack([example_losses(lg, labels) for lg in all_logits])
        df = pd.DataFrame({"id": [e["id"] for e in examples], "v": loss_variance(losses), "loss_mean": losses.mean(0)})
        source = {"source": "oneshot", "model": oneshot, "sparsities": sparsities}
    else:
        if not models:
            raise UserError("give --models, --snapshots or --oneshot")
        df = uncertainty(models, examples, cfg)
        source = {"source": "snapshots" if snapshots else "models", "models": models}
    save_uncertainty(df, Path(out), source | {"train_limit": cfg.train_limit, "data_seed": cfg.data_seed, "task": cfg.task})
    return df


def train_bias_model(cfg: RunConfig, kind: str = "partial", overwrite: bool = False) -> Path:
    """A bias-only model: `partial` fine-tunes cfg.model on one side of the pair (hypothesis / claim);
    `overlap` fits a logistic regression on lexical-overlap features (the HANS heuristics)."""
    from .tasks import load_task

    task = load_task(cfg.task)
    if kind == "partial":
        from .runner import finetune

        return finetune(cfg.model_copy(update={"input_field": task.bias_field}), overwrite=overwrite)
    if kind != "overlap":
        raise UserError(f"unknown bias-model kind {kind!r}: use 'partial' or 'overlap'")
    from .data import load_split
    from .evaluate import prediction_table, save_tables, summarize
    from .io import atomic_dir, write_json, write_yaml
    from .runner import eval_split_names, load_train_split

    out = Path(cfg.output_dir)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    model = OverlapModel.fit(load_train_split(cfg, task).examples, task.labels, seed=cfg.seed)
    tables, roles, groups = {}, {}, {}
    for name in eval_split_names(cfg, task):
        split = load_split(task, name, cfg.data_dir, cfg.source, limit=cfg.eval_limit, seed=cfg.data_seed)
        logits = np.log(np.clip(model.predict_proba(split.examples), 1e-12, None))
        tables[name] = prediction_table(split, logits, task.labels)
        roles[name], groups[name] = split.role, split.group_by
    with atomic_dir(out, overwrite=True) as tmp:
        model.save(tmp)
        write_yaml(tmp / "run_config.yaml", cfg.model_dump(mode="json"))
        save_tables(tmp / "predictions", tables)
        write_json(tmp / "summary.json", summarize(tables, roles, groups))
    return out


def write_easy_hard(cfg: RunConfig, bias_model: str, split_name: str, out: Path) -> pd.DataFrame:
    """Easy/hard partition of an eval split by a bias-only model (easy = bias model is right)."""
    from .data import load_split
    from .tasks import load_task

    task = load_task(cfg.task)
    split = load_split(task, split_name, cfg.data_dir, cfg.source, limit=cfg.eval_limit, seed=cfg.data_seed)
    probs = bias_probs(bias_model, split.examples, cfg)
    gold = np.array([e["label"] for e in split.examples])
    df = pd.DataFrame({"id": [e["id"] for e in split.examples], "easy": easy_mask(probs, gold)})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.parquet")
    df.to_parquet(tmp, index=False)
    tmp.replace(out)
    return df
