"""The artifact files, typed: each is one pydantic model that its writer validates before writing
and every reader validates when reading, so a file is never parsed by hand in two places and a
broken one is one line naming the file and the key.

Models allow extra keys: a file written by a newer version (or an older one's extra fields) still
reads; the keys listed here are the ones the code relies on.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .io import UserError, read_json, validation_line, write_json


class _File(BaseModel):
    model_config = ConfigDict(extra="allow")


class SplitSummary(_File):
    """One split of a model's summary (summary.json → splits): `by_<column>` breakdowns ride
    along."""

    role: Literal["id", "ood", "cue"]
    n: int | None = Field(None, ge=0)
    accuracy: float | None = None
    ci95: list[float] = Field(default_factory=list)
    ece: float | None = None
    mean_confidence: float | None = None


class Summary(_File):
    """summary.json: a model's metrics on every split, Δ and F_bias (metrics.summarize)."""

    splits: dict[str, SplitSummary] = Field(min_length=1)
    delta_ood: dict[str, Any] | None = None
    id_split: str | None = None
    acc_id: float | None = None
    acc_ood: float | None = None
    delta: float | None = None
    f_bias: float | None = None


class CompressionRecord(_File):
    """compression.json: what made the model, its size and FLOPs."""

    method: str
    settings: dict[str, Any] = Field(default_factory=dict)
    loss: str | None = None
    parameters: int | None = None
    nonzero_parameters: int | None = None
    flops_dense: float | None = None
    bytes_on_disk: int | None = None


class TrainMetrics(_File):
    """train_metrics.json: how the training run went."""

    steps: int = Field(ge=0)
    examples_per_s: float
    seconds: float
    loss_curve: list[float] = Field(default_factory=list)
    train_examples: int | None = None


class StageRecord(_File):
    """stage.json: a study stage's provenance, written inside its artifact."""

    name: str
    kind: str
    key: str
    code_version: str
    device: str | None = None
    threads: int | None = None  # the compute threads: numbers are bit-identical at the same count
    torch: str | None = None
    transformers: str | None = None
    seconds: float | None = None
    deps: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)


class IndexEntry(_File):
    """One finished model run of a study (index.json is a list of these)."""

    name: str
    path: str
    group: str
    method: str
    loss: str
    seed: int
    is_teacher: bool
    sparsity: float | None = None


class RuntimeSpeed(_File):
    """speed.json → runtimes → one runtime: examples/s of every model it runs, and why not the
    others."""

    examples_per_s: dict[str, float]
    missing: dict[str, str] = Field(default_factory=dict)
    seconds: dict[str, list[float]] = Field(
        default_factory=dict, description="every timed round of every model (none before issue 29)"
    )


class SpeedRecord(_File):
    """speed.json: inference examples/s of every model, measured side by side, and how; with
    `runtimes`, on each deployable runtime too (absent in files written before there were any)."""

    examples_per_s: dict[str, float]
    harness: dict[str, Any] = Field(default_factory=dict)
    runtimes: dict[str, RuntimeSpeed] = Field(default_factory=dict)
    seconds: dict[str, list[float]] = Field(
        default_factory=dict,
        description="every timed round of every model, in turns (none in files before issue 29): "
        "examples_per_s is the best of them",
    )


class MetricRow(_File):
    """One row of metrics_long.csv (metrics.long): a run's (or a seed group's) metric on a split and
    a group of examples, with its 95 % interval and its spread over seeds where it has them."""

    level: Literal["run", "group"]
    run: str
    metric: str
    split: str = ""
    group: str = ""
    value: float
    lo: float | None = None
    hi: float | None = None
    std: float | None = None


Index = TypeAdapter(list[IndexEntry])
MetricsTable = TypeAdapter(list[MetricRow])
BY_NAME: dict[str, type[_File]] = {
    "summary.json": Summary,
    "compression.json": CompressionRecord,
    "train_metrics.json": TrainMetrics,
    "stage.json": StageRecord,
    "speed.json": SpeedRecord,
}
M = TypeVar("M", bound=BaseModel)


def parse(data: Any, model: type[M], where: str | Path) -> M:
    """`data` as `model`, or one line naming the file, the key and the problem."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where}: {validation_line(e)}") from None


def read(path: str | Path, model: type[M] | None = None) -> M:
    """Read and validate an artifact file (its schema found by its name unless given)."""
    path = Path(path)
    return parse(read_json(path), model or BY_NAME[path.name], path)


def read_index(path: str | Path) -> list[IndexEntry]:
    data = read_json(Path(path))
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty list of runs")
    try:
        return Index.validate_python(data)
    except ValidationError as e:
        raise UserError(f"{path}: {validation_line(e)}") from None


def read_metrics_long(path: str | Path) -> list[MetricRow]:
    """metrics_long.csv, validated row by row (a bad row: one line naming the file and its line)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, r in enumerate(rows, start=2):
        out.append(
            parse(
                {k: (v if v != "" or k in ("split", "group") else None) for k, v in r.items()},
                MetricRow,
                f"{path}:{i}",
            )
        )
    return out


def checked(name: str, data: Any, where: str | Path) -> Any:
    """What a writer is about to write as `name`: validated against its schema when it has one."""
    model = BY_NAME.get(Path(name).name)
    if model is not None:
        parse(data, model, where)
    return data


def write(path: str | Path, data: Any, record: bool = False) -> None:
    """Validate (by the file's name) and write an artifact file (`record`: a user-facing output,
    see `io.atomic_file`)."""
    write_json(Path(path), checked(Path(path).name, data, path), record=record)
