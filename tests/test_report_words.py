"""The report's words respect the intervals: no cost is claimed where the cost's interval
includes 0, no recovery where the recovery's does, and a lower-is-better change is named better or
worse."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robust_compress.metrics import ratio_ci
from robust_compress.report.summary import _against, _cost_note

NAN = math.nan


@pytest.mark.parametrize(
    "metric,diff,cost,expect,never",
    [
        # the probe's case: a 2.9-point gap cost whose interval includes 0, and a 0.9 "recovery"
        # likewise
        (
            "gap",
            (-0.009, -0.03, 0.012),
            (0.029, -0.004, 0.06),
            "no measurable easy−hard gap cost to recover",
            "recovers",
        ),
        (
            "gap",
            (-0.009, -0.03, 0.012),
            (0.029, 0.004, 0.06),
            "no measurable recovery of the 2.9-point",
            "recovers 0.9",
        ),
        (
            "hard",
            (0.02, 0.005, 0.035),
            (-0.033, -0.062, -0.004),
            "recovers 2.0 of the 3.3-point",
            "no measurable",
        ),
        (
            "hard",
            (0.05, 0.01, 0.09),
            (-0.033, -0.062, -0.004),
            "recovers all of the 3.3-point",
            "no measurable",
        ),
        (
            "hard",
            (-0.02, -0.03, -0.01),
            (-0.033, -0.062, -0.004),
            "adds to the 3.3-point",
            "recovers",
        ),
        # a +3.8 reliance change: worse, said so when its interval excludes 0 ...
        ("reliance", (0.038, 0.01, 0.066), (-0.01, -0.05, 0.03), "worse", "better"),
        # ... and no direction claimed when it does not
        ("reliance", (0.038, -0.01, 0.086), (-0.01, -0.05, 0.03), "CI includes 0", "worse"),
        (
            "acc_id",
            (0.011, 0.004, 0.017),
            None,
            "ID accuracy +1.1 [+0.4, +1.7] vs Vanilla (better)",
            "CI includes",
        ),
    ],
)
def test_the_words_follow_the_intervals(metric, diff, cost, expect, never):
    line = _against(metric, diff, cost, "Vanilla")
    assert expect in line and never not in line, line


def test_a_cost_whose_interval_includes_zero_is_no_measurable_cost():
    assert "no measurable change" in _cost_note("hard", -0.011, -0.03, 0.01)
    assert _cost_note("hard", -0.033, -0.062, -0.004) == " (a measurable cost)"
    assert _cost_note("gap", 0.048, 0.008, 0.086) == " (a measurable cost)"
    assert _cost_note("gap", -0.048, -0.086, -0.008) == " (measurably better)"


def _parts(values, ids):
    return {"all": pd.Series(np.asarray(values, float), index=ids)}


def test_ratio_ci_is_the_share_by_hand_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(400)]
    teacher = rng.random(400) < 0.7
    vanilla = [rng.random(400) < 0.5 for _ in range(3)]
    loss = [rng.random(400) < 0.6 for _ in range(3)]
    d, lo, hi = ratio_ci(
        "hard",
        ([_parts(x, ids) for x in loss], [_parts(x, ids) for x in vanilla]),
        ([_parts(teacher, ids)], [_parts(x, ids) for x in vanilla]),
    )
    by_hand = (np.mean([x.mean() for x in loss]) - np.mean([x.mean() for x in vanilla])) / (
        teacher.mean() - np.mean([x.mean() for x in vanilla])
    )
    assert d == pytest.approx(by_hand)
    assert lo < d < hi and lo > 0
    # no cost at all: the share is undefined, not infinite
    d, lo, hi = ratio_ci(
        "hard",
        ([_parts(teacher, ids)], [_parts(teacher, ids)]),
        ([_parts(teacher, ids)], [_parts(teacher, ids)]),
    )
    assert math.isnan(d) and math.isnan(lo)
