"""metrics_long.csv holds every number of metrics.csv, one row per (run, metric, split, group), and
nothing else: pivoted back it is metrics.csv, for every committed export."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from robust_compress.metrics.long import ID_COLUMNS, long_rows, parse_key, wide_key
from robust_compress.schemas import read_metrics_long

from .conftest import ROOT

EXPORTS = sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/report/metrics.csv"))


@pytest.mark.parametrize(
    "key,parsed",
    [
        ("acc.hans.ci_lo", ("acc", "hans", "", "lo")),
        ("acc_id", ("acc_id", "", "", "value")),
        (
            "by.hans.heuristic.lexical_overlap/entailment.std",
            ("acc", "hans", "heuristic=lexical_overlap/entailment", "std"),
        ),
        ("eh.dev_matched.gap", ("easy_hard.gap", "dev_matched", "", "value")),
        (
            "eh.dev_matched.overlap.hard_acc",
            ("easy_hard.hard_acc", "dev_matched", "overlap", "value"),
        ),
        ("shortcut.reliance", ("shortcut.reliance", "", "", "value")),
    ],
)
def test_keys_parse_and_invert(key, parsed):
    assert parse_key(key) == parsed
    assert wide_key(*parsed) == key


@pytest.mark.parametrize("report", EXPORTS, ids=lambda p: p.parent.name)
def test_the_long_table_is_the_wide_table(report):
    wide = pd.read_csv(report / "metrics.csv")
    rows = wide.to_dict("records")
    long = long_rows(rows)
    back: dict[tuple, float] = {
        (r["level"], r["run"], wide_key(r["metric"], r["split"], r["group"], s)): r[c]
        for r in long
        for s, c in (("value", "value"), ("lo", "lo"), ("hi", "hi"), ("std", "std"))
        if r[c] is not None
    }
    want = {
        (r["level"], r["name"], k): float(v)
        for r in rows
        for k, v in r.items()
        if k not in ID_COLUMNS and isinstance(v, int | float) and not math.isnan(v)
    }
    # a spread or interval without its value (none today) would be the one thing the long table
    # drops
    assert back == {k: v for k, v in want.items() if (k[0], k[1], _value_key(k[2])) in want}
    if (report / "metrics_long.csv").exists():
        written = read_metrics_long(report / "metrics_long.csv")
        assert len(written) == len(long)


def _value_key(key: str) -> str:
    for suffix in (".ci_lo", ".ci_hi", ".std"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key
