"""What is committed under docs/results/ rebuilds: benchmark records hold raw per-round timings from
several processes on a named clean commit, and their tables are computed from those timings; a
stage record on uncommitted code is declared in its export's PROVENANCE.md, never silent."""

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
BENCH = RESULTS / "benchmarks"
RECORDS = sorted(BENCH.glob("*.json"))


def test_there_are_benchmark_records():
    assert RECORDS


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_a_benchmark_record_holds_raw_timings_from_several_processes(path: Path):
    rec = json.loads(path.read_text(encoding="utf-8"))
    assert not rec["code_version"].endswith("-dirty"), f"{path.name}: from uncommitted code"
    assert rec["code_version"] not in ("", "unknown")
    assert rec["machine"]["cpu"] and rec["machine"]["threads"] >= 1
    assert len(rec["runs"]) == rec["processes"] >= 2, f"{path.name}: fewer than 2 processes"
    for run in rec["runs"]:
        assert run["machine"]["cpu"] == rec["machine"]["cpu"]
        for group in run["groups"].values():
            for model, secs in group["seconds"].items():
                assert len(secs) == rec["rounds"] >= 2, f"{path.name}: {model}: rounds missing"
                assert all(s > 0 for s in secs)
                assert group["examples"][model] > 0


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_a_benchmark_table_is_computed_from_its_raw_timings(path: Path, monkeypatch):
    """The estimates and the printed rows are what the record's own script computes from the
    record's raw seconds: a number typed in, or left from another run, fails."""
    rec = json.loads(path.read_text(encoding="utf-8"))
    script = ROOT / rec["command"].split()[1]
    monkeypatch.syspath_prepend(str(BENCH.parents[2] / "benchmarks"))
    common = runpy.run_path(str(ROOT / "benchmarks" / "common.py"))
    assert common["estimates"](rec) == rec["estimates"]
    module = runpy.run_path(str(script), run_name="benchmark")
    header, rows = module["table"](rec)
    assert (header, rows) == (rec["header"], rec["rows"])
    sys.modules.pop("common", None)


def test_a_timing_typed_into_a_record_is_caught():
    rec = json.loads((BENCH / "compressed-speed.json").read_text(encoding="utf-8"))
    common = runpy.run_path(str(ROOT / "benchmarks" / "common.py"))
    group = next(iter(rec["runs"][0]["groups"].values()))
    model = list(group["seconds"])[1]
    group["seconds"][model][0] *= 0.5
    assert common["estimates"](rec) != rec["estimates"]


def _dirty_records(export: Path) -> list[Path]:
    return [
        p
        for p in export.rglob("stage.json")
        if str(json.loads(p.read_text()).get("code_version", "")).endswith("-dirty")
    ]


@pytest.mark.parametrize(
    "export",
    sorted(p for p in RESULTS.iterdir() if p.is_dir() and p.name != "benchmarks"),
    ids=lambda p: p.name,
)
def test_records_on_uncommitted_code_are_declared_with_their_count(export: Path):
    """Issue 29: no `-dirty` record is silent. An export that still holds some says how many in its
    PROVENANCE.md (they await a rerun from a clean commit); a new one, or a rerun that removed
    them without updating the note, fails."""
    dirty = _dirty_records(export)
    prov = export / "PROVENANCE.md"
    text = prov.read_text(encoding="utf-8") if prov.is_file() else ""
    declared = re.search(r"(\d+) of this export's `stage.json` records name a `-dirty`", text)
    assert (int(declared[1]) if declared else 0) == len(dirty), (
        f"{export.name}: {len(dirty)} records on uncommitted code, "
        f"{declared[1] if declared else 0} declared in PROVENANCE.md"
    )
