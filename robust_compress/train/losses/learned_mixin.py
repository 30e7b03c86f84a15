import torch
import torch.nn.functional as F
from torch import nn

from ...settings.losses import LearnedMixinSettings
from .base import Loss, register


@register
class LearnedMixin(Loss):
    """Learned-mixin +H (Clark et al. 2019): a learned, input-dependent scale on the bias model,
    g(x) = softplus(w . h_x + b) with h_x the encoder's [CLS] hidden state,
    L = CE(y, softmax(log p_S + g(x) log p_bias)) + entropy_weight * H(softmax(g(x) log p_bias)).
    w and b are this loss's own parameters (trained with the model, not saved with it); at test
    time the model alone predicts."""

    name = "learned_mixin"
    Settings = LearnedMixinSettings
    needs_hidden = "cls"

    def __init__(self, settings, hidden_size: int = 0, num_labels: int = 0, **kw):
        super().__init__(settings, hidden_size, num_labels, **kw)
        if hidden_size <= 0:
            raise ValueError("learned_mixin needs the model's hidden size")
        self.gate = nn.Linear(hidden_size, 1)

    def forward(self, logits, batch, hidden=None):
        g = F.softplus(self.gate(hidden.float())).squeeze(-1)  # [batch], >= 0
        scaled_bias = g[:, None] * torch.log(batch["bias_probs"].float().clamp_min(1e-12))
        loss = F.cross_entropy(F.log_softmax(logits.float(), -1) + scaled_bias, batch["labels"])
        if self.settings.entropy_weight:
            p = torch.softmax(scaled_bias, -1)
            entropy = -(p * torch.log_softmax(scaled_bias, -1)).sum(-1).mean()
            loss = loss + self.settings.entropy_weight * entropy
        return loss
