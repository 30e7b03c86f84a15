"""A study's rows: per-run metrics from `evaluate`, F_bias paired with the teacher, speed-ups from
the speed stage, then aggregates over seeds. Nothing here defines a metric; it only assembles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..metrics import aggregate, f_bias, run_metrics, teacher_delta_on
from .load import Run, Study


@dataclass
class Rows:
    per_run: dict[str, dict[str, float]]
    groups: dict[str, dict]  # unit -> aggregate over seeds + group/method/loss/sparsity/n_seeds
    teacher: str | None
    cells: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    runtimes: list[str] = field(
        default_factory=list
    )  # runtimes the speed stage timed (beside its own precision)
    missing: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # runtime -> row -> why it has no rate
    differences: dict = field(
        default_factory=dict, repr=False
    )  # the report's differences between rows, each computed once (`report.effects`)


def compute(study: Study) -> Rows:
    runs = study.runs
    teacher = next((r.unit for r in runs if r.is_teacher), None)
    cells: dict[tuple[str, str], dict[str, str]] = {}
    per_run = {
        r.name: run_metrics(
            r.tables, r.roles, r.id_split, study.easy_hard, r.compression, cells, r.rule
        )
        for r in runs
    }
    t_runs = [r for r in runs if r.unit == teacher]
    t_deltas = [per_run[r.name]["delta"] for r in t_runs if "delta" in per_run[r.name]]
    t_delta = float(np.mean(t_deltas)) if t_deltas else math.nan
    t_speed = [study.speed[r.name] for r in t_runs if r.name in study.speed]
    t_flops = [per_run[r.name]["flops_dense"] for r in t_runs if "flops_dense" in per_run[r.name]]
    for r in runs:
        m = per_run[r.name]
        paired = [
            d
            for t in t_runs
            if (d := teacher_delta_on(r.tables, r.roles, r.id_split, t.tables, r.rule)) is not None
        ]
        ref = float(np.mean(paired)) if len(paired) == len(t_runs) and paired else t_delta
        if "delta" in m and not math.isnan(ref):
            m["f_bias"] = f_bias(m["delta"], ref)
            m["teacher_delta"] = ref
        if t_flops and "flops_dense" in m:
            m["flops_reduction"] = (
                float(np.mean(t_flops)) / m["flops_dense"]
            )  # the teacher's FLOPs / the run's
        if r.name in study.speed:
            m["examples_per_s"] = study.speed[r.name]
            if t_speed:
                m["speedup"] = study.speed[r.name] / float(np.mean(t_speed))
                if "flops_reduction" in m:
                    m["speedup_per_flops"] = m["speedup"] / m["flops_reduction"]
        for (
            runtime,
            rates,
        ) in study.runtimes.items():  # each runtime against the teacher on that runtime
            t_rate = [rates[t.name] for t in t_runs if t.name in rates]
            if r.name in rates:
                m[f"examples_per_s.{runtime}"] = rates[r.name]
                if t_rate:
                    m[f"speedup.{runtime}"] = rates[r.name] / float(np.mean(t_rate))
    groups = {}
    for u in ([teacher] if teacher else []) + [
        u for u in dict.fromkeys(r.unit for r in runs) if u != teacher
    ]:
        members = [r for r in runs if r.unit == u]
        first = members[0]
        groups[u] = {
            "group": first.group,
            "method": first.method,
            "loss": first.loss,
            "sparsity": first.sparsity,
            "n_seeds": len(members),
            **aggregate([per_run[r.name] for r in members]),
        }
    missing = {
        rt: {r.unit: why for r in runs if (why := study.runtime_missing.get(rt, {}).get(r.name))}
        for rt in study.runtimes
    }
    return Rows(per_run, groups, teacher, cells, list(study.runtimes), missing)


def metric_rows(runs: list[Run], rows: Rows) -> list[dict]:
    """One flat row per run and per table row (`level` says which), for metrics.csv/.json."""
    out = [
        {
            "level": "run",
            "name": r.name,
            "unit": r.unit,
            "group": r.group,
            "method": r.method,
            "loss": r.loss,
            "sparsity": r.sparsity,
            "seed": r.seed,
            "is_teacher": r.is_teacher,
            "n_seeds": 1,
        }
        | rows.per_run[r.name]
        for r in runs
    ]
    return out + [
        {
            "level": "group",
            "name": u,
            "unit": u,
            "group": g["group"],
            "method": g["method"],
            "loss": g["loss"],
            "sparsity": g["sparsity"],
            "seed": None,
            "is_teacher": u == rows.teacher,
        }
        | g
        for u, g in rows.groups.items()
    ]
