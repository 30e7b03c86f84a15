from typing import Literal

import torch
from pydantic import Field

from .base import Loss, LossSettings, gold_prob, register, weighted_ce


class FocalSettings(LossSettings):
    name: Literal["focal"] = "focal"
    gamma: float = Field(2.0, ge=0, description="focal-loss exponent")


@register
class Focal(Loss):
    """Lin et al. (2017), weights normalized in the batch: w_i = (1 - p_S(y_i))^gamma (no gradient
    through w), L = sum_i w_i CE_i / sum_i w_i."""

    name = "focal"
    Settings = FocalSettings

    def forward(self, logits, batch, hidden=None):
        with torch.no_grad():
            p_y = gold_prob(torch.softmax(logits.float(), -1), batch["labels"])
        return weighted_ce(logits, batch["labels"], (1 - p_y) ** self.settings.gamma)
