import torch

from ...settings.losses import RMCSettings
from .base import Loss, kd_loss, register, smoothed_teacher


def difficulty(v: torch.Tensor, alpha: float) -> torch.Tensor:
    """d_i = alpha + (1 - alpha)(v_i - V_min)/(V_max - V_min), in [alpha, 1];
    all 1 if v is constant."""
    v = v.float()
    span = v.max() - v.min()
    if span <= 0:
        return torch.ones_like(v)
    return alpha + (1 - alpha) * (v - v.min()) / span


@register
class RMC(Loss):
    """Du et al. (2023): per-example smoothing of the teacher by its uncertainty,
    s_ij ∝ p_T,ij^{d_i} with d_i from `difficulty(v, alpha)`,
    L = (1 - lam) CE(y, p_S) + lam KL(s_i || p_S,i)."""

    name = "rmc"
    Settings = RMCSettings

    @classmethod
    def prepare(cls, name, raw, examples, settings, task_alpha):
        if name != "difficulty":  # from the per-example uncertainty v
            return raw
        alpha = task_alpha if settings.alpha is None else settings.alpha
        return list(difficulty(torch.stack(raw), alpha).float())

    def forward(self, logits, batch, hidden=None):
        target = smoothed_teacher(batch["teacher_logits"], batch["difficulty"])
        return kd_loss(logits, batch["labels"], target, self.settings.lam)
