"""A difference between two rows (`report/effects.py`) is measured on the examples every side was
evaluated on (a teacher given as a folder may have been evaluated on a subset of the study's sets),
paired by seed, the teacher a fixed reference; a share and the gain printed beside it come from the
same examples; a side that predicts one class marks the difference ‡."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robust_compress.metrics.multiboot import NO_SEED_VARIANCE
from robust_compress.report import verdict
from robust_compress.report.compute import Rows
from robust_compress.report.effects import Effects, side
from robust_compress.report.load import Run

CELL = "cell:hans:heuristic=constituent/non-entailment"


def _table(correct, start=0) -> pd.DataFrame:
    n = len(correct)
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(start, start + n)],
            "gold": ["non-entailment"] * n,
            "pred": ["x"] * n,
            "correct": np.asarray(correct, bool),
            "confidence": np.full(n, 0.9),
            "heuristic": ["constituent"] * n,
        }
    )


def _run(name, unit, seed, dev, hans=None, teacher=False) -> Run:
    tables = {"dev": _table(dev)} | ({"hans": _table(hans)} if hans is not None else {})
    roles = {"dev": "id"} | ({"hans": "ood"} if hans is not None else {})
    rule = {"splits": ["hans"] if hans is not None else [], "combine": "pooled"}
    return Run(
        name, unit, "m", "ce", None, seed, teacher, roles, "dev", tables, {}, rule, unit=unit
    )


def _rows(groups: dict[str, dict] | None = None) -> Rows:
    return Rows({}, groups or {}, "teacher")


def test_a_difference_is_taken_on_the_examples_both_sides_share():
    rng = np.random.default_rng(0)
    first = rng.random(200) < 0.6  # the examples the teacher was evaluated on
    teacher = side([_run("t", "teacher", 0, first, teacher=True)])
    assert teacher.fixed
    # three seeds, each equal to the teacher on its 200 examples and right on the 800 it never saw
    students = [_run(f"s{s}", "s", s, np.r_[first, np.ones(800)]) for s in range(3)]
    fx = Effects(_rows())
    d = fx.diff(side(students), teacher, "acc_id")
    assert d.estimate == 0.0, "the students' extra examples entered the difference"
    assert fx.diff(side(students[:1]), teacher, "acc_id").estimate == 0.0
    assert fx.diff(side(students), teacher, "acc_id") is d  # computed once per report


def test_the_teacher_is_fixed_and_a_one_seed_row_is_flagged():
    rng = np.random.default_rng(1)
    t = side([_run("t", "teacher", 42, rng.random(3000) < 0.9, teacher=True)])
    three = side([_run(f"v{s}", "v", s, rng.random(3000) < 0.7) for s in (42, 43, 44)])
    one = side([_run("w", "w", 42, rng.random(3000) < 0.7)])
    fx = Effects(_rows())
    assert not fx.diff(three, t, "acc_id").one_seed  # the teacher's one run raises no flag
    d = fx.diff(one, t, "acc_id")
    assert d.one_seed and d.effect.excludes_zero
    assert verdict.word(d) == NO_SEED_VARIANCE


def test_the_gain_beside_a_share_is_taken_on_the_same_examples_as_the_share():
    """Teachers evaluated on 5,000 examples, compressed rows on the first 2,000: the share kept and
    the teacher's gain printed beside it are both on the 2,000 all four rows share (the gain on all
    5,000 is another number)."""
    rng = np.random.default_rng(2)
    n, m = 5000, 2000
    t_ok = rng.random(n) < 0.3
    # the debiased teacher gains +40 points on the first 2,000 examples, +10 on the rest
    tv_ok = t_ok | (rng.random(n) < np.r_[np.full(m, 0.57), np.full(n - m, 0.143)])
    t = side([_run("t", "teacher", 0, t_ok, hans=t_ok, teacher=True)])
    tv = side([_run("tv", "tv", 0, tv_ok, hans=tv_ok)], fixed=True)
    ref = side(
        [_run(f"r{s}", "r", s, rng.random(m) < 0.3, hans=rng.random(m) < 0.3) for s in range(3)]
    )
    mine = side(
        [_run(f"c{s}", "c", s, rng.random(m) < 0.5, hans=rng.random(m) < 0.5) for s in range(3)]
    )
    fx = Effects(_rows())
    r = fx.share((mine, ref), (tv, t), CELL)
    on_shared = tv_ok[:m].mean() - t_ok[:m].mean()
    on_all = fx.diff(tv, t, CELL).estimate
    assert r.share.cost.estimate == pytest.approx(on_shared)
    assert abs(on_all - on_shared) > 0.1  # the two really differ here
    line = verdict.kept("hans constituent", r)
    assert f"of the teacher's {verdict.points(r.share.cost)}" in line, line
    assert f"{100 * on_all:+.1f}" not in line
    # the wins-back share likewise: the gain beside it is the share's own numerator
    wb = fx.share((mine, ref), (t, ref), CELL)
    gain, cost = fx.diff(mine, ref, CELL), fx.diff(ref, t, CELL)
    text = verdict.recovery(gain, cost, "hans", "Vanilla", wb)
    assert verdict.points(wb.share.gain) in text


def test_a_one_class_row_on_either_side_marks_the_difference():
    rng = np.random.default_rng(3)
    mk = {
        u: [
            _run(f"{u}{s}", u, s, rng.random(900) < 0.8, hans=rng.random(900) < p) for s in range(3)
        ]
        for u, p in (("loss", 0.6), ("vanilla", 0.1), ("other", 0.2))
    }
    groups = {
        "loss": {"top_pred_share.hans": 0.70},
        "vanilla": {"top_pred_share.hans": 0.95},  # calls 95 % of HANS one class
        "other": {"top_pred_share.hans": 0.80},
    }
    fx = Effects(_rows(groups))
    against_collapsed = fx.diff(side(mk["loss"]), side(mk["vanilla"]), CELL)
    assert against_collapsed.one_class == ("hans",)
    assert verdict.kind(against_collapsed) == verdict.UNREAD
    assert verdict.shown(against_collapsed).endswith("‡")
    # the OOD accuracy is measured on HANS too
    assert fx.diff(side(mk["loss"]), side(mk["vanilla"]), "acc_ood").one_class == ("hans",)
    # ID is not: no mark
    assert fx.diff(side(mk["loss"]), side(mk["vanilla"]), "acc_id").one_class == ()
    fine = fx.diff(side(mk["loss"]), side(mk["other"]), CELL)
    assert fine.one_class == () and verdict.kind(fine) == verdict.IS_GAIN


def test_a_trimmed_row_is_compared_with_its_reference_at_its_own_seeds():
    """A loss run at seed 42 against Vanilla at 42, 43 and 44: paired with Vanilla's seed-42 run
    (the interval then carries its own run's noise), not with the three seeds' mean as if it had
    none (a HANS cell equal in the three Vanilla runs read -0.3 [-0.3, -0.3], 'measurable')."""
    from types import SimpleNamespace as R

    from robust_compress.report.load import at_seeds_of

    vanilla = [R(seed=s) for s in (42, 43, 44)]
    assert [r.seed for r in at_seeds_of(vanilla, [R(seed=42)])] == [42]
    assert [r.seed for r in at_seeds_of(vanilla, [R(seed=43), R(seed=44)])] == [43, 44]
    assert at_seeds_of(vanilla, [R(seed=s) for s in (42, 43, 44)]) == vanilla
    assert at_seeds_of(vanilla, [R(seed=7)]) == vanilla  # no shared seed: the row's mean
