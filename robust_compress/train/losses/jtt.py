import torch

from ...settings.losses import JTTSettings
from .base import Loss, register, weighted_ce


@register
class JTT(Loss):
    """Just Train Twice (Liu et al. 2021): w_i = upweight if the first (vanilla) model got training
    example i wrong, else 1; L = sum_i w_i CE_i / sum_i w_i."""

    name = "jtt"
    Settings = JTTSettings

    @classmethod
    def prepare(cls, name, raw, examples, settings, task_alpha):
        # from the first model's probabilities: up-weight the training examples it got wrong
        wrong = torch.stack(raw).argmax(1) != torch.tensor([e["label"] for e in examples])
        return list(torch.where(wrong, settings.upweight, 1.0).float())

    def forward(self, logits, batch, hidden=None):
        return weighted_ce(logits, batch["labels"], batch["weight"])
