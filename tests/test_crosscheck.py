"""The main job's headline holds on another machine: each run's numbers lie inside the other run's
multi-bootstrap intervals (report/crosscheck.py), checked on the two committed runs."""

from pathlib import Path

import pytest

from robust_compress.report.crosscheck import Check, cross_check

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
A, B = RESULTS / "mnli-minilm-quick", RESULTS / "mnli-minilm-quick-threads1"


def test_a_run_against_itself_agrees_everywhere():
    checks = cross_check(A, A)
    assert len(checks) >= 20
    assert all(c.a == c.b and c.a_in_b and c.b_in_a for c in checks)
    assert {c.what for c in checks} >= {"dev-m", "hard", "Δ dev-m vs teacher", "Δ hard vs ce"}


def test_a_point_outside_the_other_interval_is_caught():
    c = Check("row", "dev-m", (70.0, 68.0, 72.0), (65.0, 63.0, 67.0))
    assert not c.a_in_b and not c.b_in_a
    assert Check("row", "dev-m", (66.0, 64.0, 68.0), (65.0, 63.0, 67.0)).a_in_b


@pytest.mark.skipif(not B.is_dir(), reason="the second run is not committed")
def test_the_main_job_at_one_thread_lands_inside_the_committed_intervals_and_back():
    """Issue 29: the same study at another thread count (a stand-in for another CPU): every
    README number of the main job must fall inside the other run's interval, both ways."""
    bad = [c for c in cross_check(A, B) if not (c.a_in_b and c.b_in_a)]
    assert not bad, [(c.row, c.what, c.a, c.b) for c in bad]
