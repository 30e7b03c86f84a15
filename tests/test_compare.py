"""A difference between two models is measured on the examples both were evaluated on: a teacher
given as a folder may have been evaluated on a subset of the study's sets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robust_compress.metrics.compare import compare


def _parts(ids, correct):
    return {"all": pd.Series(np.asarray(correct, float), index=[str(i) for i in ids])}


def test_a_difference_is_taken_on_the_examples_both_sides_share():
    rng = np.random.default_rng(0)
    first = rng.random(200) < 0.6  # the examples the teacher was evaluated on
    teacher = _parts(range(200), first)
    # three seeds, each equal to the teacher on its 200 examples and right on the 800 it never saw
    students = [_parts(range(1000), np.r_[first, np.ones(800)]) for _ in range(3)]
    d, lo, hi = compare("acc_id", students, [teacher], [0, 1, 2], [0])
    assert d == 0.0, "the students' extra examples entered the difference"
    d1, _, _ = compare("acc_id", students[:1], [teacher], [0], [0])
    assert d1 == 0.0


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
