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
