"""What a study may name, and what each name implies, read from the registries below the study
layer: losses (the per-example inputs each needs, and which stage provides each), compression
methods (their settings, whether they train), uncertainty sources, bias-model kinds, stage kinds."""

from __future__ import annotations

from typing import Any

from ..compress import METHODS
from ..config import LOSS_NAMES, METHOD_NAMES
from ..models.runtimes import RUNTIMES
from ..train.extras import EXTRAS
from ..train.losses import REGISTRY as LOSSES
from .kinds import KINDS
from .shortcut import BIAS_KINDS
from .sources import SOURCES

__all__ = [
    "BIAS_KINDS",
    "KINDS",
    "LOSS_NAMES",
    "METHOD_NAMES",
    "RUNTIMES",
    "SOURCES",
    "input_source",
    "loss_config",
    "loss_needs",
    "method_config",
    "method_reads_training_data",
    "method_trains",
]


def loss_needs(loss: str) -> tuple[str, ...]:
    """The per-example inputs a loss reads (teacher_logits, difficulty, weight, bias_probs)."""
    return LOSSES[loss].needs


def input_source(need: str) -> str:
    """The `Inputs` field a loss input is read from: teacher, uncertainty, reference_model,
    bias_model."""
    return EXTRAS[need].source


def loss_config(loss: str, settings: dict[str, Any]):
    """A loss's typed settings (raises pydantic's ValidationError)."""
    return LOSSES[loss].Settings.model_validate({"name": loss, **settings})


def method_config(method: str, settings: dict[str, Any]):
    """A compression method's typed settings (raises pydantic's ValidationError)."""
    return METHODS[method].Config.model_validate({"method": method, **settings})


def method_trains(method: str) -> bool:
    return METHODS[method].trains


def method_reads_training_data(method: str) -> bool:
    """A method that trains, or that reads training examples without training (Fisher pruning)."""
    return METHODS[method].reads_training_data()
