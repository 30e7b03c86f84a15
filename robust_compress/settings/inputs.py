"""Where a loss's per-example inputs come from: the `Inputs` a run names, and which of them each
input is read from (`train.extras` builds them; torch-free here so the config can check them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .losses import LOSS_SETTINGS


class Inputs(BaseModel):
    """Where per-example loss inputs come from (a study fills these with upstream artifacts)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    teacher: str | None = Field(
        None, description="fine-tuned teacher folder: KD targets and the F_bias reference"
    )
    uncertainty: str | None = Field(
        None, description="per-example uncertainty file (RMC), from `uncertainty`"
    )
    reference_model: str | None = Field(
        None, description="JTT: the first model, whose training errors are up-weighted"
    )
    bias_model: str | None = Field(
        None, description="bias-only model folder (reweight, poe, conf_reg, learned_mixin)"
    )


# per-example input (a loss's `needs`) -> the `Inputs` field naming its source (train.extras.EXTRAS
# says how each is built from it)
INPUT_SOURCES: dict[str, str] = {
    "teacher_logits": "teacher",
    "teacher_hidden": "teacher",
    "difficulty": "uncertainty",
    "weight": "reference_model",
    "bias_probs": "bias_model",
}


def required_sources(loss_name: str) -> list[str]:
    """The `Inputs` fields a loss needs set, in declaration order."""
    return list(dict.fromkeys(INPUT_SOURCES[n] for n in LOSS_SETTINGS[loss_name].needs))
