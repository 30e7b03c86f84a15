"""Where a study's per-sample uncertainty comes from, one class per source behind one registry
(`SOURCES`). A source says which pruning runs of the teacher it needs (each a cached stage), which
of its settings change the result (in the key), how many models score the training set (for the time
estimate) and how it computes v_i. Adding a source: one class here and one line in `SOURCES` (a new
setting: a field of the experiment's `uncertainty` section)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import RunConfig
from ..io import UserError
from .check import given_run_config
from .progress import Reporter
from .shortcut import compute_uncertainty

if TYPE_CHECKING:
    from .graph import Stage


class Source:
    name: ClassVar[str]
    summary: ClassVar[str]  # for the experiment's help text

    def runs(self, sparsities: list[float]) -> dict[str, dict[str, Any]]:
        """The pruning runs of the teacher it scores with: stage-name suffix -> compression
        settings."""
        return {}

    def params(self, settings) -> dict[str, Any]:
        """Its settings that change v (in the key)."""
        return {"sparsities": settings.sparsities}

    def models_scored(self, stage: Stage) -> int:
        return len(stage.params.get("sparsities", []))

    def check(self, teacher: Stage, where: str | Path) -> None:
        """Refuse a teacher this source cannot use, before any work."""

    def compute(self, stage: Stage, cfg: RunConfig, out: Path, rep: Reporter) -> None:
        raise NotImplementedError


def _teacher(stage: Stage) -> Path:
    return stage.config.model.path


class Snapshots(Source):
    name = "snapshots"
    summary = "snapshots of one pruning run"

    def runs(self, sparsities):
        return {"": {"method": "magnitude", "sparsity": max(sparsities), "snapshots": sparsities}}

    def compute(self, stage, cfg, out, rep):
        compute_uncertainty(cfg, out, snapshots=str(stage.deps[0].snapshot_dir), progress=rep)


class Runs(Source):
    name = "runs"
    summary = "separate pruning runs (the paper)"

    def runs(self, sparsities):
        return {f"-{s:.2f}": {"method": "magnitude", "sparsity": s} for s in sparsities}

    def models_scored(self, stage):
        return len(stage.deps)

    def compute(self, stage, cfg, out, rep):
        compute_uncertainty(cfg, out, models=[str(d.path) for d in stage.deps], progress=rep)


class OneShot(Source):
    name = "oneshot"
    summary = "one-shot pruning"

    def compute(self, stage, cfg, out, rep):
        compute_uncertainty(
            cfg,
            out,
            oneshot=str(_teacher(stage)),
            sparsities=stage.params["sparsities"],
            progress=rep,
        )


class Dynamics(Source):
    name = "dynamics"
    summary = "the teacher's own training dynamics (free; teacher epochs >= 2)"

    def params(self, settings):
        return {"stat": settings.stat}

    def models_scored(self, stage):
        return 0

    def check(self, teacher, where):
        if teacher.given and not (Path(teacher.path).expanduser() / "dynamics.parquet").is_file():
            raise UserError(
                f"{where}: uncertainty.source dynamics: the given teacher {teacher.meta['given']} "
                "recorded no training dynamics (dynamics.parquet)"
            )
        t = given_run_config(teacher.path) if teacher.given else teacher.resolve()
        if not t.max_steps and t.epochs < 2:
            raise UserError(
                f"{where}: uncertainty.source dynamics needs the teacher to see each example at "
                f"least twice (teacher epochs {t.epochs} < 2)"
            )

    def compute(self, stage, cfg, out, rep):
        compute_uncertainty(
            cfg, out, dynamics=str(_teacher(stage)), stat=stage.params["stat"], progress=rep
        )


SOURCES: dict[str, Source] = {s.name: s() for s in (Snapshots, Runs, OneShot, Dynamics)}
