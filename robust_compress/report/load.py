"""Load a study folder for the report and check all of it before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ..io import UserError, read_json

REQUIRED = ("id", "gold", "pred", "correct", "confidence")
INDEX_KEYS = ("name", "path", "group", "method", "loss", "seed", "is_teacher")  # + optional sparsity


@dataclass
class Run:
    """One index entry with its loaded tables; `roles` keeps summary.json's split order."""

    name: str
    group: str  # index group; rows aggregate seeds of one `unit` = group, or group/loss if losses differ
    method: str
    loss: str
    sparsity: float | None
    seed: int
    is_teacher: bool
    roles: dict[str, str]
    id_split: str | None
    tables: dict[str, pd.DataFrame]
    compression: dict[str, Any]
    rule: dict[str, Any]  # which OOD splits make Delta and how they combine (summary.json's delta_ood)
    unit: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # the index entry (teacher_variant, loss_name, bias, ...)


@dataclass
class Study:
    runs: list[Run]
    easy_hard: dict[str, pd.DataFrame]  # `<split>` or `<split>.<name>` -> id, easy
    speed: dict[str, float]  # run name -> inference examples/s (the speed stage)
    speed_harness: dict[str, Any]
    agreement: dict[str, Any] | None
    uncertainty: dict[str, Any] | None = None  # how the models scoring per-sample uncertainty did
    bias_models: dict[str, Any] | None = None  # each bias model: accuracy, training-set scoring, agreements
    runtimes: dict[str, dict[str, float]] = field(default_factory=dict)  # runtime -> run name -> examples/s
    runtime_missing: dict[str, dict[str, str]] = field(default_factory=dict)  # runtime -> run name -> why not


def read_parquet(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UserError(f"{path}: unreadable parquet ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}")
    return df


def _load_run(study: Path, index: Path, i: int, e: Any) -> Run:
    if not isinstance(e, dict) or (missing := [k for k in INDEX_KEYS if k not in e]):
        raise UserError(f"{index}: entry {i} must be an object with keys {list(INDEX_KEYS)}"
                        + (f" (missing {missing})" if isinstance(e, dict) else ""))
    e = {"sparsity": None} | e
    if not isinstance(e["is_teacher"], bool) or not (e["sparsity"] is None or isinstance(e["sparsity"], int | float)):
        raise UserError(f"{index}: entry {i} ({e['name']}): is_teacher must be a bool, sparsity a number or null")
    folder = study / str(e["path"])
    summary = read_json(folder / "summary.json")
    splits = summary.get("splits") if isinstance(summary, dict) else None
    if not isinstance(splits, dict) or not splits:
        raise UserError(f"{folder / 'summary.json'}: no 'splits'")
    roles = {s: (v or {}).get("role") for s, v in splits.items()}
    if bad := [s for s, r in roles.items() if r not in ("id", "ood", "cue")]:
        raise UserError(f"{folder / 'summary.json'}: split(s) {bad} lack a role 'id', 'ood' or 'cue'")
    ids = [s for s, r in roles.items() if r == "id"]
    id_split = summary.get("id_split") if summary.get("id_split") in ids else (ids[0] if ids else None)
    tables = {}
    for s in roles:
        df = read_parquet(folder / "predictions" / f"{s}.parquet", REQUIRED)
        tables[s] = df.assign(id=df["id"].astype(str), correct=df["correct"].astype(bool))
    record = read_json(folder / "compression.json")
    rule = summary.get("delta_ood") or {"splits": [s for s, r in roles.items() if r == "ood"], "combine": "pooled"}
    if not isinstance(rule, dict) or not set(rule.get("splits", [])) <= set(roles):
        raise UserError(f"{folder / 'summary.json'}: delta_ood names splits it does not have")
    return Run(str(e["name"]), str(e["group"]), str(e["method"]), str(e["loss"]), e["sparsity"],
               int(e["seed"]), e["is_teacher"], roles, id_split, tables, record, rule, meta=dict(e))


def load_study(study: Path) -> Study:
    """Every finished run (index.json), the easy/hard partitions, the speed measurement, the agreement."""
    index = study / "index.json"
    entries = read_json(index)
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{index}: expected a non-empty list of runs")
    runs = [_load_run(study, index, i, e) for i, e in enumerate(entries)]
    if dup := sorted({r.name for r in runs if [x.name for x in runs].count(r.name) > 1}):
        raise UserError(f"{index}: duplicate run name(s) {dup}")
    for r in runs:
        several = len({x.loss for x in runs if x.group == r.group}) > 1
        r.unit = f"{r.group}/{r.loss}" if several else r.group
        first = next(x for x in runs if x.unit == r.unit)
        if (r.method, r.sparsity, r.is_teacher) != (first.method, first.sparsity, first.is_teacher):
            raise UserError(f"{index}: runs {first.name!r} and {r.name!r} of group {r.group!r} differ in "
                            "method, sparsity or is_teacher")
    if len(teachers := sorted({r.unit for r in runs if r.is_teacher})) > 1:
        raise UserError(f"{index}: runs of several groups/losses are marked is_teacher: {teachers}")
    easy_hard = {}
    for p in sorted((study / "easy_hard").glob("*.parquet"), key=lambda p: (p.stem.count("."), p.stem)):
        part = read_parquet(p, ("id", "easy"))
        if part["id"].duplicated().any() or part["easy"].isna().any():
            raise UserError(f"{p}: ids must be unique and 'easy' must have no missing values")
        # `<split>.parquet`, or `<split>.<name>.parquet` for more splits of one set (several bias models)
        easy_hard[p.stem] = pd.DataFrame({"id": part["id"].astype(str), "easy": part["easy"].astype(bool)})
        easy_hard[p.stem].attrs.update(path=str(p), split=p.stem.split(".")[0])
    speed, harness = {}, {}
    if (study / "speed.json").is_file():
        s = read_json(study / "speed.json")
        rates = s.get("examples_per_s") if isinstance(s, dict) else None
        if not isinstance(rates, dict) or not all(isinstance(v, int | float) for v in rates.values()):
            raise UserError(f"{study / 'speed.json'}: 'examples_per_s' must map run names to numbers")
        speed, harness = {k: float(v) for k, v in rates.items()}, s.get("harness", {})
        runtimes, runtime_missing = _runtimes(study / "speed.json", s.get("runtimes") or {})
    else:
        runtimes, runtime_missing = {}, {}
    analysis = {name: read_json(study / "analysis" / f"{name}.json") if (study / "analysis" / f"{name}.json").is_file()
                else None for name in ("agreement", "uncertainty", "bias_models")}
    return Study(runs, easy_hard, speed, harness, analysis["agreement"], analysis["uncertainty"],
                 analysis["bias_models"], runtimes, runtime_missing)


def _runtimes(path: Path, raw: Any) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """The speed stage's per-runtime rates (absent in studies timed before it had them: none)."""
    rates, missing = {}, {}
    for runtime, entry in raw.items() if isinstance(raw, dict) else [(None, None)]:
        got = entry.get("examples_per_s") if isinstance(entry, dict) else None
        if not isinstance(got, dict) or not all(isinstance(v, int | float) for v in got.values()):
            raise UserError(f"{path}: 'runtimes' must map each runtime to {{'examples_per_s': {{run: number}}, "
                            "'missing': {run: reason}}")
        rates[runtime] = {k: float(v) for k, v in got.items()}
        missing[runtime] = {k: str(v) for k, v in (entry.get("missing") or {}).items()}
    return rates, missing
