"""A weights-free copy of a study (index, per-run records and prediction tables, easy/hard, speed
and analysis files) with its report: small enough to commit, and `report` rebuilds it from the
copy."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .. import schemas
from ..io import (
    UserError,
    adopt,
    atomic_dir,
    check_apart,
    claim_output,
    read_json,
    read_parquet,
)
from .load import study_reads
from .render import build_report

RUN_FILES = (
    "summary.json",
    "compression.json",
    "run_config.yaml",
    "train_metrics.json",
    "stage.json",
)


def _compact_parquet(src: Path, dst: Path) -> None:
    """Probabilities as float32 and zstd: a committed export is ~45 % smaller; every reported number
    (accuracies, confidences to 0.1 %) is unchanged."""
    df = pd.read_parquet(src)
    floats = df.select_dtypes("float64").columns
    df[floats] = df[floats].astype("float32")
    df.to_parquet(dst, index=False, compression="zstd")


def _copy_run(src: Path, dst: Path) -> None:
    (dst / "predictions").mkdir(parents=True)
    for f in RUN_FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, dst / f)
    for p in sorted((src / "predictions").glob("*.parquet")):
        _compact_parquet(p, dst / "predictions" / p.name)


def _rel(entry: dict) -> Path:
    return Path("runs") / str(entry["name"]).replace("/", "__")


def read_index(path: Path) -> list[dict]:
    """An index.json's runs as written (a merge writes them back), read through their schema: one
    line naming the file and the entry when it is not a list of runs."""
    schemas.read_index(path)
    return read_json(path)


def claim_export(
    study: Path, dest: Path, overwrite: bool = False, merge: bool = False
) -> list | None:
    """The output guard for an export (before any work): `dest` is apart from all the study reads;
    a new export needs a fresh `dest` (or the tool's own, with `overwrite`); a merge needs an
    existing export (one made before output records is recognised by its index). Returns the
    index a merge adds to."""
    study, dest = Path(study), Path(dest)
    if not merge:
        claim_output(dest, study_reads(study), overwrite)
        return None
    check_apart(dest, study_reads(study))
    if not (dest / "index.json").is_file():
        raise UserError(f"{dest}: not an export (no index.json) to merge into")
    index = read_index(dest / "index.json")
    adopt(dest)
    claim_output(dest, overwrite=True)
    return index


def export_study(study_dir: str | Path, dest: str | Path, overwrite: bool = False) -> Path:
    """Copy a study's records, predictions and analysis to `dest` and build its report there. An
    existing non-empty `dest` is replaced only with `overwrite`, and never the study itself."""
    study, dest = Path(study_dir), Path(dest)
    claim_export(study, dest, overwrite)
    entries = read_json(study / "index.json")
    with atomic_dir(dest) as tmp:
        rows = []
        for e in entries:
            _copy_run(study / str(e["path"]), tmp / _rel(e))
            rows.append(e | {"path": _rel(e).as_posix()})
        (tmp / "index.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        for sub in ("easy_hard", "analysis"):
            if (study / sub).is_dir():
                shutil.copytree(study / sub, tmp / sub)
        if (study / "speed.json").is_file():
            shutil.copy2(study / "speed.json", tmp / "speed.json")
        build_report(tmp, name=dest.name)
    return dest


def _same_run(new: Path, old: Path, name: str, dest: Path) -> None:
    """A run both hold must be one run: the same stage key and the same predictions, bit for bit
    (a rerun on another machine or thread count is another run, not a duplicate)."""
    keys = [
        read_json(d / "stage.json").get("key") if (d / "stage.json").is_file() else None
        for d in (new, old)
    ]
    files = [sorted(p.name for p in (d / "predictions").glob("*.parquet")) for d in (new, old)]
    why = None
    if None not in keys and keys[0] != keys[1]:
        why = f"stage key {keys[0]} vs {keys[1]}"
    elif files[0] != files[1]:
        why = f"prediction files {files[0]} vs {files[1]}"
    else:
        for f in files[0]:
            a, b = (read_parquet(d / "predictions" / f) for d in (new, old))
            if not a.equals(b):
                why = f"predictions/{f} differ"
                break
    if why:
        raise UserError(
            f"{name}: the study's run and the one in {dest} differ ({why}); nothing merged"
        )


def merge_export(study_dir: str | Path, dest: str | Path) -> tuple[list[str], list[str]]:
    """Add a study's runs to an existing export (rows added to a preset later, a shard run on
    another machine): the merged export reports as a one-piece export would. A run both hold is
    checked to be the same run, and the easy/hard splits they share to be equal; `dest`'s analysis
    and speed files are kept. Returns the runs added and the runs both held."""
    study, dest = Path(study_dir), Path(dest)
    index = claim_export(study, dest, merge=True)
    held = {e["name"]: e for e in index}
    added, same = [], []
    with atomic_dir(dest) as tmp:
        shutil.copytree(dest, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("report"))
        for p in sorted((study / "easy_hard").glob("*.parquet")):
            mine = tmp / "easy_hard" / p.name
            if not mine.is_file():
                mine.parent.mkdir(exist_ok=True)  # an export made before any bias model ran
                shutil.copy2(p, mine)
            elif not read_parquet(p).equals(read_parquet(mine)):
                raise UserError(
                    f"{p}: differs from {dest}/easy_hard/{p.name} (another bias model's split); "
                    "nothing merged"
                )
        for e in read_index(study / "index.json"):
            src = study / str(e["path"])
            if e["name"] in held:
                scratch = Path(tempfile.mkdtemp(dir=tmp))
                _copy_run(src, scratch / "run")
                _same_run(scratch / "run", tmp / held[e["name"]]["path"], e["name"], dest)
                shutil.rmtree(scratch)
                same.append(e["name"])
            else:
                _copy_run(src, tmp / _rel(e))
                index.append(e | {"path": _rel(e).as_posix()})
                added.append(e["name"])
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        build_report(tmp, name=dest.name)
    return added, same
