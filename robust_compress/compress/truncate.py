from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..io import UserError
from ..models.families import family_of
from ..models.pruned import keep_layers
from .base import Method, MethodConfig, Prepare


class TruncateConfig(MethodConfig):
    method: Literal["truncate"] = "truncate"
    layers: int | None = Field(None, ge=1, description="keep the first k encoder layers")
    keep: list[int] | None = Field(None, description="or keep exactly these layers, in this order")

    @model_validator(mode="after")
    def _one(self) -> TruncateConfig:
        if (self.layers is None) == (self.keep is None):
            raise ValueError("method 'truncate' needs exactly one of `layers` and `keep`")
        return self

    def kept(self) -> list[int]:
        return list(range(self.layers)) if self.layers is not None else list(self.keep)


class Truncate(Method):
    """Drop encoder layers before fine-tuning: the paper's truncated-k student is the first k."""

    name = "truncate"
    Config = TruncateConfig

    def check(self, model_config) -> None:
        have = getattr(model_config, family_of(model_config).n_layers_key)
        keep = self.cfg.kept()
        if not all(0 <= i < have for i in keep) or len(set(keep)) != len(keep):
            raise UserError(f"truncate: cannot keep layers {keep} of a {have}-layer model")

    def prepare(self, model, ctx: Prepare):
        return keep_layers(model, self.cfg.kept()), []

    def record(self, model):
        return {"layers": self.cfg.kept()}
