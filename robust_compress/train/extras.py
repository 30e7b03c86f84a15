"""Per-example loss inputs: what each is, where it comes from, and how it is built.

A loss lists the inputs it needs (`needs`, declared with its Settings in `settings/losses.py`);
which `Inputs` field points at each one's source (a model folder or a file) is one torch-free table,
`settings.inputs.INPUT_SOURCES`, read by the config check ("loss rmc needs inputs.uncertainty") and
by the builders here, which read each input's raw values from its source; the loss then prepares
them itself (`Loss.prepare`: RMC turns uncertainty into difficulty, JTT the first model's errors
into weights). Which study stage produces each source is the study's business (`study/plan.py`).

Most inputs are per-example tensors, built once and carried by the dataset. A *live* input is built
once as a function of a training batch (a frozen teacher whose hidden states layer distillation
matches): the loop calls it on each batch and puts its result in the batch under its name, so a loss
reads both kinds alike and the loop stays the one loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.load import text_key
from ..io import UserError, read_json, read_parquet
from ..metrics import softmax
from ..models.infer import model_inputs
from ..models.load import load_model, load_tokenizer, model_labels, resolve_model_dir, vocab_digest
from ..models.overlap import is_overlap_model
from ..settings.inputs import INPUT_SOURCES, Inputs
from .logit_cache import LogitCache
from .losses import REGISTRY, LossSettings


@dataclass(frozen=True)
class Context:
    """What a builder may need besides the source: the run's caching and tokenization, and the
    task."""

    labels: list[str]
    alpha: float  # the task's RMC difficulty floor
    cache_dir: str
    max_length: int
    batch_size: int = 64
    bf16: bool = False
    label_map: dict[str, str] | None = None  # for a given model whose label names need it (LABEL_k)
    student_vocab: str | None = (
        None  # the student tokenizer's vocabulary digest (a live teacher must share it)
    )


Builder = Callable[[str, list[dict], LossSettings, Context], list[torch.Tensor]]


@dataclass(frozen=True)
class Extra:
    source: str  # field of `Inputs` (settings.inputs.INPUT_SOURCES)
    build: Builder  # the raw per-example values (the loss's `prepare` makes its input of them)
    live: bool = False  # built as a function of each batch (`Live`), not as per-example tensors


class Live:
    """A live input: called by the loop on every training batch (already on its device)."""

    def __call__(self, batch: dict[str, torch.Tensor]) -> object:
        raise NotImplementedError


class LiveTeacher(Live):
    """The teacher run on each batch, frozen and in eval mode (no dropout, no gradient): the hidden
    states of its embeddings and of every layer (HF's `hidden_states`)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval().requires_grad_(False)
        self.hidden_size = model.config.hidden_size

    @torch.no_grad()
    def __call__(self, batch):
        device = batch["input_ids"].device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        return self.model(
            **model_inputs(self.model, batch), output_hidden_states=True
        ).hidden_states


def load_per_example(path: str | Path, column: str, examples: list[dict]) -> np.ndarray:
    """Look up a per-example column by id; every training example must be covered."""
    path = Path(path)
    df = read_parquet(path)
    if "id" not in df or column not in df:
        raise UserError(f"{path}: needs columns 'id' and {column!r}, has {list(df.columns)}")
    table = dict(zip(df["id"].astype(str), df[column], strict=True))
    missing = [e["id"] for e in examples if e["id"] not in table]
    if missing:
        raise UserError(
            f"{path}: no {column!r} for {len(missing)} training examples (first: {missing[0]}); "
            "compute it on the same training data (train_limit, data_seed)"
        )
    return np.array([table[e["id"]] for e in examples], dtype=np.float64)


def _logits(source: str, examples: list[dict], ctx: Context) -> np.ndarray:
    """A model's logits in the task's label order (its rows matched by name or `label_map`)."""
    return LogitCache(ctx.cache_dir, ctx.batch_size, ctx.bf16).get(
        source, examples, ctx.max_length, labels=ctx.labels, label_map=ctx.label_map
    )


def _probs(source: str, examples: list[dict], ctx: Context) -> np.ndarray:
    return softmax(_logits(source, examples, ctx).astype(np.float64))


def _teacher_logits(source, examples, settings, ctx):
    if not is_overlap_model(source) and not model_labels(resolve_model_dir(source)):
        raise UserError(
            f"{source}: the teacher is not a fine-tuned classifier (its config names no labels)"
        )
    logits = _logits(source, examples, ctx)  # refuses labels that cannot be matched to the task's
    return list(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)))


def _uncertainty(source, examples, settings, ctx):
    return list(torch.tensor(load_per_example(source, "v", examples)))


def _reference_probs(source, examples, settings, ctx):
    return list(torch.tensor(_probs(source, examples, ctx), dtype=torch.float64))


