"""`reproduce`: an experiment file becomes a graph of stages, each run once and cached.

A stage's artifact lives in `<output_dir>/artifacts/<kind>-<hash>`, the hash taken over the
stage's resolved config and the hashes of the stages it depends on; so a rerun reuses what is
done, a changed setting reruns only what depends on it, and a killed stage resumes from its
checkpoint (`<artifact>.partial/`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import CompressionConfig, LossConfig, LossName, RunConfig
from .io import UserError, file_lock, read_yaml, write_json
from .tasks import load_task


class TeacherSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    path: str | None = Field(None, description="use this fine-tuned teacher instead of training one")
    train: dict[str, Any] = Field(default_factory=dict, description="RunConfig overrides for fine-tuning")


class CompressionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    method: Literal["magnitude", "heads", "distill", "truncate", "quantize"]
    model: str | None = Field(None, description="student / start model; default: the teacher")
    settings: dict[str, Any] = Field(default_factory=dict, description="CompressionConfig fields")
    train: dict[str, Any] = Field(default_factory=dict, description="RunConfig overrides")
    losses: list[LossName] | None = Field(None, description="default: the experiment's losses")


class UncertaintySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Literal["snapshots", "oneshot"] = "snapshots"
    sparsities: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.7, 0.85])
    train: dict[str, Any] = Field(default_factory=dict)


class BiasSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["partial", "overlap"] = "partial"
    model: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    easy_hard_split: str = "dev_matched"


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    task: str = "mnli"
    output_dir: str
    seeds: list[int] = Field(default_factory=lambda: [42])
    defaults: dict[str, Any] = Field(default_factory=dict, description="RunConfig fields for every stage")
    teacher: TeacherSpec
    compressions: list[CompressionSpec]
    losses: list[LossName] = Field(default_factory=lambda: ["ce"])
    loss_settings: dict[str, Any] = Field(default_factory=dict, description="LossConfig fields (lam, T, ...)")
    uncertainty: UncertaintySpec = Field(default_factory=UncertaintySpec)
    bias_model: BiasSpec | None = None
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [c.name for c in self.compressions]
        if len(set(names)) != len(names):
            raise ValueError(f"compression names must be unique: {names}")
        needs_bias = {"reweight", "poe", "conf_reg"} & set(self.all_losses())
        if needs_bias and self.bias_model is None:
            raise ValueError(f"losses {sorted(needs_bias)} need a `bias_model` section")
        return self

    def all_losses(self) -> list[str]:
        """Every loss used, in the declared order (the order stages run in)."""
        used = {loss for c in self.compressions for loss in (c.losses or self.losses)}
        extra = sorted(used - set(self.losses))
        return [loss for loss in self.losses if loss in used] + extra


def load_experiment(path: str | Path) -> Experiment:
    """Parse and fully validate an experiment (every stage's config) before any work starts."""
    raw = read_yaml(Path(path))
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()]
        raise UserError(f"{path}: invalid experiment:\n" + "\n".join(lines)) from None
    load_task(exp.task)
    for i, c in enumerate(exp.compressions):
        try:
            CompressionConfig.model_validate({"method": c.method, **c.settings})
            for loss in c.losses or exp.losses:
                LossConfig.model_validate({"name": loss, **exp.loss_settings,
                                           **_loss_inputs_placeholder(loss)})
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise UserError(f"{path}: compressions[{i}] ({c.name}): {key}: {err['msg']}") from None
    return exp


def _loss_inputs_placeholder(loss: str) -> dict[str, str]:
    """Inputs the planner provides later (uncertainty file, JTT reference, bias model)."""
    return {"rmc": {"uncertainty": "?"}, "jtt": {"reference_model": "?"}}.get(loss, {}) | (
        {"bias_model": "?"} if loss in {"reweight", "poe", "conf_reg"} else {})


