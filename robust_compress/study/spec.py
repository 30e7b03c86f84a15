"""An experiment file, typed: every section and every override is a validated model, so a typo
anywhere (`defaults`, a compression's `train`, `bias_model.train`, a loss setting) is an error
naming the file and the key before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..compress import METHODS
from ..config import (
    LOSS_NAMES,
    METHOD_NAMES,
    RunOverrides,
    apply_overrides,
    error_lines,
    error_where,
)
from ..io import MAX_SEED, UserError, read_yaml
from ..train.losses import REGISTRY

LossName = Literal[tuple(LOSS_NAMES)]
MethodName = Literal[tuple(METHOD_NAMES)]


def _nested(check, prefix: str) -> None:
    """Run a nested validation; re-raise its errors with their full key (pydantic drops it)."""
    try:
        check()
    except ValidationError as e:
        raise ValueError(error_lines(e, prefix)) from None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TeacherSpec(_Spec):
    model: str = Field(description="the pretrained model the teacher is fine-tuned from")
    path: str | None = Field(None, description="use this fine-tuned teacher folder instead of training one")
    train: RunOverrides = Field(default_factory=RunOverrides, description="overrides for fine-tuning")


class CompressionSpec(_Spec):
    name: str
    method: MethodName
    model: str | None = Field(None, description="student / start model; default: the teacher")
    settings: dict[str, Any] = Field(default_factory=dict, description="the method's settings")
    train: RunOverrides = Field(default_factory=RunOverrides, description="overrides for this compression")
    losses: list[LossName] | None = Field(None, description="default: the experiment's losses")

    @model_validator(mode="after")
    def _settings(self) -> CompressionSpec:
        _nested(lambda: self.method_config(), f"({self.name}) settings.")
        return self

    def method_config(self):
        return METHODS[self.method].Config.model_validate({"method": self.method, **self.settings})


class UncertaintySpec(_Spec):
    source: Literal["snapshots", "runs", "oneshot", "dynamics"] = Field(
        "snapshots", description="snapshots of one pruning run, separate pruning runs (the paper), one-shot "
                                 "pruning, or the teacher's own training dynamics (free; teacher epochs >= 2)")
    sparsities: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.7, 0.85])
    stat: Literal["loss", "p_gold"] = Field("loss", description="dynamics: variance of the loss or of p(gold)")
    train: RunOverrides = Field(default_factory=RunOverrides)

    @field_validator("sparsities")
    @classmethod
    def _in_range(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not 0 < s < 1]
        if bad:
            raise ValueError(f"sparsities {bad} must be in (0, 1)")
        if len(set(v)) < 2:
            raise ValueError("at least two distinct sparsities are needed for a variance")
        return sorted(set(v))


class BiasSpec(_Spec):
    kind: Literal["partial", "overlap"] = "partial"
    model: str | None = None
    train: RunOverrides = Field(default_factory=RunOverrides)
    easy_hard_split: str = "dev_matched"


class SpeedSpec(_Spec):
    examples: int = Field(512, ge=8, le=1 << 20, description="ID examples each model is timed on")
    repeats: int = Field(3, ge=1, le=1000, description="timed rounds after a warm-up (best round counts)")


class Experiment(_Spec):
    name: str
    task: str = "mnli"
    output_dir: str
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [42], min_length=1)
    defaults: RunOverrides = Field(default_factory=RunOverrides, description="overrides for every stage")
    teacher: TeacherSpec
    compressions: list[CompressionSpec]
    losses: list[LossName] = Field(default_factory=lambda: ["ce"])
    loss_settings: dict[LossName, dict[str, Any]] = Field(default_factory=dict,
                                                         description="settings per loss name (lam, T, ...)")
    uncertainty: UncertaintySpec = Field(default_factory=UncertaintySpec)
    bias_model: BiasSpec | None = None
    speed: SpeedSpec | None = Field(default_factory=SpeedSpec,
                                    description="time every model against the teacher (the Speed-up column); "
                                                "null: no speed stage")
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [c.name for c in self.compressions]
        if len(set(names)) != len(names):
            raise ValueError(f"compression names must be unique: {names}")
        unused = sorted(set(self.loss_settings) - set(self.all_losses()))
        if unused:
            raise ValueError(f"loss_settings for {unused}: no compression of this study uses "
                             f"{'that loss' if len(unused) == 1 else 'these losses'} (losses: {self.all_losses()})")
        for loss, settings in self.loss_settings.items():
            _nested(lambda loss=loss, settings=settings: REGISTRY[loss].Settings.model_validate(
                {"name": loss, **settings}), f"loss_settings.{loss}.")
        needs_bias = [n for n in self.all_losses() if "bias_probs" in REGISTRY[n].needs]
        if needs_bias and self.bias_model is None:
            raise ValueError(f"losses {needs_bias} need a `bias_model` section")
        for c in self.compressions:
            if "jtt" in (c.losses or self.losses) and "ce" not in (c.losses or self.losses):
                raise ValueError(f"compression {c.name}: loss 'jtt' needs 'ce' in its losses (its first model)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct: {self.seeds}")
        return self

    def all_losses(self) -> list[str]:
        """Every loss used, in the declared order (the order stages run in)."""
        used = {loss for c in self.compressions for loss in (c.losses or self.losses)}
        extra = sorted(used - set(self.losses))
        return [loss for loss in self.losses if loss in used] + extra


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Parse and type-check an experiment file, with `key=value` overrides (the planner then validates
    every stage)."""
    raw = apply_overrides(read_yaml(Path(path)), list(overrides or []))
    try:
        return Experiment.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{error_where(e, path, overrides)}: {error_lines(e)}") from None
