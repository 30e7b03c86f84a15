import torch

from ...settings.losses import FocalSettings
from .base import Loss, gold_prob, register, weighted_ce


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
