"""The training loop's settings (`train.loop` runs them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..io import MAX_BATCH, MAX_COUNT, MAX_SEED


class TrainArgs(BaseModel):
    """Optimization settings: what the loop needs, nothing else."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    epochs: float = Field(1.0, gt=0, le=10_000, description="passes over the training split")
    max_steps: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="stop after this many optimizer steps"
    )
    lr: float = Field(
        5e-5, gt=0, description="peak learning rate (AdamW, linear warm-up and decay)"
    )
    batch_size: int = Field(
        32, ge=1, le=MAX_BATCH, description="global batch size (split across processes)"
    )
    grad_accum: int = Field(1, ge=1, le=MAX_BATCH, description="micro-batches per optimizer step")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="share of steps with a rising learning rate"
    )
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay (not on biases and LayerNorms)"
    )
    seed: int = Field(
        42,
        ge=0,
        le=MAX_SEED,
        description="training randomness: init of new heads, dropout, batch order",
    )
    bf16: bool = Field(False, description="bf16 autocast (about 2x on CPUs with AVX-512 bf16)")
    checkpoint_every: int = Field(
        200, ge=1, le=MAX_COUNT, description="optimizer steps between resumable checkpoints"
    )
    dropout: float | None = Field(None, ge=0, lt=1, description="override the model's dropout")
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="also log metrics to these accelerate trackers"
    )
    record_dynamics: bool = Field(
        False,
        description="keep every training example's loss and gold-label "
        "probability each time it is seen (training dynamics; no extra forward pass)",
    )
