"""Every training objective's settings and declared inputs, without the objective (torch-free).

A loss's `Settings` class is its half of the config: the `name` (the discriminator of the config's
union, built from `LOSS_SETTINGS`), its knobs with their help texts, and the per-example inputs it
`needs` (keys of `settings.inputs.INPUT_SOURCES`, which say which `Inputs` field each is read from).
Config validation, the CLI's help and the study's checks read these without importing torch; the
formula is the `Loss` of the same name in `train/losses/`, which takes this class as its `Settings`
(`train.losses.base.register` refuses any other).

Adding a loss: its Settings class here plus its line in `LOSS_SETTINGS`, and its module in
`train/losses/` plus its import line there. The order of `LOSS_SETTINGS` is the order the CLI's
help names them in.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class LossSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # the per-example inputs the loss reads besides the labels (keys of INPUT_SOURCES)
    needs: ClassVar[tuple[str, ...]] = ()
    name: str


class KDSettings(LossSettings):
    """Settings shared by the teacher-distillation losses."""

    lam: float = Field(0.9, ge=0, le=1, description="weight of the teacher term")


class CESettings(LossSettings):
    name: Literal["ce"] = "ce"


class ReweightSettings(LossSettings):
    needs = ("bias_probs",)
    name: Literal["reweight"] = "reweight"


class PoESettings(LossSettings):
    needs = ("bias_probs",)
    name: Literal["poe"] = "poe"


class ConfRegSettings(LossSettings):
    needs = ("teacher_logits", "bias_probs")
    name: Literal["conf_reg"] = "conf_reg"


class DistilLayersSettings(KDSettings):
    needs = ("teacher_logits", "teacher_hidden")
    name: Literal["distil_layers"] = "distil_layers"
    mu: float = Field(
        1.0,
        ge=0,
        description="weight of the layer-matching term (to be measured, "
        "benchmarks/structured_recovery.py; 0: the distil loss)",
    )
    layer_map: Literal["search", "uniform"] = Field(
        "search",
        description="which teacher layer each student layer matches: search (CoFi: the lowest MSE "
        "after the map, at or after the previous layer's) or uniform (fixed, evenly spaced)",
    )


class FocalSettings(LossSettings):
    name: Literal["focal"] = "focal"
    gamma: float = Field(2.0, ge=0, description="focal-loss exponent")


class JTTSettings(LossSettings):
    needs = ("weight",)
    name: Literal["jtt"] = "jtt"
    upweight: float = Field(2.0, ge=1, description="weight of the first model's training errors")


class KDLossSettings(KDSettings):
    needs = ("teacher_logits",)
    name: Literal["kd"] = "kd"
    temperature: float = Field(1.0, gt=0, description="KD temperature T")


class DistilSettings(KDSettings):
    needs = ("teacher_logits",)
    name: Literal["distil"] = "distil"


class SmoothSettings(KDSettings):
    needs = ("teacher_logits",)
    name: Literal["smooth"] = "smooth"
    smooth_d: float = Field(0.9, gt=0, le=1, description="global exponent d of the Smooth baseline")


class LearnedMixinSettings(LossSettings):
    needs = ("bias_probs",)
    name: Literal["learned_mixin"] = "learned_mixin"
    entropy_weight: float = Field(
        0.2, ge=0, description="w of the +H entropy penalty (0: plain learned-mixin)"
    )


class RMCSettings(KDSettings):
    needs = ("teacher_logits", "difficulty")
    name: Literal["rmc"] = "rmc"
    alpha: float | None = Field(
        None, ge=0, le=1, description="difficulty floor alpha; default: the task's"
    )


# the light registry: loss name -> its settings (train.losses.REGISTRY holds the same names, in
# this order, each with its formula)
LOSS_SETTINGS: dict[str, type[LossSettings]] = {
    s.model_fields["name"].default: s
    for s in (
        CESettings,
        ReweightSettings,
        PoESettings,
        ConfRegSettings,
        DistilLayersSettings,
        FocalSettings,
        JTTSettings,
        KDLossSettings,
        DistilSettings,
        SmoothSettings,
        LearnedMixinSettings,
        RMCSettings,
    )
}
