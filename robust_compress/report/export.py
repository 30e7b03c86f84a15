"""A weights-free copy of a study (index, per-run records and prediction tables, easy/hard, speed
and analysis files) with its report: small enough to commit, and `report` rebuilds it from the
copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from ..io import atomic_dir, check_fresh_output, check_not_inside, read_json
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


def export_study(study_dir: str | Path, dest: str | Path, overwrite: bool = False) -> Path:
    """Copy a study's records, predictions and analysis to `dest` and build its report there. An
    existing non-empty `dest` is replaced only with `overwrite`, and never the study itself."""
    study, dest = Path(study_dir), Path(dest)
    check_not_inside(dest, study, "study folder")
    check_fresh_output(dest, overwrite)
    entries = read_json(study / "index.json")
    with atomic_dir(dest) as tmp:
        rows = []
        for e in entries:
            src = study / str(e["path"])
            rel = Path("runs") / str(e["name"]).replace("/", "__")
            (tmp / rel / "predictions").mkdir(parents=True)
            for f in RUN_FILES:
                if (src / f).is_file():
                    shutil.copy2(src / f, tmp / rel / f)
            for p in sorted((src / "predictions").glob("*.parquet")):
                _compact_parquet(p, tmp / rel / "predictions" / p.name)
            rows.append(e | {"path": rel.as_posix()})
        (tmp / "index.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        for sub in ("easy_hard", "analysis"):
            if (study / sub).is_dir():
                shutil.copytree(study / sub, tmp / sub)
        if (study / "speed.json").is_file():
            shutil.copy2(study / "speed.json", tmp / "speed.json")
        build_report(tmp, name=dest.name)
    return dest
