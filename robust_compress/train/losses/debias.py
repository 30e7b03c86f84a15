"""Debiasing losses that read a bias-only model's probabilities (Utama et al. 2020's family)."""

import torch
import torch.nn.functional as F

from ...settings.losses import ConfRegSettings, PoESettings, ReweightSettings
from .base import Loss, gold_prob, register, smoothed_teacher, weighted_ce


@register
class Reweight(Loss):
    """Example reweighting (Clark et al. 2019):
    w_i = 1 - p_bias(y_i), L = sum_i w_i CE_i / sum_i w_i."""

    name = "reweight"
    Settings = ReweightSettings

    def forward(self, logits, batch, hidden=None):
        return weighted_ce(
            logits, batch["labels"], 1 - gold_prob(batch["bias_probs"], batch["labels"])
        )


@register
class PoE(Loss):
    """Product of experts: L = CE(y, softmax(log p_S + log p_bias)); the model alone is used at
    test time."""

    name = "poe"
    Settings = PoESettings

    def forward(self, logits, batch, hidden=None):
        combined = F.log_softmax(logits.float(), -1) + torch.log(
            batch["bias_probs"].float().clamp_min(1e-12)
        )
        return F.cross_entropy(combined, batch["labels"])


@register
class ConfReg(Loss):
    """Confidence regularization (Utama et al. 2020): the teacher scaled by d_i = 1 - p_bias(y_i),
    s_ij ∝ p_T,ij^{d_i}, L = -sum_j s_ij log p_S,ij."""

    name = "conf_reg"
    Settings = ConfRegSettings

    def forward(self, logits, batch, hidden=None):
        target = smoothed_teacher(
            batch["teacher_logits"], 1 - gold_prob(batch["bias_probs"], batch["labels"])
        )
        return -(target * F.log_softmax(logits.float(), -1)).sum(-1).mean()
