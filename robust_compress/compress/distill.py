from __future__ import annotations

from ..settings.methods import DistillConfig
from .base import Method


class Distill(Method):
    """A smaller pretrained student (the run's `model`, any family and tokenizer, same labels)
    trained under any loss; a teacher-distillation loss (kd, distil, rmc, ...) brings the teacher
    in."""

    name = "distill"
    Config = DistillConfig
