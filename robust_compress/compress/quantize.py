from __future__ import annotations

from ..models.quantized import quantize
from ..settings.methods import QuantizeConfig
from .base import Method, Prepare


class Quantize(Method):
    """Post-training int8 of any saved model (stacks on pruning and distillation): no training."""

    name = "quantize"
    Config = QuantizeConfig
    trains = False

    def apply(self, model, ctx: Prepare):
        return quantize(model, self.cfg.scheme)

    def record(self, model):
        return {"scheme": self.cfg.scheme}