@dataclass
class Stage:
    kind: str  # teacher | bias | uncertainty-run | uncertainty | compress
    name: str
    config: dict[str, Any]
    deps: list[Stage] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path = Path(".")

    @property
    def key(self) -> str:
        blob = json.dumps({"kind": self.kind, "config": self.config, "deps": [d.key for d in self.deps]},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def path(self) -> Path:
        if self.kind == "teacher" and self.meta.get("given"):
            return Path(self.meta["given"])
        suffix = ".parquet" if self.kind == "uncertainty" else ""
        return self.root / "artifacts" / f"{self.kind}-{self.key}{suffix}"

    def done(self) -> bool:
        if self.kind == "uncertainty":
            return self.path.is_file()
        if self.kind == "uncertainty-run":
            return (self.path / "summary.json").is_file() and self.snapshot_dir.is_dir()
        return (self.path / "summary.json").is_file()

    @property
    def snapshot_dir(self) -> Path:
        return self.path.with_name(self.path.name + "-snapshots")


@functools.lru_cache(maxsize=1)
def _git_version() -> str:
    """The code version this process started with (first call is made when a study starts).

    $ROBUST_COMPRESS_CODE_VERSION names it where the tree has no .git (a copied working tree)."""
    if os.environ.get("ROBUST_COMPRESS_CODE_VERSION"):
        return os.environ["ROBUST_COMPRESS_CODE_VERSION"]
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], check=False, capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def _device_name() -> str:
    """Where a stage ran, for provenance: the GPU's name, else the CPU's."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()}"


def plan(exp: Experiment) -> list[Stage]:
    """The stage graph in execution order (dependencies first)."""
    root = Path(exp.output_dir)
    base = {"task": exp.task} | exp.defaults | ({"trackers": exp.trackers} if exp.trackers else {})
    stages: list[Stage] = []

    teacher_cfg = base | {"model": exp.teacher.model, "seed": exp.seeds[0]} | exp.teacher.train
    teacher = Stage("teacher", "teacher", teacher_cfg, root=root,
                    meta={"given": exp.teacher.path, "group": "teacher", "method": "teacher", "loss": "ce",
                          "seed": exp.seeds[0]})
    stages.append(teacher)

    bias = None
    if exp.bias_model is not None:
        bcfg = base | {"model": exp.bias_model.model or exp.teacher.model, "seed": exp.seeds[0]} | exp.bias_model.train
        bias = Stage("bias", f"bias-{exp.bias_model.kind}", bcfg | {"bias_kind": exp.bias_model.kind}, root=root,
                     meta={"split": exp.bias_model.easy_hard_split})
        stages.append(bias)

    unc = None
    if "rmc" in exp.all_losses():
        u = exp.uncertainty
        ucfg = base | {"seed": exp.seeds[0]} | u.train
        if u.source == "snapshots":
            run = Stage("uncertainty-run", "uncertainty-pruning", ucfg | {
                "model": "<teacher>", "compression": {"method": "magnitude", "sparsity": max(u.sparsities),
                                                      "snapshots": u.sparsities, "teacher": "<teacher>"},
                "loss": {"name": "ce"}}, deps=[teacher], root=root)
            stages.append(run)
            unc = Stage("uncertainty", "uncertainty", ucfg | {"model": "<teacher>", "source": "snapshots"},
                        deps=[run], root=root)
        else:
            unc = Stage("uncertainty", "uncertainty", ucfg | {"model": "<teacher>", "source": "oneshot",
                                                               "sparsities": u.sparsities}, deps=[teacher], root=root)
        stages.append(unc)

    # Seed-major, and within a seed every compression's vanilla (ce) run first: a study stopped
    # early still has whole tables for the seeds it reached.
    order = ["ce"] + [loss for loss in exp.all_losses() if loss != "ce"]
    for seed in exp.seeds:
        vanilla: dict[str, Stage] = {}
        for loss in order:
            for c in exp.compressions:
                losses = ["ce"] if c.method == "quantize" else (c.losses or exp.losses)  # no training: one row
                if loss not in losses or (c.method == "quantize" and seed != exp.seeds[0]):  # ...and one seed
                    continue
                deps = [teacher]
                if loss == "rmc":
                    deps.append(unc)
                if loss == "jtt":
                    if c.name not in vanilla:
                        raise UserError(f"compression {c.name}: loss 'jtt' needs 'ce' in its losses (its first model)")
                    deps.append(vanilla[c.name])
                if loss in {"reweight", "poe", "conf_reg"}:
                    deps.append(bias)
                cfg = base | {"model": c.model or "<teacher>", "seed": seed} | c.train | {
                    "compression": {"method": c.method, "teacher": "<teacher>"} | c.settings,
                    "loss": {"name": loss} | exp.loss_settings}
                s = Stage("compress", f"{c.name}/{loss}/seed{seed}", cfg, deps=deps, root=root,
                          meta={"group": c.name, "method": c.method, "loss": loss, "seed": seed,
                                "sparsity": c.settings.get("sparsity")})
                stages.append(s)
                if loss == "ce":
                    vanilla[c.name] = s
    return stages


def _resolve(stage: Stage, teacher: Stage, cfg: dict[str, Any]) -> RunConfig:
    """Fill placeholders with upstream artifact paths and validate as a RunConfig."""
    text = json.dumps(cfg).replace('"<teacher>"', json.dumps(str(teacher.path)))
    data = json.loads(text)
    data.pop("bias_kind", None)
    data.pop("source", None)
    data.pop("sparsities", None)
    for d in stage.deps:
        if d.kind == "uncertainty":
            data.setdefault("loss", {})["uncertainty"] = str(d.path)
        elif d.kind == "compress":
            data.setdefault("loss", {})["reference_model"] = str(d.path)
        elif d.kind == "bias":
            data.setdefault("loss", {})["bias_model"] = str(d.path)
    data["output_dir"] = str(stage.path)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(f"stage {stage.name}: invalid config: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None


def run_stage(stage: Stage, teacher: Stage, exp: Experiment) -> None:
    from .compress import compress
    from .runner import finetune
    from .shortcut import compute_uncertainty, train_bias_model, write_easy_hard

    cfg = _resolve(stage, teacher, stage.config)
    t0 = time.perf_counter()
    if stage.kind == "teacher":
        finetune(cfg, overwrite=True)
    elif stage.kind == "bias":
        train_bias_model(cfg, stage.config["bias_kind"], overwrite=True)
        write_easy_hard(cfg, str(stage.path), stage.meta["split"],
                        stage.root / "easy_hard" / f"{stage.meta['split']}.parquet")
    elif stage.kind == "uncertainty-run":
        compress(cfg, overwrite=True)
    elif stage.kind == "uncertainty":
        dep = stage.deps[0]
        if stage.config["source"] == "snapshots":
            compute_uncertainty(cfg, stage.path, snapshots=str(dep.snapshot_dir))
        else:
            compute_uncertainty(cfg, stage.path, oneshot=str(teacher.path), sparsities=stage.config["sparsities"])
    elif stage.kind == "compress":
        compress(cfg, overwrite=True)
    write_json(stage.path.with_name(stage.path.name + ".stage.json") if stage.kind == "uncertainty"
               else stage.path / "stage.json",
               {"name": stage.name, "kind": stage.kind, "key": stage.key, "code_version": _git_version(),
                "device": _device_name(),
                "seconds": round(time.perf_counter() - t0, 1),
                "deps": [d.key for d in stage.deps], "config": stage.config})


def describe(stages: list[Stage]) -> str:
    lines = []
    for i, s in enumerate(stages):
        state = "done" if s.done() else "todo"
        deps = ", ".join(d.name for d in s.deps) or "-"
        lines.append(f"{i:3d}  [{state}]  {s.kind:15s} {s.name:40s} -> {s.path}   (needs: {deps})")
    return "\n".join(lines)


def write_index(exp: Experiment, stages: list[Stage]) -> None:
    """index.json for the report: every finished model run with its group, method, loss and seed."""
    root = Path(exp.output_dir)
    rows = []
    for s in stages:
        if s.kind in {"teacher", "compress"} and s.done():
            rows.append({"name": s.name, "path": str(Path(s.path).resolve()), **s.meta,
                         "is_teacher": s.kind == "teacher"})
    write_json(root / "index.json", rows)


def _write_agreement(exp: Experiment, stages: list[Stage], teacher: Stage) -> None:
    """How far uncertainty-easy agrees with bias-model-easy on the training set (paper: 82.8 %)."""
    import numpy as np

    from .runner import load_train_split
    from .shortcut import agreement, bias_probs, easy_mask, load_per_example

    unc = next((s for s in stages if s.kind == "uncertainty" and s.done()), None)
    bias = next((s for s in stages if s.kind == "bias" and s.done()), None)
    if unc is None or bias is None:
        return
    cfg = _resolve(unc, teacher, unc.config)
    examples = load_train_split(cfg, load_task(cfg.task)).examples
    v = load_per_example(unc.path, "v", examples)
    easy = easy_mask(bias_probs(bias.path, examples, cfg), np.array([e["label"] for e in examples]))
    p = float(easy.mean())
    write_json(Path(exp.output_dir) / "analysis" / "agreement.json",
               {"n": len(examples), "agreement": agreement(v, easy), "bias_easy_fraction": p,
                "chance": p * p + (1 - p) * (1 - p), "uncertainty": str(unc.path), "bias_model": str(bias.path)})


def reproduce(path: str | Path, dry_run: bool = False, shard: tuple[int, int] = (0, 1),
              report: bool = True, output_dir: str | Path | None = None) -> list[Stage]:
    exp = load_experiment(path)
    if output_dir is not None:  # the same study elsewhere (another machine's run): stage keys do not change
        exp.output_dir = str(output_dir)
    print(f"code version: {_git_version()}")
    stages = plan(exp)
    root = Path(exp.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    print(describe(stages))
    if dry_run:
        return stages
    i, n = shard
    teacher = stages[0]
    todo = [s for s in stages if not s.done()]
    # Compressed runs are split across shards; a shard also runs what its runs need (prerequisites,
    # the vanilla model a JTT run learns from). Shards may run at once (one per GPU, or several on
    # one): a lock per stage makes a second comer wait, then find the stage done and move on.
    needed = {id(s) for s in todo if s.kind != "compress" or stages.index(s) % n == i}
    for s in reversed(stages):  # plan order puts dependencies first: one backward pass closes the set
        if id(s) in needed:
            needed.update(id(d) for d in s.deps)
    mine = [s for s in todo if id(s) in needed]
    t0 = time.perf_counter()
    for k, s in enumerate(mine, 1):
        with file_lock(root / "locks" / f"{s.path.name}.lock"):
            if s.done():
                continue
            print(f"\n=== stage {k}/{len(mine)}: {s.kind} {s.name} ({time.perf_counter() - t0:.0f}s elapsed)",
                  flush=True)
            run_stage(s, teacher, exp)
            write_index(exp, stages)  # a study stopped at any point can still be reported
    write_index(exp, stages)
    _write_agreement(exp, stages, teacher)
    if report:
        from .report import build_report

        out = build_report(root)
        print(f"report: {out}")
    return stages
