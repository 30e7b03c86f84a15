"""Every kind of study stage, one class each (the interface: `graph.Kind`), registered in `KINDS`
by the last line. The study plans stages of these kinds and runs them through an executor; it never
asks which kind it holds. Adding a kind: one class here and its name in that line (and the study's
planner places its stages in the graph).
"""

from __future__ import annotations

from .. import schemas
from ..compress import METHODS
from ..config import RunConfig
from ..io import atomic_dir
from .check import ExternalInputs
from .graph import KINDS, Kind, Stage, StageModel, TeacherRef
from .shortcut import bias_kind, train_bias_model
from .sources import SOURCES
from .speed import measure_speed
from .training import compress, finetune


def summary_line(stage: Stage) -> str:
    """Accuracy per split and F_bias, from the summary.json a model stage wrote."""
    if not (stage.path / "summary.json").is_file():
        return ""
    s = schemas.read(stage.path / "summary.json", schemas.Summary)
    parts = [
        f"{name} {100 * v.accuracy:.1f}"
        for name, v in s.splits.items()
        if v.role != "cue" and v.accuracy is not None
    ]
    if s.f_bias is not None:
        parts.append(f"F_bias {s.f_bias:.2f}")
    return ", ".join(parts)


class ModelStage(Kind):
    """A stage that trains (or quantizes) and evaluates a model: its data, start model and method
    are checked, and its summary is its result."""

    def result(self, stage: Stage) -> str:
        return summary_line(stage)

    def check(self, stage: Stage, cfg: RunConfig, ins: ExternalInputs) -> None:
        method = (
            METHODS[cfg.compression.method](cfg.compression)
            if cfg.compression is not None
            else None
        )
        trains = method is None or method.trains
        data, n_train, n_eval = ins.data(
            cfg, needs_train=method is None or method.reads_training_data()
        )
        stage.external = {"data": data, "task": ins.task_key}
        steps = cfg.max_steps * cfg.batch_size if cfg.max_steps else n_train * cfg.epochs
        stage.work = {"train": steps if trains else 0, "infer": n_eval}
        if method is not None:  # what a method processes itself (Fisher's gradients and rescaling)
            for k, v in method.extra_work(n_train, ins.teacher_layers()).items():
                stage.work[k] = stage.work.get(k, 0) + v
        start = stage.config.model
        if not isinstance(
            start, TeacherRef | StageModel
        ):  # a stage's model: its key is among the deps
            stage.external["model"] = ins.model(start, cfg.label_map)
        ins.check_start(stage.name, start if isinstance(start, str) else None, cfg)


class Teacher(ModelStage):
    """The study's teacher, fine-tuned (a debiased one: with its own loss); or a folder the user
    gave."""

    name = "teacher"
    provides = "teacher"
    reads_inputs = True
    is_model = True

    def run(self, stage, cfg, rep, files):
        finetune(cfg, overwrite=True, progress=rep, files=files)

    def check(self, stage, cfg, ins):
        if stage.given:
            stage.external = {"model": ins.model(stage.meta["given"])}
        else:
            super().check(stage, cfg, ins)


def bias_settings(params: dict) -> dict:
    """A bias stage's kind settings, as its params hold them (a kind's own only: `features` of
    overlap, `subset` and `epochs` of shallow)."""
    return {k: params[k] for k in ("features", "subset", "epochs") if k in params}


class BiasStage(ModelStage):
    """A stage that trains a bias model: its work is what its kind trains on (a shallow model: its
    subset, for its epochs), not the whole training split."""

    def check(self, stage, cfg, ins):
        super().check(stage, cfg, ins)
        fit = bias_kind(stage.params["kind"]).fit_config(cfg, bias_settings(stage.params))
        if fit.train_subset is not None and not fit.max_steps:
            n = ins.data(cfg, needs_train=True)[1]
            stage.work["train"] = min(n, fit.train_subset) * fit.epochs


class BiasFold(BiasStage):
    """A bias model trained without one fold of the training set (it scores that fold)."""

    name = "bias-fold"

    def run(self, stage, cfg, rep, files):
        train_bias_model(
            cfg,
            stage.params["kind"],
            overwrite=True,
            progress=rep,
            files=files,
            **bias_settings(stage.params),
        )


class Bias(BiasStage):
    """A bias model, its easy/hard split of an eval set and its (cross-fitted) training-set
    scores."""

    name = "bias"
    provides = "bias_model"

    def run(self, stage, cfg, rep, files):
        pr = stage.params
        train_bias_model(
            cfg,
            pr["kind"],
            overwrite=True,
            progress=rep,
            easy_hard_split=pr["split"],
            files=files,
            scoring=pr.get("scoring", "insample"),
            folds=pr.get("folds", 5),
            fold_models=[str(d.path) for d in stage.deps if d.kind == BiasFold.name],
            **bias_settings(pr),
        )


class Compress(ModelStage):
    """A compressed model: any method with any loss, from the study's teacher or a debiased one."""

    name = "compress"
    provides = "reference_model"  # JTT's first model
    reads_inputs = True
    is_model = True
    sharded = True

    def run(self, stage, cfg, rep, files):
        compress(cfg, overwrite=True, progress=rep, files=files)


class UncertaintyRun(Compress):
    """A pruning run whose models (snapshots, or the run itself) score the training set."""

    name = "uncertainty-run"
    provides = None
    reads_inputs = False
    is_model = False
    sharded = False


class Uncertainty(Kind):
    """Per-training-example uncertainty from one of `SOURCES`."""

    name = "uncertainty"
    output_file = "uncertainty.parquet"
    provides = "uncertainty"
    trains = False

    def run(self, stage, cfg, rep, files):
        with atomic_dir(stage.path) as tmp:
            SOURCES[stage.params["source"]].compute(stage, cfg, tmp / self.output_file, rep)
            schemas.write(tmp / "stage.json", files["stage.json"]())

    def check(self, stage, cfg, ins):
        data, n_train, _ = ins.data(cfg, needs_train=True)
        stage.external = {"data": data, "task": ins.task_key}
        stage.work = {"infer": n_train * SOURCES[stage.params["source"]].models_scored(stage)}
        ins.check_start(stage.name, None, cfg)


class Speed(Kind):
    """Inference examples/s of every model of the study and of its teacher, side by side."""

    name = "speed"
    output_file = "speed.json"
    trains = False
    needs_every_model = True

    def run(self, stage, cfg, rep, files):
        with atomic_dir(stage.path) as tmp:
            measure_speed(
                {d.name: d.path for d in stage.deps},
                cfg,
                tmp / self.output_file,
                n=stage.params["examples"],
                repeats=stage.params["repeats"],
                progress=rep,
                runtimes=stage.params.get("runtimes"),
            )
            schemas.write(tmp / "stage.json", files["stage.json"]())

    def check(self, stage, cfg, ins):
        passes = 1 + len(stage.params.get("runtimes") or [])  # its own precision, then each runtime
        stage.work = {
            "infer": (stage.params["repeats"] + 1)
            * stage.params["examples"]
            * len(stage.deps)
            * passes
        }
        stage.external = {"task": ins.task_key}


KINDS.update(
    {k.name: k() for k in (Teacher, BiasFold, Bias, UncertaintyRun, Uncertainty, Compress, Speed)}
)
