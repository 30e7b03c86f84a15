"""What a compression method is: a config (one member of the discriminated union on `method`), a
check against the start model before any work, a preparation that changes the model and returns
the loop's hooks, and a record of what it did. The config is declared torch-free in
`settings/methods.py` (with its line in `METHOD_CONFIGS`); the method is one module here and one
registry line in `compress/__init__.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..data.batching import EncodedSplit
from ..settings.methods import MethodConfig
from ..train.loop import Hook

SnapshotFn = Callable[[float, torch.nn.Module], None]


@dataclass
class Prepare:
    """What a method may use to prepare a model: the tokenized training data (None for a method that
    reads none) and the run's seed."""

    data: EncodedSplit | None
    seed: int
    on_snapshot: SnapshotFn | None = None
    cache_dir: str | None = (
        None  # reusable measurements (latency tables), keyed by what they depend on
    )


class Method:
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    trains: ClassVar[bool] = (
        True  # False: post-training only (quantization, Fisher pruning), no loop, no loss
    )
    needs_data: ClassVar[bool | None] = None  # reads the training split (default: when it trains)

    @classmethod
    def reads_training_data(cls) -> bool:
        return cls.trains if cls.needs_data is None else cls.needs_data

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    def check(self, model_config) -> None:
        """Refuse settings the start model cannot take (too many heads, layers), from its config
        alone."""

    def prepare(self, model: torch.nn.Module, ctx: Prepare) -> tuple[torch.nn.Module, list[Hook]]:
        return model, []

    def apply(self, model: torch.nn.Module, ctx: Prepare) -> torch.nn.Module:
        """A method that does not train (`trains = False`): the compressed model, evaluated and
        saved as is."""
        raise NotImplementedError(f"method {self.name!r} trains: use prepare()")

    def extra_work(self, n_train: int, layers: int) -> dict[str, float]:
        """Examples the method itself trains on / scores besides the loop (a study's time
        estimate)."""
        return {}

    def record(self, model: torch.nn.Module) -> dict[str, Any]:
        """What the method did, measured on the final model (sparsity, heads removed, ...)."""
        return {}
