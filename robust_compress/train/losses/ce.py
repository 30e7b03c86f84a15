from typing import Literal

import torch.nn.functional as F

from .base import Loss, LossSettings, register


class CESettings(LossSettings):
    name: Literal["ce"] = "ce"


@register
class CE(Loss):
    """Vanilla: L = CE(y, p_S)."""

    name = "ce"
    Settings = CESettings

    def forward(self, logits, batch, hidden=None):
        return F.cross_entropy(logits.float(), batch["labels"])
