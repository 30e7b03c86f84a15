"""What every objective shares: the `Loss` base class, its registry, and the formulas several use.

A loss declares: its formula (docstring) and which of the student's hidden states it reads (none,
the [CLS] state, or every layer's) in its own file here; its `Settings` (a pydantic model whose
`name` is the loss's name: the config's discriminated union is built from them) and the
per-example inputs it `needs` (keys of `settings.inputs.INPUT_SOURCES`, built by
`train.extras.EXTRAS`) in `settings/losses.py`, torch-free, where the config and the CLI read them.
`register` takes a loss only with the Settings `LOSS_SETTINGS` lists under its name, and gives the
loss its Settings' `needs`. Config validation, the study planner and the input builders all read
these declarations.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...settings.losses import LOSS_SETTINGS, LossSettings

REGISTRY: dict[str, type[Loss]] = {}


class Loss(nn.Module):
    """loss(logits, batch, hidden) -> scalar; `batch` holds `labels` and the declared per-example
    inputs."""

    name: ClassVar[str]
    Settings: ClassVar[type[LossSettings]]
    needs: ClassVar[tuple[str, ...]] = ()  # its Settings' (set by `register`)
    # the student's hidden states it reads: "cls" (the last layer's first token, [batch, hidden]) or
    # "layers" (every layer's output, the embeddings' first: HF's hidden_states tuple)
    needs_hidden: ClassVar[Literal[False, "cls", "layers"]] = False

    def __init__(
        self,
        settings: LossSettings,
        hidden_size: int = 0,
        num_labels: int = 0,
        teacher_hidden_size: int = 0,
    ):
        super().__init__()
        self.settings = settings

    @classmethod
    def prepare(
        cls,
        name: str,
        raw: list[torch.Tensor],
        examples: list[dict],
        settings: LossSettings,
        task_alpha: float,
    ) -> list[torch.Tensor]:
        """One of its per-example inputs, made from the raw values its source gives (train.extras):
        as they are, unless the loss says otherwise."""
        return raw

    def forward(
        self,
        logits: torch.Tensor,
        batch: dict[str, torch.Tensor],
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def register(cls: type[Loss]) -> type[Loss]:
    """Class decorator: the registry line of a loss (its Settings: the light registry's)."""
    if cls.name in REGISTRY:
        raise ValueError(f"loss {cls.name!r} registered twice")
    if LOSS_SETTINGS.get(cls.name) is not cls.Settings:
        raise ValueError(
            f"loss {cls.name!r}: its Settings must be settings.losses.LOSS_SETTINGS[{cls.name!r}]"
        )
    cls.needs = cls.Settings.needs
    REGISTRY[cls.name] = cls
    return cls


def smoothed_teacher(
    teacher_logits: torch.Tensor, d: torch.Tensor | float, temperature: float = 1.0
) -> torch.Tensor:
    """s_ij = p_ij^{d_i} / sum_k p_ik^{d_i}, computed stably as softmax(d_i * z_ij / T)."""
    if isinstance(d, torch.Tensor):
        d = d.reshape(-1, 1)
    return torch.softmax(d * teacher_logits.float() / temperature, dim=-1)


def kd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    target: torch.Tensor,
    lam: float,
    temperature: float = 1.0,
) -> torch.Tensor:
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


def gold_prob(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return probs.gather(1, labels[:, None]).squeeze(1)
