"""Every committed study under docs/results rebuilds from the repository alone: its report is
regenerated from the committed prediction tables and must equal the committed metrics.csv."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from robust_compress.report import build_report

from .conftest import ROOT

STUDIES = sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/index.json"))


def test_there_are_committed_studies():
    assert STUDIES, "docs/results holds no study export"


@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_committed_report_rebuilds_to_the_same_numbers(study: Path, tmp_path):
    copy = tmp_path / study.name
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("report"))
    out = build_report(copy, name=study.name)
    committed = pd.read_csv(study / "report" / "metrics.csv")
    rebuilt = pd.read_csv(out / "metrics.csv")
    assert list(rebuilt.columns) == list(committed.columns)
    assert len(rebuilt) == len(committed)
    pd.testing.assert_frame_equal(rebuilt, committed, check_exact=False, rtol=1e-9, atol=1e-12)
    assert (out / "report.md").read_text() == (study / "report" / "report.md").read_text()