TRAIN_PROBS, BIAS_RECORD = (
    "train_probs.parquet",
    "bias.json",
)  # written by stages.shortcut (a bias stage)


def _stored_bias_probs(source: Path, examples: list[dict]) -> np.ndarray:
    """A bias stage's own training-set probabilities (cross-fitted by default), looked up by id;
    each must have been computed on the very text this run trains on (same data, same cue)."""
    scoring = read_json(source / BIAS_RECORD)["scoring"]
    df = read_parquet(source / TRAIN_PROBS, ("id", "key"))
    cols = sorted(
        (c for c in df.columns if c.startswith(f"{scoring}_p")),
        key=lambda c: int(c.rsplit("p", 1)[1]),
    )
    rows = {i: r for r, i in enumerate(df["id"].astype(str))}
    missing = [e["id"] for e in examples if e["id"] not in rows]
    if missing:
        raise UserError(
            f"{source / TRAIN_PROBS}: no bias probabilities for {len(missing)} training examples "
            f"(first: {missing[0]}): train the bias model on a superset of this run's data"
        )
    idx = np.array([rows[e["id"]] for e in examples])
    stale = [
        e["id"]
        for e, k in zip(examples, df["key"].to_numpy()[idx], strict=True)
        if text_key(e) != k
    ]
    if stale:
        raise UserError(
            f"{source / TRAIN_PROBS}: the bias model scored other texts for {len(stale)} of these "
            f"ids (first: {stale[0]}): other data or a cue drawn per position (use cue.per_example)"
        )
    return df[cols].to_numpy(np.float64)[idx]


def _bias_probs(source, examples, settings, ctx):
    stored = Path(source) / TRAIN_PROBS
    # a stage's own (cross-fitted) training-set probabilities; else a transformer's classes, matched
    # to the task's in _probs
    p = (
        _stored_bias_probs(Path(source), examples)
        if stored.is_file()
        else _probs(source, examples, ctx)
    )
    if p.shape[1] != len(ctx.labels):
        raise UserError(
            f"{source}: bias model has {p.shape[1]} classes, the task has {len(ctx.labels)}"
        )
    return list(torch.tensor(p, dtype=torch.float32))


def _live_teacher(source, examples, settings, ctx):
    if not model_labels(resolve_model_dir(source)):
        raise UserError(
            f"{source}: the teacher is not a fine-tuned classifier (its config names no labels)"
        )
    model = load_model(
        str(source), ctx.labels, label_map=ctx.label_map
    )  # refuses labels it cannot match
    if (
        ctx.student_vocab is not None
        and vocab_digest(load_tokenizer(str(source), model)) != ctx.student_vocab
    ):
        raise UserError(
            f"{source}: loss {settings.name!r} runs the teacher on the student's tokens, but its "
            "tokenizer has another vocabulary (use a teacher sharing the student's tokenizer)"
        )
    return LiveTeacher(model)


_BUILDERS: dict[str, tuple[Builder, bool]] = {  # input -> its builder, live or not
    "teacher_logits": (_teacher_logits, False),
    "teacher_hidden": (_live_teacher, True),
    "difficulty": (_uncertainty, False),
    "weight": (_reference_probs, False),
    "bias_probs": (_bias_probs, False),
}
if set(_BUILDERS) != set(INPUT_SOURCES):
    raise ImportError("train.extras builds other inputs than settings.inputs.INPUT_SOURCES names")
EXTRAS: dict[str, Extra] = {
    name: Extra(INPUT_SOURCES[name], build, live) for name, (build, live) in _BUILDERS.items()
}


def _build(
    settings: LossSettings, inputs: Inputs, examples: list[dict], ctx: Context, live: bool
) -> dict:
    out = {}
    for name in REGISTRY[settings.name].needs:
        extra = EXTRAS[name]
        if extra.live != live:
            continue
        source = getattr(inputs, extra.source)
        if source is None:
            raise UserError(f"loss {settings.name!r} needs inputs.{extra.source}")
        raw = extra.build(source, examples, settings, ctx)
        out[name] = (
            raw
            if live
            else REGISTRY[settings.name].prepare(name, raw, examples, settings, ctx.alpha)
        )
    return out


def build_extras(
    settings: LossSettings, inputs: Inputs, examples: list[dict], ctx: Context
) -> dict[str, list]:
    """Every per-example tensor the configured loss needs, in the examples' order."""
    return _build(settings, inputs, examples, ctx, live=False)


def build_live(settings: LossSettings, inputs: Inputs, ctx: Context) -> dict[str, Live]:
    """Every live input the configured loss needs (the loop calls each on every batch)."""
    return _build(settings, inputs, [], ctx, live=True)
