from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..models.quantized import SCHEMES, quantize
from .base import Method, MethodConfig, Prepare


class QuantizeConfig(MethodConfig):
    method: Literal["quantize"] = "quantize"
    scheme: Literal[SCHEMES] = Field(
        "dynamic-int8",
        description="dynamic-int8 (torchao, int8 on disk) or "
        "dynamic-int8-torch-ao (the deprecated torch.ao fallback)",
    )


class Quantize(Method):
    """Post-training int8 of any saved model (stacks on pruning and distillation): no training."""

    name = "quantize"
    Config = QuantizeConfig
    trains = False

    def apply(self, model, ctx: Prepare):
        return quantize(model, self.cfg.scheme)

    def record(self, model):
        return {"scheme": self.cfg.scheme}
