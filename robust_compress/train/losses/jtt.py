from typing import Literal

import torch
from pydantic import Field

from .base import Loss, LossSettings, register, weighted_ce


class JTTSettings(LossSettings):
    name: Literal["jtt"] = "jtt"
    upweight: float = Field(2.0, ge=1, description="weight of the first model's training errors")


@register
class JTT(Loss):
    """Just Train Twice (Liu et al. 2021): w_i = upweight if the first (vanilla) model got training
    example i wrong, else 1; L = sum_i w_i CE_i / sum_i w_i."""

    name = "jtt"
    Settings = JTTSettings
    needs = ("weight",)

    @classmethod
    def prepare(cls, name, raw, examples, settings, task_alpha):
        # from the first model's probabilities: up-weight the training examples it got wrong
        wrong = torch.stack(raw).argmax(1) != torch.tensor([e["label"] for e in examples])
        return list(torch.where(wrong, settings.upweight, 1.0).float())

    def forward(self, logits, batch, hidden=None):
        return weighted_ce(logits, batch["labels"], batch["weight"])
