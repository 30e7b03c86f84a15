"""A study's metrics as a long table: one row per (run, metric, split, group), with its value, 95 %
interval and spread over seeds. The report's wide rows name a metric by a dotted key
(`acc.hans.ci_lo`, `by.hans.heuristic.lexical_overlap/entailment`, `eh.dev_matched.gap`); this is
the one place that reads those keys back."""

from __future__ import annotations

import math
from typing import Any

SPLIT_METRICS = ("acc", "ece", "conf", "top_pred_share", "majority_rate", "constant_acc")
STATS = {"ci_lo": "lo", "ci_hi": "hi", "std": "std"}
ID_COLUMNS = (
    "level",
    "name",
    "unit",
    "group",
    "method",
    "loss",
    "sparsity",
    "seed",
    "is_teacher",
    "n_seeds",
)
COLUMNS = ("level", "run", "metric", "split", "group", "value", "lo", "hi", "std")


def parse_key(key: str) -> tuple[str, str, str, str]:
    """(metric, split, group, stat) of a wide column; stat is value, lo, hi or std."""
    parts = key.split(".")
    stat = STATS.get(parts[-1], "value") if len(parts) > 1 else "value"
    if stat != "value":
        parts = parts[:-1]
    head = parts[0]
    if head in SPLIT_METRICS and len(parts) == 2:
        return head, parts[1], "", stat
    if head == "by" and len(parts) >= 4:  # per-group accuracy: by.<split>.<field>.<cell>
        return "acc", parts[1], f"{parts[2]}={'.'.join(parts[3:])}", stat
    if head == "eh" and len(parts) >= 3:  # easy/hard: eh.<split>[.<second split's name>].<metric>
        return f"easy_hard.{parts[-1]}", parts[1], ".".join(parts[2:-1]), stat
    return ".".join(parts), "", "", stat


def long_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The wide rows (metrics.csv) as long rows; missing or NaN values are left out."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        for key, v in r.items():
            if (
                key in ID_COLUMNS
                or not isinstance(v, int | float)
                or isinstance(v, bool)
                or math.isnan(v)
            ):
                continue
            metric, split, group, stat = parse_key(key)
            at = (r["level"], r["name"], metric, split, group)
            row = out.setdefault(at, dict(zip(COLUMNS, (*at, None, None, None, None), strict=True)))
            row[stat] = float(v)
    return [r for r in out.values() if r["value"] is not None]


def wide_key(metric: str, split: str, group: str, stat: str) -> str:
    """The wide column a long row's value came from (the inverse of `parse_key`)."""
    suffix = {v: f".{k}" for k, v in STATS.items()}.get(stat, "")
    if metric.startswith("easy_hard."):
        return (
            ".".join(["eh", split, *([group] if group else []), metric.split(".", 1)[1]]) + suffix
        )
    if group:
        field, cell = group.split("=", 1)
        return f"by.{split}.{field}.{cell}{suffix}"
    return (f"{metric}.{split}" if split else metric) + suffix
