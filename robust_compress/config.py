"""Validated run configuration: YAML in, pydantic out, `key=value` overrides from the CLI.

One `RunConfig` drives fine-tuning and every compression; it is saved resolved beside each
artifact, so an artifact always says exactly how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .io import UserError, read_yaml

LossName = Literal["ce", "kd", "distil", "smooth", "rmc", "focal", "jtt", "reweight", "poe", "conf_reg"]


class LossConfig(BaseModel):
    """Which objective trains the model; all share the signature loss(logits, batch)."""

    model_config = ConfigDict(extra="forbid")
    name: LossName = "ce"
    lam: float = Field(0.9, ge=0, le=1, description="weight of the teacher term (KD family)")
    temperature: float = Field(1.0, gt=0, description="KD temperature T")
    smooth_d: float = Field(0.9, gt=0, le=1, description="global exponent d of the Smooth baseline")
    alpha: float | None = Field(None, ge=0, le=1, description="RMC difficulty floor; default: the task's")
    gamma: float = Field(2.0, ge=0, description="focal-loss exponent")
    upweight: float = Field(2.0, ge=1, description="JTT weight of the first model's errors")
    uncertainty: str | None = Field(None, description="RMC: per-example uncertainty file (robust-compress uncertainty)")
    reference_model: str | None = Field(None, description="JTT: the first model whose training errors are up-weighted")
    bias_model: str | None = Field(None, description="reweight/poe/conf_reg: a bias-only model folder")

    @model_validator(mode="after")
    def _inputs(self) -> LossConfig:
        need = {"rmc": "uncertainty", "jtt": "reference_model", "reweight": "bias_model", "poe": "bias_model",
                "conf_reg": "bias_model"}.get(self.name)
        if need and getattr(self, need) is None:
            raise ValueError(f"loss {self.name!r} needs `loss.{need}`")
        return self


class CompressionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["magnitude", "heads", "distill", "truncate", "quantize"]
    teacher: str | None = Field(None, description="fine-tuned teacher folder (needed by KD-family losses)")
    sparsity: float | None = Field(None, ge=0, lt=1, description="magnitude: target fraction of zero weights")
    schedule: Literal["cubic", "linear", "oneshot"] = "cubic"
    prune_start: float = Field(0.0, ge=0, le=1, description="fraction of training when pruning starts")
    prune_end: float = Field(0.7, ge=0, le=1, description="fraction of training when the target is reached")
    prune_every: int = Field(10, ge=1, description="optimizer steps between mask updates")
    scope: Literal["global", "layer"] = "global"
    rewind: bool = Field(False, description="rewind surviving weights to the starting model after pruning")
    snapshots: list[float] = Field(default_factory=list, description="also save models at these sparsities")
    heads: float | None = Field(None, gt=0, description="heads to remove: a count (>=1) or a fraction (<1)")
    importance_batches: int = Field(32, ge=1)
    iterative_steps: int = Field(1, ge=1, description="remove heads in this many rounds")
    layers: int | None = Field(None, ge=1, description="truncate: keep the first k layers")

    @model_validator(mode="after")
    def _check(self) -> CompressionConfig:
        need = {"magnitude": "sparsity", "heads": "heads", "truncate": "layers"}.get(self.method)
        if need and getattr(self, need) is None:
            raise ValueError(f"method {self.method!r} needs `{need}`")
        if self.prune_end < self.prune_start:
            raise ValueError("prune_end must not be before prune_start")
        return self


class CueConfig(BaseModel):
    """Controlled shortcut: a marker word appended to text_b that agrees with the gold label for a
    fraction `rho` of training examples (random otherwise)."""

    model_config = ConfigDict(extra="forbid")
    rho: float = Field(0.8, ge=0, le=1)
    markers: list[str] | None = Field(None, description="one marker word per label; default: fixed rare words")


class RunConfig(BaseModel):
    """Everything one training run needs (fine-tuning and every compression)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="model folder or hub id to start from")
    task: str = Field("mnli", description="built-in task name or task YAML file")
    data_dir: str | None = Field(None, description="local data folder; default $ROBUST_COMPRESS_DATA or ../shared/data")
    source: Literal["local", "hub"] = "local"
    output_dir: str = "runs/model"
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1, description="global batch size (split across processes)")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_length: int = Field(128, ge=8)
    seed: int = Field(42, description="training randomness: init of new heads, dropout, batch order")
    data_seed: int = Field(0, description="which train/eval subsets and cue markers: fixed across training seeds")
    bf16: bool = Field(False, description="bf16 autocast (about 2x on CPUs with AVX-512 bf16)")
    train_limit: int | None = Field(None, ge=1, description="use a seeded subset of the training split")
    eval_limit: int | None = Field(None, ge=1, description="evaluate on seeded subsets of this size")
    eval_sets: list[str] | None = None
    eval_batch_size: int = Field(64, ge=1, description="64 measured fastest on a 2-core CPU (benchmarks/eval_padding.py)")
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between resumable checkpoints")
    dropout: float | None = Field(None, ge=0, lt=1, description="override the model's dropout")
    cache_dir: str = Field("runs/cache", description="teacher logits, uncertainty and other reusable per-example data")
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="also log metrics to these accelerate trackers")
    input_field: Literal["text_a", "text_b"] | None = Field(None, description="partial input (bias-only models)")
    cue: CueConfig | None = None
    loss: LossConfig = Field(default_factory=LossConfig)
    compression: CompressionConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        kd = self.loss.name in {"kd", "distil", "smooth", "rmc", "conf_reg"}
        if kd and (self.compression is None or not self.compression.teacher):
            raise ValueError(f"loss {self.loss.name!r} needs compression.teacher")
        return self


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise UserError(f"override {key!r}: {p!r} is not a section")
    d[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """Merge base < YAML file < `key=value` overrides (values parsed as YAML scalars)."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(read_yaml(Path(path)))
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw else None)
    return validate(data, where=str(path) if path else "config")


def validate(data: dict[str, Any], where: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()]
        raise UserError(f"{where}: invalid configuration:\n" + "\n".join(lines)) from None
