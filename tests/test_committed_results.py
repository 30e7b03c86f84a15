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


def test_the_mitigation_study_grades_every_loss_on_a_second_bias_models_split_too():
    """A loss that reads the hypothesis-only bias model is graded on that model's hard examples;
    the overlap model's split is the independent check, its own column computed on its own split."""
    md = (ROOT / "docs" / "results" / "mnli-mitigation" / "report" / "report.md").read_text()
    table = md.split("## What wins it back: each loss against the Vanilla row")[1].split("\n\n")[1]
    header, _, *body = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()]
    own, other = header.index("Δ hard"), header.index("Δ hard (overlap split)")
    assert len(body) > 20
    assert sum(r[own] != r[other] for r in body) > len(body) // 2


def test_no_difference_in_the_mitigation_report_has_a_zero_width_interval():
    """A loss trained at one seed against a 3-seed Vanilla row once took its interval from
    Vanilla's seeds alone: a cell equal in the three Vanilla runs read -0.3 [-0.3, -0.3] and was
    called measurable. Paired at the row's own seed, every non-zero difference has a width."""
    import re

    md = (ROOT / "docs" / "results" / "mnli-mitigation" / "report" / "report.md").read_text()
    bad = [
        m.group(0)
        for m in re.finditer(r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\]", md)
        if m.group(2) == m.group(3) and float(m.group(1)) != 0
    ]
    assert not bad, bad[:5]


def test_a_model_that_predicts_one_class_on_hans_is_marked_in_the_wins_back_table():
    """The MPNet study's 6-layer student trained with PoE-overlap calls every HANS pair
    non-entailed: its +93-point 'gain' on non-entailed lexical overlap is a constant's score. Its
    HANS cells carry ‡ and its verdict claims no HANS gain; a model with both HANS classes right
    often enough (magnitude 40 % with the same loss) keeps its cells unmarked."""
    md = (ROOT / "docs" / "results" / "mnli-mitigation-mpnet" / "report" / "report.md").read_text()
    table = md.split("## What wins it back: each loss against the Vanilla row")[1].split("\n\n")[1]
    header, _, *body = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()]
    rows = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in body}
    hans = [h for h in header if h.startswith("Δ hans")]
    assert hans
    student = rows[("student-MiniLM-L6", "poe-overlap")]
    assert all(student[h].endswith("‡") for h in hans)
    assert "hans non-entailment" not in student["verdict"]
    assert "its hans changes are not read: one class on hans (‡)" in student["verdict"]
    pruned = rows[("magnitude-0.40", "poe-overlap")]
    assert not any(pruned[h].endswith("‡") for h in hans)
    assert "hans non-entailment constituent +" in pruned["verdict"]
    assert "‡" in md.split("## What wins it back: each loss against the Vanilla row")[1]


def test_a_one_class_row_is_marked_in_the_debias_then_compress_table_too():
    """Magnitude 60 % of the PoE-hyp teacher still calls ≥ 90 % of HANS entailed: its HANS deltas
    and shares carry ‡; the PoE-overlap rows, which left the HANS floor, carry none."""
    md = (ROOT / "docs" / "results" / "mnli-mitigation" / "report" / "report.md").read_text()
    table = md.split("## Debias, then compress")[1].split("\n\n")[1]
    header, _, *body = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()]
    rows = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in body}
    hans = [h for h in header if "hans" in h and h.startswith("Δ")]
    assert hans
    assert all(rows[("magnitude-0.60@poe-hyp", "distil")][h].endswith("‡") for h in hans)
    assert not any(rows[("magnitude-0.60@poe-overlap", "distil")][h].endswith("‡") for h in hans)
