"""What a compression method is: a config (one member of the discriminated union on `method`), a
check against the start model before any work, a preparation that changes the model and returns
the loop's hooks, and a record of what it did. Adding a method: one module and one registry line
in `compress/__init__.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from ..data.batching import EncodedSplit
from ..train.loop import Hook

SnapshotFn = Callable[[float, torch.nn.Module], None]


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    method: str


@dataclass
class Prepare:
    """What a method may use to prepare a model: the tokenized training data and the run's seed."""

    data: EncodedSplit
    seed: int
    on_snapshot: SnapshotFn | None = None


class Method:
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    trains: ClassVar[bool] = True  # False: post-training only (quantization), no loop and no loss

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    def check(self, model_config) -> None:
        """Refuse settings the start model cannot take (too many heads, layers), from its config alone."""

    def prepare(self, model: torch.nn.Module, ctx: Prepare) -> tuple[torch.nn.Module, list[Hook]]:
        return model, []

    def record(self, model: torch.nn.Module) -> dict[str, Any]:
        """What the method did, measured on the final model (sparsity, heads removed, ...)."""
        return {}
