"""Every training objective behind one signature and one registry (see base.py).
Adding a loss: its Settings and their line in `settings/losses.py` (torch-free: what the config and
the CLI read), and one file here with its class, plus its import line below."""

from ...settings.losses import LOSS_SETTINGS
from . import ce, debias, distil_layers, focal, jtt, kd, learned_mixin, rmc  # noqa: F401  the registry lines
from .base import REGISTRY, Loss, LossSettings, kd_loss, smoothed_teacher, weighted_ce
from .rmc import difficulty

# the heavy registry reuses the light one (`register` checks each Settings): one formula per loss it
# lists (the CLI's help and the config's union follow LOSS_SETTINGS's order)
if set(REGISTRY) != set(LOSS_SETTINGS):
    raise ImportError(
        f"losses without a formula {sorted(set(LOSS_SETTINGS) - set(REGISTRY))} or without "
        f"settings {sorted(set(REGISTRY) - set(LOSS_SETTINGS))}: settings.losses.LOSS_SETTINGS and "
        "train.losses.REGISTRY must name the same losses"
    )

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
