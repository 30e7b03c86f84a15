from __future__ import annotations

from typing import Literal

from .base import Method, MethodConfig


class DistillConfig(MethodConfig):
    method: Literal["distill"] = "distill"


class Distill(Method):
    """A smaller pretrained student (the run's `model`, any family and tokenizer, same labels)
    trained under any loss; a teacher-distillation loss (kd, distil, rmc, ...) brings the teacher
    in."""

    name = "distill"
    Config = DistillConfig
