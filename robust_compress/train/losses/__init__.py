"""Every training objective behind one signature and one registry (see base.py).
Adding a loss: one file with its Settings and class, plus its import line here."""

from . import ce, debias, distil_layers, focal, jtt, kd, learned_mixin, rmc  # noqa: F401  the registry lines
from .base import REGISTRY, Loss, LossSettings, kd_loss, smoothed_teacher, weighted_ce
from .rmc import difficulty

__all__ = [
    "REGISTRY",
    "Loss",
    "LossSettings",
    "difficulty",
    "kd_loss",
    "make_loss",
    "smoothed_teacher",
    "weighted_ce",
]


def make_loss(
    settings: LossSettings, hidden_size: int = 0, num_labels: int = 0, teacher_hidden_size: int = 0
) -> Loss:
    return REGISTRY[settings.name](
        settings,
        hidden_size=hidden_size,
        num_labels=num_labels,
        teacher_hidden_size=teacher_hidden_size,
    )
