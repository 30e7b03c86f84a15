import torch.nn.functional as F

from ...settings.losses import CESettings
from .base import Loss, register


@register
class CE(Loss):
    """Vanilla: L = CE(y, p_S)."""

    name = "ce"
    Settings = CESettings

    def forward(self, logits, batch, hidden=None):
        return F.cross_entropy(logits.float(), batch["labels"])
