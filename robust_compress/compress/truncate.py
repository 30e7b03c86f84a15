from __future__ import annotations

from ..io import UserError
from ..models.families import family_of
from ..models.pruned import keep_layers
from ..settings.methods import TruncateConfig
from .base import Method, Prepare


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
