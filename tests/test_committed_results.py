"""Every committed study under docs/results rebuilds from the repository alone: its report is
regenerated from the committed prediction tables and must equal the committed metrics.csv."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robust_compress.metrics.multiboot import NO_COST, NO_SEED_VARIANCE
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
    md = (ROOT / "docs" / "results" / "mnli-mitigation" / "report" / "report.md").read_text()
    bad = [
        m.group(0)
        for m in re.finditer(r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\]", md)
        if m.group(2) == m.group(3) and float(m.group(1)) != 0
    ]
    assert not bad, bad[:5]


def _table(md: str, title: str) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    table = md.split(f"## {title}")[1].split("\n\n")[1]
    header, _, *body = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()]
    return header, {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in body}


def test_a_model_that_predicts_one_class_on_hans_is_marked_in_the_wins_back_table():
    """The MPNet study's 6-layer student trained with PoE-overlap calls every HANS pair
    non-entailed: its +93-point 'gain' on non-entailed lexical overlap is a constant's score. Its
    HANS cells carry ‡ and its verdict claims no HANS gain. Magnitude 40 % with the same loss gets
    both HANS classes right often enough, but its Vanilla row calls 95 % of HANS entailed: a
    difference against that reference is marked too. A row where neither side predicts one class
    (the student with reweight-hyp against the student's Vanilla) keeps its cells unmarked."""
    md = (ROOT / "docs" / "results" / "mnli-mitigation-mpnet" / "report" / "report.md").read_text()
    header, rows = _table(md, "What wins it back: each loss against the Vanilla row")
    hans = [h for h in header if h.startswith("Δ hans")]
    assert hans
    student = rows[("student-MiniLM-L6", "poe-overlap")]
    assert all(student[h].endswith("‡") for h in hans)
    assert "hans non-entailment" not in student["verdict"]
    assert student["verdict"].startswith(NO_SEED_VARIANCE)  # one seed: no verdict at all
    pruned = rows[("magnitude-0.40", "poe-overlap")]
    assert all(pruned[h].endswith("‡") for h in hans)  # its reference calls HANS one class
    assert "hans non-entailment" not in pruned["verdict"]
    read = rows[("student-MiniLM-L6", "reweight-hyp")]
    assert not any(read[h].endswith("‡") for h in hans)


def test_a_one_class_row_is_marked_in_the_debias_then_compress_table_too():
    """Magnitude 60 % of the PoE-hyp teacher still calls ≥ 90 % of HANS entailed: its HANS deltas
    and shares carry ‡. The PoE-overlap rows left the HANS floor, but the row they are compared
    with (the same compression of the study's teacher) did not: theirs carry ‡ as well, and no
    line claims a kept HANS gain."""
    md = (ROOT / "docs" / "results" / "mnli-mitigation" / "report" / "report.md").read_text()
    header, rows = _table(md, "Debias, then compress")
    hans = [h for h in header if "hans" in h and h.startswith("Δ")]
    assert hans
    for key in (("magnitude-0.60@poe-hyp", "distil"), ("magnitude-0.60@poe-overlap", "distil")):
        assert all(rows[key][h].endswith("‡") for h in hans), key
        shares = [rows[key][h.replace("Δ ", "share kept: ")] for h in hans]
        assert all(c.endswith("‡") or c == "no measurable teacher gain" for c in shares), shares
    lines = md.split("## What wins it back\n")[1].split("\n## ")[0]
    assert not re.search(r"hans [^;]*: keeps", lines)


def test_one_seed_rows_read_no_verdict_and_shares_need_a_measurable_cost():
    """Every wins-back row with one seed reads the one-seed phrase, never "measurable" or "wins
    back"; a share is printed only where the compression's hard-example cost is measurable
    (magnitude 40 %, one Vanilla seed whose cost's interval includes 0, shows none)."""
    md = (ROOT / "docs" / "results" / "mnli-mitigation" / "report" / "report.md").read_text()
    _, rows = _table(md, "What wins it back: each loss against the Vanilla row")
    one = [r for r in rows.values() if r["Seeds"] == "1" and "collapsed" not in r["verdict"]]
    assert len(one) > 20
    for r in one:
        assert r["verdict"].startswith(NO_SEED_VARIANCE), r["verdict"]
        assert "measurabl" not in r["verdict"] and "wins back" not in r["verdict"]
    mag40 = [r for (g, _), r in rows.items() if g == "magnitude-0.40"]
    assert mag40 and all(r["hard-example cost recovered"] == NO_COST for r in mag40)
    three = [r for r in rows.values() if r["Seeds"] == "3"]
    assert any("wins back" in r["verdict"] for r in three)
