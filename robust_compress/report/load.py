"""Load a study folder for the report and check all of it before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import schemas
from ..io import UserError, read_json, read_parquet

REQUIRED = ("id", "gold", "pred", "correct", "confidence")


@dataclass
class Run:
    """One index entry with its loaded tables; `roles` keeps summary.json's split order."""

    name: str
    # index group; rows aggregate seeds of one `unit` = group, or group/loss if losses differ
    group: str
    method: str
    loss: str
    sparsity: float | None
    seed: int
    is_teacher: bool
    roles: dict[str, str]
    id_split: str | None
    tables: dict[str, pd.DataFrame]
    compression: dict[str, Any]
    rule: dict[
        str, Any
    ]  # which OOD splits make Delta and how they combine (summary.json's delta_ood)
    unit: str = ""
    meta: dict[str, Any] = field(
        default_factory=dict
    )  # the index entry (teacher_variant, loss_name, bias, ...)


@dataclass
class Study:
    runs: list[Run]
    easy_hard: dict[str, pd.DataFrame]  # `<split>` or `<split>.<name>` -> id, easy
    speed: dict[str, float]  # run name -> inference examples/s (the speed stage)
    agreement: dict[str, Any] | None
    uncertainty: dict[str, Any] | None = None  # how the models scoring per-sample uncertainty did
    bias_models: dict[str, Any] | None = (
        None  # each bias model: accuracy, training-set scoring, agreements
    )
    runtimes: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # runtime -> run name -> examples/s
    runtime_missing: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # runtime -> run name -> why not


def study_reads(study: Path) -> list[tuple[Path, str]]:
    """What reporting or exporting a study reads or names, for the output guard: the study folder
    and a given teacher outside it."""
    study = Path(study)
    reads = [(study, "study folder")]
    try:
        entries = read_json(study / "index.json")
    except (UserError, OSError):
        return reads
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and isinstance(e.get("given"), str) and e["given"]:
            reads.append((Path(e["given"]).expanduser(), "given teacher"))
    return reads


def at_seeds_of(ref: list[Run], mine: list[Run]) -> list[Run]:
    """The reference row's runs at the seeds of a row trained at fewer of them (a trimmed row):
    a loss at seed 42 is compared with Vanilla at seed 42, paired, not with the mean of three
    Vanilla seeds as if its own run had no noise."""
    seeds = {r.seed for r in mine}
    same = [r for r in ref if r.seed in seeds]
    return same if len(ref) > len(mine) and len(same) == len(mine) else ref


def _load_run(study: Path, e: schemas.IndexEntry) -> Run:
    folder = study / e.path
    summary = schemas.read(folder / "summary.json", schemas.Summary)
    roles = {s: v.role for s, v in summary.splits.items()}
    ids = [s for s, r in roles.items() if r == "id"]
    id_split = summary.id_split if summary.id_split in ids else (ids[0] if ids else None)
    tables = {}
    for s in roles:
        df = read_parquet(folder / "predictions" / f"{s}.parquet", REQUIRED)
        tables[s] = df.assign(id=df["id"].astype(str), correct=df["correct"].astype(bool))
    record = schemas.read(folder / "compression.json", schemas.CompressionRecord).model_dump()
    rule = summary.delta_ood or {
        "splits": [s for s, r in roles.items() if r == "ood"],
        "combine": "pooled",
    }
    if not set(rule.get("splits", [])) <= set(roles):
        raise UserError(f"{folder / 'summary.json'}: delta_ood names splits it does not have")
    return Run(
        e.name,
        e.group,
        e.method,
        e.loss,
        e.sparsity,
        e.seed,
        e.is_teacher,
        roles,
        id_split,
        tables,
        record,
        rule,
        meta=e.model_dump(),
    )


def load_study(study: Path) -> Study:
    """Every finished run (index.json), the easy/hard partitions, the speed measurement, the
    agreement."""
    index = study / "index.json"
    runs = [_load_run(study, e) for e in schemas.read_index(index)]
    if dup := sorted({r.name for r in runs if [x.name for x in runs].count(r.name) > 1}):
        raise UserError(f"{index}: duplicate run name(s) {dup}")
    for r in runs:
        several = len({x.loss for x in runs if x.group == r.group}) > 1
        r.unit = f"{r.group}/{r.loss}" if several else r.group
        first = next(x for x in runs if x.unit == r.unit)
        if (r.method, r.sparsity, r.is_teacher) != (first.method, first.sparsity, first.is_teacher):
            raise UserError(
                f"{index}: runs {first.name!r} and {r.name!r} of group {r.group!r} differ in "
                "method, sparsity or is_teacher"
            )
    if len(teachers := sorted({r.unit for r in runs if r.is_teacher})) > 1:
        raise UserError(f"{index}: runs of several groups/losses are marked is_teacher: {teachers}")
    easy_hard = {}
    for p in sorted(
        (study / "easy_hard").glob("*.parquet"), key=lambda p: (p.stem.count("."), p.stem)
    ):
        part = read_parquet(p, ("id", "easy"))
        if part["id"].duplicated().any() or part["easy"].isna().any():
            raise UserError(f"{p}: ids must be unique and 'easy' must have no missing values")
        # `<split>.parquet`, or `<split>.<name>.parquet` for more splits of one set (several bias
        # models)
        easy_hard[p.stem] = pd.DataFrame(
            {"id": part["id"].astype(str), "easy": part["easy"].astype(bool)}
        )
        easy_hard[p.stem].attrs.update(path=str(p), split=p.stem.split(".")[0])
    speed = {}
    if (study / "speed.json").is_file():
        s = schemas.read(study / "speed.json", schemas.SpeedRecord)
        speed = dict(s.examples_per_s)
        runtimes = {rt: dict(r.examples_per_s) for rt, r in s.runtimes.items()}
        runtime_missing = {rt: dict(r.missing) for rt, r in s.runtimes.items()}
    else:
        runtimes, runtime_missing = {}, {}
    analysis = {
        name: read_json(study / "analysis" / f"{name}.json")
        if (study / "analysis" / f"{name}.json").is_file()
        else None
        for name in ("agreement", "uncertainty", "bias_models")
    }
    return Study(
        runs,
        easy_hard,
        speed,
        analysis["agreement"],
        analysis["uncertainty"],
        analysis["bias_models"],
        runtimes,
        runtime_missing,
    )
