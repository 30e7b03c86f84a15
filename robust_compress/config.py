"""Validated run configuration: YAML in, pydantic out, `key=value` overrides from the CLI.

One `RunConfig` drives fine-tuning and every compression; it is saved resolved beside each
artifact, so an artifact always says exactly how it was made. It is flat for YAML and `-s`
overrides, but made of the parts each layer takes: `DataArgs` (data), `TrainArgs` (the loop),
the loss settings (a discriminated union built from the loss registry), the compression
method's config (a union built from the method registry) and the loss `Inputs`. Every part is
declared torch-free (`settings/`, `data.load`), so validating a config or building the CLI's help
imports no torch, transformers or accelerate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .data.labels import canonical
from .data.load import DataArgs, resolve_data_dir
from .io import (
    MAX_BATCH,
    UserError,
    line_of,
    read_yaml,
    safe_yaml,
    validation_line,
    yaml_key_lines,
)
from .settings.inputs import Inputs, required_sources
from .settings.losses import LOSS_SETTINGS
from .settings.methods import METHOD_CONFIGS
from .settings.train import TrainArgs

LossConfig = Annotated[
    Union[tuple(LOSS_SETTINGS.values())],  # noqa: UP007
    Field(discriminator="name"),
]
CompressionConfig = Annotated[
    Union[tuple(METHOD_CONFIGS.values())],  # noqa: UP007
    Field(discriminator="method"),
]
LOSS_NAMES = list(LOSS_SETTINGS)
METHOD_NAMES = list(METHOD_CONFIGS)


class RunConfig(DataArgs, TrainArgs):
    """Everything one run needs (fine-tuning and every compression)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(description="model folder or hub id to start from")
    output_dir: str = Field("runs/model", description="where the finished artifact is written")
    eval_batch_size: int = Field(
        64, ge=1, le=MAX_BATCH, description="64 measured fastest on a 2-core CPU (benchmarks/)"
    )
    cache_dir: str = Field(
        "runs/cache", description="teacher logits and other reusable per-example data"
    )
    inputs: Inputs = Field(default_factory=Inputs, description="sources of per-example loss inputs")
    loss: LossConfig = Field(
        default_factory=lambda: LOSS_SETTINGS["ce"](), description="training objective"
    )
    compression: CompressionConfig | None = Field(
        None, description="compression method and its settings"
    )
    label_map: dict[str, str] | None = Field(
        None,
        description="a given model's label -> the task's label, where names cannot be matched "
        "(LABEL_0.., or an index): e.g. {LABEL_0: contradiction, LABEL_1: neutral, "
        "LABEL_2: entailment}",
    )

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map(cls, v: Any) -> Any:
        """YAML reads `{0: contradiction}` with int keys: names or indices, as strings; one target
        once."""
        if not isinstance(v, dict):
            return v
        out = {str(k).strip(): str(t).strip() for k, t in v.items()}
        if any(not k or not t for k, t in out.items()):
            raise ValueError("model and task label names must not be empty")
        seen: dict[str, str] = {}
        for k, t in out.items():
            if canonical(t) in seen:
                raise ValueError(f"{seen[canonical(t)]!r} and {k!r} both map to {t!r}")
            seen[canonical(t)] = k
        return out

    @model_validator(mode="after")
    def _inputs_present(self) -> RunConfig:
        missing = [s for s in required_sources(self.loss.name) if getattr(self.inputs, s) is None]
        if missing:
            raise ValueError(
                f"loss {self.loss.name!r} needs " + " and ".join(f"inputs.{m}" for m in missing)
            )
        return self

    def input_paths(self) -> list[tuple[str | Path | None, str]]:
        """Every local path a run reads, named: an output must not be, hold or lie inside one."""
        i = self.inputs
        return [
            (self.model, "model"),
            (i.teacher, "teacher"),
            (i.bias_model, "bias model"),
            (i.uncertainty, "uncertainty file"),
            (i.reference_model, "reference model"),
            (resolve_data_dir(self.data_dir), "data folder"),
            (self.task, "task file"),
        ]

    def data_args(self) -> DataArgs:
        return DataArgs.model_validate(self.model_dump(include=set(DataArgs.model_fields)))

    def train_args(self) -> TrainArgs:
        return TrainArgs.model_validate(self.model_dump(include=set(TrainArgs.model_fields)))


