"""Every training objective behind one signature: loss(logits, batch) -> scalar.

`batch` carries `labels` and, when a loss needs them, per-example extras looked up by training
example: `teacher_logits`, `difficulty` (RMC d_i), `weight` (JTT), `bias_probs` (bias-only
model). Formulas follow docs/paper.md §"RMC, exactly" and Utama et al. (2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import LossConfig

LossFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def smoothed_teacher(teacher_logits: torch.Tensor, d: torch.Tensor | float, temperature: float = 1.0) -> torch.Tensor:
    """s_ij = p_ij^{d_i} / sum_k p_ik^{d_i}, computed stably as softmax(d_i * z_ij / T)."""
    if isinstance(d, torch.Tensor):
        d = d.reshape(-1, 1)
    return torch.softmax(d * teacher_logits.float() / temperature, dim=-1)


def kd_loss(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, lam: float,
            temperature: float = 1.0) -> torch.Tensor:
    """(1 - lam) CE(y, p_S) + lam T^2 KL(target || p_S^T), KL averaged over the batch."""
    logits = logits.float()
    ce = F.cross_entropy(logits, labels)
    log_ps = F.log_softmax(logits / temperature, dim=-1)
    kl = F.kl_div(log_ps, target, reduction="batchmean")
    return (1 - lam) * ce + lam * temperature**2 * kl


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_i w_i CE_i / sum_i w_i: weights normalized within the batch."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    w = w.float().detach()
    return (w * ce).sum() / w.sum().clamp_min(1e-12)


def difficulty(v: torch.Tensor, alpha: float) -> torch.Tensor:
    """d_i = alpha + (1 - alpha)(v_i - V_min)/(V_max - V_min), in [alpha, 1]; all 1 if v is constant."""
    v = v.float()
    span = v.max() - v.min()
    if span <= 0:
        return torch.ones_like(v)
    return alpha + (1 - alpha) * (v - v.min()) / span


def make_loss(cfg: LossConfig) -> LossFn:
    name = cfg.name

    def ce(logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])

    def kd(logits, batch):  # Hinton KD; `distil` is the paper's baseline (T = 1, d = 1)
        target = smoothed_teacher(batch["teacher_logits"], 1.0, cfg.temperature)
        return kd_loss(logits, batch["labels"], target, cfg.lam, cfg.temperature)

    def smooth(logits, batch):
        target = smoothed_teacher(batch["teacher_logits"], cfg.smooth_d)
        return kd_loss(logits, batch["labels"], target, cfg.lam)

    def rmc(logits, batch):
        target = smoothed_teacher(batch["teacher_logits"], batch["difficulty"])
        return kd_loss(logits, batch["labels"], target, cfg.lam)

    def focal(logits, batch):
        with torch.no_grad():
            p_y = torch.softmax(logits.float(), -1).gather(1, batch["labels"][:, None]).squeeze(1)
        return weighted_ce(logits, batch["labels"], (1 - p_y) ** cfg.gamma)

    def jtt(logits, batch):
        return weighted_ce(logits, batch["labels"], batch["weight"])

    def reweight(logits, batch):  # Clark et al. 2019: down-weight what the bias model gets right
        p_bias_y = batch["bias_probs"].gather(1, batch["labels"][:, None]).squeeze(1)
        return weighted_ce(logits, batch["labels"], 1 - p_bias_y)

    def poe(logits, batch):  # product of experts: train log p_S + log p_bias, use p_S alone
        combined = F.log_softmax(logits.float(), -1) + torch.log(batch["bias_probs"].float().clamp_min(1e-12))
        return F.cross_entropy(combined, batch["labels"])

    def conf_reg(logits, batch):  # Utama et al. 2020: teacher scaled by 1 - p_bias(y)
        p_bias_y = batch["bias_probs"].gather(1, batch["labels"][:, None]).squeeze(1)
        target = smoothed_teacher(batch["teacher_logits"], 1 - p_bias_y)
        return -(target * F.log_softmax(logits.float(), -1)).sum(-1).mean()

    table: dict[str, LossFn] = {"ce": ce, "kd": kd, "distil": kd, "smooth": smooth, "rmc": rmc,
                                "focal": focal, "jtt": jtt, "reweight": reweight, "poe": poe,
                                "conf_reg": conf_reg}
    return table[name]


NEEDS: dict[str, set[str]] = {
    "ce": set(), "focal": set(), "kd": {"teacher_logits"}, "distil": {"teacher_logits"},
    "smooth": {"teacher_logits"}, "rmc": {"teacher_logits", "difficulty"}, "jtt": {"weight"},
    "reweight": {"bias_probs"}, "poe": {"bias_probs"}, "conf_reg": {"teacher_logits", "bias_probs"},
}
