"""Speed-ups from raw timings (metrics.timing): paired by round, an interval that holds the
variance between processes as well as between rounds."""

import numpy as np
import pytest

from robust_compress.metrics.timing import geometric, rates, speedup


def test_a_constant_ratio_has_no_width():
    base = [[100.0, 101.0, 99.0], [98.0, 97.0, 102.0]]
    model = [[2 * x for x in p] for p in base]
    est = speedup(model, base)
    assert est.point == pytest.approx(2.0)
    assert est.lo == pytest.approx(2.0) and est.hi == pytest.approx(2.0)


def test_drift_that_hits_both_models_in_a_round_cancels():
    """The machine slows by up to 3x between rounds; the model is always 1.5x the base in the same
    round. Pairing by round must see 1.5x exactly; comparing the two sets of rounds unpaired would
    not."""
    rng = np.random.default_rng(0)
    drift = rng.uniform(1, 3, size=(3, 6))
    base = (100 / drift).tolist()
    model = (150 / drift).tolist()
    est = speedup(model, base)
    assert est.hi - est.lo < 1e-9 and est.point == pytest.approx(1.5)
    unpaired = geometric(model).point / geometric(base).point
    assert unpaired == pytest.approx(1.5)  # the point agrees; only pairing keeps the interval tight


def test_variance_between_processes_widens_the_interval():
    """Every round of a process agrees exactly, but processes disagree (1.8x, 2.0x, 2.2x): an
    interval over rounds alone would have no width; this one must hold the spread."""
    base = [[100.0] * 5] * 3
    model = [[100.0 * s] * 5 for s in (1.8, 2.0, 2.2)]
    est = speedup(model, base)
    assert est.lo <= 1.85 and est.hi >= 2.15
    assert est.lo < est.point < est.hi


def test_round_noise_alone_is_held_too():
    base = [[100.0] * 5, [100.0] * 5]
    model = [[190.0, 210.0, 200.0, 195.0, 205.0]] * 2
    est = speedup(model, base)
    assert est.lo < 1.99 and est.hi > 2.01


def test_rates_and_bad_timings():
    assert rates([[2.0, 4.0]], 100) == [[50.0, 25.0]]
    with pytest.raises(ValueError, match="same number"):
        geometric([[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="positive"):
        geometric([[1.0, 0.0]])
    with pytest.raises(ValueError, match="same rounds"):
        speedup([[1.0, 2.0]], [[1.0, 2.0, 3.0]])