def _optional(model: type[BaseModel], name: str, drop: set[str]) -> type[BaseModel]:
    """A model with the same fields, every one optional (None = not set): typed partial
    overrides."""
    fields = {
        k: (f.annotation | None, Field(None, description=f.description))
        for k, f in model.model_fields.items()
        if k not in drop
    }
    return create_model(name, __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **fields)


# What a study may set for every stage, or for one stage: every RunConfig field but the ones the
# planner owns (which model, where it goes, what it is compared with, how it is compressed).
RunOverrides = _optional(
    RunConfig, "RunOverrides", {"model", "output_dir", "inputs", "loss", "compression"}
)


error_lines = validation_line  # the one formatter (io.py)


def error_where(
    e: ValidationError, path: str | Path | None, overrides: list[str] | None = None
) -> str:
    """`file:line` of the first error's key in the YAML file (the file alone when the key came from
    an override or is not in the file; "config" when there is no file)."""
    if path is None:
        return "config"
    loc = tuple(p for p in e.errors()[0]["loc"] if not str(p).startswith("function-"))
    overridden = {tuple(o.split("=", 1)[0].strip().split(".")) for o in overrides or []}
    if any(loc[: len(k)] == k for k in overridden):
        return str(path)
    line = line_of(yaml_key_lines(Path(path)), loc)
    return f"{path}:{line}" if line else str(path)


def validate(
    data: dict[str, Any], where: str = "config", overrides: list[str] | None = None
) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        at = error_where(e, where, overrides) if where != "config" else where
        raise UserError(f"{at}: {error_lines(e)}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`key=value` items (dotted keys, values parsed as YAML) applied to a config mapping."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = safe_yaml(raw) if raw else None
        except yaml.YAMLError:
            raise UserError(f"override {item!r}: value is not valid YAML") from None
        d = data
        *parents, last = key.strip().split(".")
        for p in parents:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise UserError(f"override {item!r}: {p!r} is not a section")
        d[last] = value
    return data


def merge(into: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `layer` into `into` (a nested section is merged key by key, not replaced)."""
    for k, v in layer.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
    return into


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    over: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge base < YAML file < `over` (the CLI's flags) < `key=value` overrides (values parsed as
    YAML)."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        merge(data, read_yaml(Path(path)))
    merge(data, over or {})
    flagged = [f"{k}=" for k in _dotted(over or {})]  # set by a flag: the file's line would mislead
    return validate(
        apply_overrides(data, list(overrides or [])),
        where=str(path) if path else "config",
        overrides=list(overrides or []) + flagged,
    )


def _dotted(d: dict[str, Any], prefix: str = "") -> list[str]:
    return [
        k
        for key, v in d.items()
        for k in (_dotted(v, f"{prefix}{key}.") if isinstance(v, dict) else [f"{prefix}{key}"])
    ]


def field_help(dotted: str) -> str:
    """The description of a RunConfig field (CLI help is taken from the config, so they cannot
    drift)."""
    model: Any = RunConfig
    *parents, last = dotted.split(".")
    for p in parents:
        if p == "compression":
            return next(
                c.model_fields[last].description or ""
                for c in METHOD_CONFIGS.values()
                if last in c.model_fields
            )
        if p == "loss":
            return next(
                s.model_fields[last].description or ""
                for s in LOSS_SETTINGS.values()
                if last in s.model_fields
            )
        model = model.model_fields[p].annotation
    return model.model_fields[last].description or ""
