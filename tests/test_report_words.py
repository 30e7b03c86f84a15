"""The report's words respect the intervals (`report/verdict.py`, the one module that words a
difference): no cost is claimed where the cost's interval includes 0, no recovery where the
recovery's does, a lower-is-better change is named a gain or a cost the right way round, a one-seed
difference is never "measurable", and a difference against a row that predicts one class is never
read as a gain."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robust_compress.metrics import example_scores, expected_calibration_error, metric_weights
from robust_compress.metrics.multiboot import NO_COST, NO_SEED_VARIANCE, Effect, Runs, share
from robust_compress.report import verdict
from robust_compress.report.verdict import Diff, Ratio

LOWER = {"gap", "reliance", "ece"}


def _d(metric: str, d: float, lo: float, hi: float, one_seed=False, one_class=()) -> Diff:
    e = Effect(d, lo, hi, se=(hi - lo) / 4, df=2.0, n_seeds=1 if one_seed else 3, one_seed=one_seed)
    return Diff(e, metric in LOWER, tuple(one_class))


NAMES = {"hard": "hard-example accuracy", "gap": "easy−hard gap", "reliance": "cue reliance"}


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
        # a +3.8 reliance change: a cost, said so when its interval excludes 0 ...
        ("reliance", (0.038, 0.01, 0.066), (-0.01, -0.05, 0.03), "a measurable cost", "gain"),
        # ... and no direction claimed when it does not
        ("reliance", (0.038, -0.01, 0.086), (-0.01, -0.05, 0.03), "no measurable change", "cost)"),
    ],
)
def test_the_words_follow_the_intervals(metric, diff, cost, expect, never):
    line = verdict.recovery(_d(metric, *diff), _d(metric, *cost), NAMES[metric], "Vanilla")
    assert expect in line and never not in line, line


def test_a_difference_against_the_teacher_reads_cost_gain_or_no_change():
    assert verdict.word(_d("hard", -0.011, -0.03, 0.01)) == "no measurable change"
    assert verdict.word(_d("hard", -0.033, -0.062, -0.004)) == "a measurable cost"
    assert verdict.word(_d("gap", 0.048, 0.008, 0.086)) == "a measurable cost"
    assert verdict.word(_d("gap", -0.048, -0.086, -0.008)) == "a measurable gain"
    line = verdict.against([("ID accuracy", _d("acc_id", 0.011, 0.004, 0.017))])
    assert line == "ID accuracy +1.1 [+0.4, +1.7] (a measurable gain)"


def test_one_seed_wording_is_never_measurable():
    """A one-seed difference whose interval (over examples only) excludes 0 reads the one-seed
    phrase everywhere a verdict is worded: never "measurable", never a recovery or a share won
    back, never the target met."""
    gain = _d("hard", 0.05, 0.03, 0.07, one_seed=True)
    cost = _d("hard", -0.09, -0.12, -0.06)
    acc = _d("acc_id", 0.001, -0.004, 0.006, one_seed=True)
    assert verdict.word(gain) == NO_SEED_VARIANCE
    assert verdict.kind(gain) == verdict.ONE_SEED and not verdict.measurable(gain)
    words = [
        verdict.word(gain),
        verdict.recovery(gain, cost, "hard-example accuracy", "Vanilla"),
        verdict.one_seed([("hard", gain)]),
        verdict.elsewhere("overlap", gain),
        verdict.wins_back_verdict(
            {"hard": gain, "acc_id": acc}, cost, None, [], {}, target=(0.5, 0.005)
        ),
    ]
    for w in words:
        assert "measurable" not in w and "wins back" not in w and "target" not in w, w
        assert NO_SEED_VARIANCE in w, w


def test_a_one_seed_effect_from_the_multi_bootstrap_reads_the_one_seed_phrase():
    rng = np.random.default_rng(0)
    a = Runs((rng.random((1, 3000)) < 0.8).astype(float), seeds=[42])
    b = Runs((rng.random((1, 3000)) < 0.7).astype(float), seeds=[42])
    from robust_compress.metrics.multiboot import delta

    d = Diff(delta(a, b))
    assert d.effect.excludes_zero and d.one_seed
    assert verdict.word(d) == NO_SEED_VARIANCE


def _share_case(loss_p, vanilla_p, teacher_p, n=4000):
    rng = np.random.default_rng(6)
    off = np.array([-0.005, 0.0, 0.005])[:, None]
    return share(
        Runs((rng.random((3, n)) < loss_p + off).astype(float)),
        Runs((rng.random((3, n)) < vanilla_p + off).astype(float)),
        Runs((rng.random((1, n)) < teacher_p).astype(float), fixed=True),
    )


def test_no_share_is_printed_when_the_cost_interval_includes_zero():
    none = Ratio(_share_case(0.61, 0.60, 0.60))
    assert not none.share.cost.excludes_zero
    assert verdict.share_cell(none) == NO_COST
    assert verdict.share_cell(none, "no measurable teacher gain") == "no measurable teacher gain"
    assert verdict.kept("hard", none) is None
    # nor in the verdict: a measurable gain against no measurable cost wins nothing back
    gain = _d("hard", 0.02, 0.01, 0.03)
    no_cost = _d("hard", -0.01, -0.03, 0.01)
    line = verdict.wins_back_verdict({"hard": gain}, no_cost, none, [], {})
    assert "wins back" not in line and "%" not in line, line
    # where the cost is measurable the share is printed, with its interval
    half = Ratio(_share_case(0.70, 0.60, 0.80))
    assert verdict.share_cell(half).endswith("]")


def test_a_share_whose_upper_end_passes_100_percent_prints_as_a_lower_bound():
    most = Ratio(_share_case(0.79, 0.76, 0.80))
    assert most.share.cost.excludes_zero and most.share.hi > 1
    cell = verdict.share_cell(most)
    assert cell.startswith("≥ ") and cell.endswith(" %") and "[" not in cell, cell
    assert cell == f"≥ {100 * most.share.lo:.0f} %"


def test_a_one_class_reference_blocks_a_gain_verdict():
    """A loss whose HANS cell rises against a Vanilla row that calls ≥ 90 % of HANS one class:
    the cell is marked ‡ and no verdict reads it as a gain (nor as a cost)."""
    cell = "cell:hans:heuristic=constituent/non-entailment"
    up = _d(cell, 0.2, 0.15, 0.25, one_class=("hans",))
    assert verdict.shown(up).endswith(" ‡")
    assert verdict.kind(up) == verdict.UNREAD and not verdict.measurable(up)
    assert "gain" not in verdict.word(up) and "not read" in verdict.word(up)
    hard = _d("hard", 0.001, -0.01, 0.012)
    line = verdict.wins_back_verdict(
        {"hard": hard, "acc_id": hard, cell: up}, None, None, [(cell, "hans constituent")], {}
    )
    assert "hans constituent +" not in line
    assert "its hans changes are not read: one class on hans (‡)" in line
    # the same rise against a reference on both classes is read
    read = verdict.wins_back_verdict(
        {"hard": hard, "acc_id": hard, cell: _d(cell, 0.2, 0.15, 0.25)},
        None,
        None,
        [(cell, "hans constituent")],
        {},
    )
    assert "hans constituent +20.0" in read


def test_ece_is_linearised_exactly_and_metrics_are_weighted_sums():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.34, 1.0, 3000)
    correct = (rng.random(3000) < conf - 0.1).astype(float)
    part = pd.DataFrame({"correct": correct, "confidence": conf})
    assert example_scores("calibration", part).mean() == pytest.approx(
        expected_calibration_error(conf, correct), abs=1e-12
    )
    assert metric_weights("gap", ["easy", "hard"]) == {"easy": 1.0, "hard": -1.0}
    assert metric_weights("reliance", ["aligned", "conflicting"]) == {
        "aligned": 1.0,
        "conflicting": -1.0,
    }
    assert metric_weights("acc_ood", ["mean:a", "mean:b"]) == {"mean:a": 0.5, "mean:b": 0.5}
    assert metric_weights("acc_id", ["all"]) == {"all": 1.0}
    assert math.isfinite(example_scores("all", pd.Series([1.0, 0.0])).sum())
