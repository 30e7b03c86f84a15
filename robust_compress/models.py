"""Load, check, truncate and save Hugging Face sequence-classification models."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from .io import UserError


def _is_classifier(config) -> bool:
    return any("ForSequenceClassification" in a for a in (config.architectures or []))


def load_model(name_or_path: str, labels: list[str], dropout: float | None = None) -> PreTrainedModel:
    """A classifier over `labels`; a fine-tuned model must already have exactly these labels."""
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as e:
        raise UserError(f"{name_or_path}: cannot load model config ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    if _is_classifier(config):
        have = [config.id2label[i] for i in range(config.num_labels)]
        if have != list(labels):
            raise UserError(f"{name_or_path}: model has {config.num_labels} labels {have}, "
                            f"but the task has {len(labels)} labels {list(labels)}")
    kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {name: i for i, name in enumerate(labels)}}
    if dropout is not None:
        kwargs.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    from . import heads  # noqa: F401  registers the head-pruned model type with Auto classes

    model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
    return model


def load_tokenizer(name_or_path: str, model: PreTrainedModel | None = None):
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise UserError(f"{name_or_path}: cannot load tokenizer ({str(e).splitlines()[0]})") from None
    if model is not None:
        vocab = model.get_input_embeddings().num_embeddings
        if len(tok) > vocab:
            raise UserError(f"{name_or_path}: tokenizer has {len(tok)} tokens but the model's embedding "
                            f"has {vocab}: tokenizer and model do not match")
    return tok


def truncate_layers(model: PreTrainedModel, k: int) -> PreTrainedModel:
    """Keep the first k encoder layers (the paper's truncated-lk student)."""
    layers = model.base_model.encoder.layer
    if not 1 <= k <= len(layers):
        raise UserError(f"cannot keep {k} layers of a {len(layers)}-layer model")
    model.base_model.encoder.layer = torch.nn.ModuleList(list(layers)[:k])
    model.config.num_hidden_layers = k
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameters."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p).item())
    return total, nonzero


def save_model(model: PreTrainedModel, tokenizer, folder: Path) -> None:
    """Hugging Face format with safetensors weights (loadable without running any code)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def set_threads() -> None:
    """Use every core for intra-op work unless the user pinned OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
