import torch
from torch import nn

from ...settings.losses import DistilLayersSettings
from .base import Loss, kd_loss, register, smoothed_teacher


def layer_map(mse: torch.Tensor, how: str) -> list[int]:
    """Teacher layer (0-based) for each student layer from the [student, teacher] MSE matrix:
    `search` takes, student layers in order, the lowest-MSE teacher layer at or after the previous
    one's; `uniform` spreads the student's layers evenly over the teacher's, ending at its last."""
    n_s, n_t = mse.shape
    if how == "uniform":
        return [round((i + 1) * n_t / n_s) - 1 for i in range(n_s)]
    out, start = [], 0
    for i in range(n_s):
        start = start + int(torch.argmin(mse[i, start:]))
        out.append(start)
    return out


@register
class DistilLayers(Loss):
    """Distil plus layer distillation (CoFi, Xia et al. 2022):
    L = (1 - lam) CE(y, p_S) + lam KL(p_T || p_S) + mu sum_i MSE(W h_S^i, h_T^t(i)),
    h^i: the output hidden states of layer i (padding excluded; MSE averaged over tokens and the
    teacher's hidden units), W: one learned linear map from the student's hidden size to the
    teacher's (this loss's own parameters, trained and checkpointed with the model, not saved with
    it; the identity at the start when the sizes agree, as for a pruned teacher), t(i): `layer_map`
    (chosen per batch, no gradient through the choice). The teacher's hidden states come from a live
    teacher forward per batch (frozen, eval mode); its logits from the cache, as for distil."""

    name = "distil_layers"
    Settings = DistilLayersSettings
    needs_hidden = "layers"

    def __init__(
        self, settings, hidden_size: int = 0, num_labels: int = 0, teacher_hidden_size: int = 0
    ):
        super().__init__(settings, hidden_size, num_labels, teacher_hidden_size)
        if hidden_size <= 0:
            raise ValueError("distil_layers needs the model's hidden size")
        out = teacher_hidden_size or hidden_size
        self.map = nn.Linear(hidden_size, out)
        if out == hidden_size:
            with torch.no_grad():
                self.map.weight.copy_(torch.eye(out))
                self.map.bias.zero_()

    def forward(self, logits, batch, hidden=None):
        s = self.settings
        loss = kd_loss(
            logits, batch["labels"], smoothed_teacher(batch["teacher_logits"], 1.0), s.lam
        )
        if s.mu == 0:
            return loss
        return loss + s.mu * self.layer_loss(
            hidden[1:], batch["teacher_hidden"][1:], batch["attention_mask"]
        )

    def layer_loss(self, student, teacher, attention_mask) -> torch.Tensor:
        """sum_i MSE(W h_S^i, h_T^t(i)) over the student's layers (inputs: the layers' outputs, no
        embeddings)."""
        mask = attention_mask.float()[..., None]
        denom = mask.sum() * teacher[0].shape[-1]
        with torch.autocast(
            device_type=mask.device.type, enabled=False
        ):  # the map and the MSE in fp32
            mapped = [self.map(h.float()) for h in student]

        def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (((a - b.float()) ** 2) * mask).sum() / denom

        with torch.no_grad():
            table = (
                torch.stack([torch.stack([mse(m, t) for t in teacher]) for m in mapped])
                if self.settings.layer_map == "search"
                else torch.zeros(len(student), len(teacher))
            )
        return sum(
            mse(m, teacher[j])
            for m, j in zip(mapped, layer_map(table, self.settings.layer_map), strict=True)
        )
