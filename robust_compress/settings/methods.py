"""Every compression method's settings, without the method (torch-free).

A method's `Config` is its half of the config: the `method` name (the discriminator of the config's
union, built from `METHOD_CONFIGS`) and its knobs with their help texts and checks. Config
validation, the CLI's help and the study's checks read these without importing torch; the method
itself is the `compress.Method` of the same name, which takes this class as its `Config`
(`compress/__init__.py` refuses any other). The names the settings may take that the models layer
implements (runtimes, quantization schemes) are declared here too.

Adding a method: its Config class here plus its line in `METHOD_CONFIGS`, and its module in
`compress/` plus its line in `compress.METHODS`. The order of `METHOD_CONFIGS` is the order the
CLI's help names them in.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

# the inference runtimes `models.runtimes` runs (speed measurement, latency tables)
RUNTIMES = ("pytorch-fp32", "pytorch-bf16", "onnxruntime-fp32", "onnxruntime-int8")
Runtime = Literal[RUNTIMES]
# the int8 schemes `models.quantized` applies
SCHEMES = ("dynamic-int8", "dynamic-int8-torch-ao")
# examples per batch of Fisher pruning's gradient passes (`compress.fisher`)
FISHER_BATCH = 32


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # Settings added after studies were keyed by these configs: written out only when set away from
    # their default, so a study that does not use them keeps every stage key (and its artifacts).
    later: ClassVar[frozenset[str]] = frozenset()
    method: str

    @model_serializer(mode="wrap")
    def _drop_later_defaults(self, handler):
        data = handler(self)
        for k in self.later:
            if k in data and getattr(self, k) == type(self).model_fields[k].default:
                del data[k]
        return data


class MagnitudeConfig(MethodConfig):
    method: Literal["magnitude"] = "magnitude"
    sparsity: float = Field(
        ge=0, lt=1, description="target fraction of zero weights in the encoder's Linear layers"
    )
    schedule: Literal["cubic", "linear", "oneshot"] = Field(
        "cubic", description="how sparsity rises during training"
    )
    prune_start: float = Field(
        0.0, ge=0, le=1, description="fraction of training when pruning starts"
    )
    prune_end: float = Field(
        0.7, ge=0, le=1, description="fraction of training when the target is reached"
    )
    prune_every: int = Field(10, ge=1, description="optimizer steps between mask updates")
    scope: Literal["global", "layer"] = Field(
        "global", description="rank weights over the encoder or per layer"
    )
    rewind: bool = Field(
        False, description="rewind surviving weights to the starting model after pruning"
    )
    snapshots: list[float] = Field(
        default_factory=list, description="also save models at these sparsities"
    )

    @model_validator(mode="after")
    def _check(self) -> MagnitudeConfig:
        if self.prune_end < self.prune_start:
            raise ValueError("prune_end must not be before prune_start")
        bad = [v for v in self.snapshots if not 0 < v <= self.sparsity]
        if bad:
            raise ValueError(
                f"snapshots {bad} are never reached: they must be in (0, {self.sparsity}]"
            )
        return self


class HeadsConfig(MethodConfig):
    method: Literal["heads"] = "heads"
    heads: float | None = Field(
        None, gt=0, description="attention heads to remove: a count (>=1) or a fraction (<1)"
    )
    ffn: float | None = Field(None, gt=0, lt=1, description="fraction of FFN neurons to remove")
    importance_batches: int = Field(
        32, ge=1, description="batches of 32 training examples for importance"
    )
    iterative_steps: int = Field(
        1, ge=1, description="remove in this many rounds, re-estimating importance"
    )

    @model_validator(mode="after")
    def _some(self) -> HeadsConfig:
        if self.heads is None and self.ffn is None:
            raise ValueError("method 'heads' needs `heads` and/or `ffn`")
        if self.heads is not None and self.heads >= 1 and self.heads != int(self.heads):
            raise ValueError(f"a head count must be a whole number, got {self.heads}")
        return self


class StructuredConfig(MethodConfig):
    later = frozenset({"target_runtime", "init", "fisher_samples", "fisher_rescale"})
    method: Literal["structured"] = "structured"
    target_flops: float | None = Field(
        None, gt=0, lt=1, description="keep this fraction of the encoder's FLOPs"
    )
    target_speedup: float | None = Field(
        None, gt=1, description="or reach this measured inference speed-up"
    )
    target_runtime: Runtime | None = Field(
        None,
        description="the runtime the speed-up is for: prune against its per-layer latency table "
        "measured on this machine (cached); unset: calibrate one-shot pruned copies in PyTorch "
        "fp32",
    )
    init: Literal["dense", "fisher"] = Field(
        "dense",
        description="dense: prune gradually during training; fisher: prune to the target first "
        "(Fisher mask search + rescaling, no training), then all of training recovers (which "
        "recovers better: to be measured, benchmarks/structured_recovery.py)",
    )
    fisher_samples: int = Field(
        2048,
        ge=32,
        le=1 << 20,
        description="init fisher: training examples for the "
        "Fisher information (Kwon et al.: 2,048)",
    )
    fisher_rescale: bool = Field(
        True, description="init fisher: rescale kept heads/neurons by least squares"
    )
    prune_start: float = Field(
        0.0, ge=0, le=1, description="fraction of training when pruning starts"
    )
    prune_end: float = Field(
        0.6, gt=0, le=1, description="fraction of training when the target is reached"
    )
    prune_every: int = Field(25, ge=1, description="optimizer steps between pruning rounds")
    importance_batches: int = Field(
        4, ge=1, description="batches of 32 training examples per importance estimate"
    )
    seq_len: int = Field(128, ge=8, description="sequence length of the FLOPs count")

    @model_validator(mode="after")
    def _one_target(self) -> StructuredConfig:
        if (self.target_flops is None) == (self.target_speedup is None):
            raise ValueError(
                "method 'structured' needs exactly one of `target_flops` and `target_speedup`"
            )
        if self.prune_end <= self.prune_start:
            raise ValueError("prune_end must be after prune_start")
        if self.target_runtime is not None and self.target_speedup is None:
            raise ValueError(
                "target_runtime goes with target_speedup (a FLOPs target is the same on every "
                "runtime)"
            )
        return self


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


class DistillConfig(MethodConfig):
    method: Literal["distill"] = "distill"


class QuantizeConfig(MethodConfig):
    method: Literal["quantize"] = "quantize"
    scheme: Literal[SCHEMES] = Field(
        "dynamic-int8",
        description="dynamic-int8 (torchao, int8 on disk) or "
        "dynamic-int8-torch-ao (the deprecated torch.ao fallback)",
    )


class FisherConfig(MethodConfig):
    method: Literal["fisher"] = "fisher"
    target_flops: float | None = Field(
        None, gt=0, lt=1, description="keep this fraction of the encoder's FLOPs"
    )
    target_speedup: float | None = Field(
        None, gt=1, description="or this speed-up on `target_runtime`"
    )
    target_runtime: Runtime = Field(
        "pytorch-fp32",
        description="the runtime of a speed-up target: its per-layer "
        "latency table, measured on this machine, prices heads and neurons",
    )
    samples: int = Field(
        2048,
        ge=FISHER_BATCH,
        le=1 << 20,
        description="training examples for the Fisher information (Kwon et al.: 2,048)",
    )
    rescale: bool = Field(
        True, description="rescale kept heads/neurons by least squares on layer outputs"
    )
    rescale_examples: int = Field(
        512,
        ge=FISHER_BATCH,
        le=1 << 20,
        description="examples (of the samples) the rescaling "
        "fits on (to be measured against `samples`)",
    )
    seq_len: int = Field(
        128, ge=8, description="sequence length of the FLOPs count and of the latency table"
    )

    @model_validator(mode="after")
    def _one_target(self) -> FisherConfig:
        if (self.target_flops is None) == (self.target_speedup is None):
            raise ValueError(
                "method 'fisher' needs exactly one of `target_flops` and `target_speedup`"
            )
        return self


# the light registry: method name -> its settings (compress.METHODS holds the same names, in this
# order, each with its method)
METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    c.model_fields["method"].default: c
    for c in (
        MagnitudeConfig,
        HeadsConfig,
        StructuredConfig,
        TruncateConfig,
        DistillConfig,
        QuantizeConfig,
        FisherConfig,
    )
}
