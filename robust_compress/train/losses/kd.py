from ...settings.losses import DistilSettings, KDLossSettings, SmoothSettings
from .base import Loss, kd_loss, register, smoothed_teacher


@register
class KD(Loss):
    """Hinton et al. (2015):
    L = (1 - lam) CE(y, p_S) + lam T^2 KL(softmax(z_T / T) || softmax(z_S / T))."""

    name = "kd"
    Settings = KDLossSettings

    def forward(self, logits, batch, hidden=None):
        s = self.settings
        target = smoothed_teacher(batch["teacher_logits"], 1.0, s.temperature)
        return kd_loss(logits, batch["labels"], target, s.lam, s.temperature)


@register
class Distil(Loss):
    """The paper's Distil baseline: KD at T = 1, L = (1 - lam) CE(y, p_S) + lam KL(p_T || p_S)."""

    name = "distil"
    Settings = DistilSettings

    def forward(self, logits, batch, hidden=None):
        return kd_loss(
            logits,
            batch["labels"],
            smoothed_teacher(batch["teacher_logits"], 1.0),
            self.settings.lam,
        )


@register
class Smooth(Loss):
    """Global smoothing (the paper's Smooth baseline): s_ij ∝ p_T,ij^d with one d for every example,
    L = (1 - lam) CE(y, p_S) + lam KL(s || p_S)."""

    name = "smooth"
    Settings = SmoothSettings

    def forward(self, logits, batch, hidden=None):
        target = smoothed_teacher(batch["teacher_logits"], self.settings.smooth_d)
        return kd_loss(logits, batch["labels"], target, self.settings.lam)
