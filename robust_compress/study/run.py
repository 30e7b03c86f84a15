"""`reproduce`: plan a study, check all of it, run each missing stage once (shards, locks), record
provenance. The report is built by the caller (the CLI) from what this leaves behind."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from ..analysis.easy_hard import agreement, bias_probs, easy_mask
from ..data.load import load_train_split
from ..io import atomic_dir, atomic_file, file_lock, read_json, write_json
from ..stages import (
    compress,
    compute_uncertainty,
    finetune,
    measure_speed,
    train_bias_model,
)
from ..stages.progress import Reporter
from ..train.extras import load_per_example
from ..train.logit_cache import LogitCache
from .plan import Stage, check_plan, plan, resolve
from .spec import Experiment, load_experiment


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The code version this process started with; $ROBUST_COMPRESS_CODE_VERSION names it where the
    tree has no .git (a copied working tree)."""
    if os.environ.get("ROBUST_COMPRESS_CODE_VERSION"):
        return os.environ["ROBUST_COMPRESS_CODE_VERSION"]
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], check=False, capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def device_name() -> str:
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


def run_stage(stage: Stage, teacher: Stage, rep: Reporter) -> None:
    """Run one stage into its artifact folder. Its record (stage.json) is the artifact's last file,
    written before the folder is renamed into place: a stage is done exactly when its record exists."""
    cfg = resolve(stage, teacher)
    t0 = time.perf_counter()

    def record(_folder=None) -> dict:
        return {"name": stage.name, "kind": stage.kind, "key": stage.key, "code_version": code_version(),
                "device": device_name(), "seconds": round(time.perf_counter() - t0, 1),
                "deps": [d.key for d in stage.deps], "external": stage.external, "params": stage.params,
                "config": stage.config}

    files = {"stage.json": record}
    if stage.kind == "teacher":
        finetune(cfg, overwrite=True, progress=rep, files=files)
    elif stage.kind == "bias":
        train_bias_model(cfg, stage.params["kind"], overwrite=True, progress=rep,
                         easy_hard_split=stage.params["split"], files=files)
    elif stage.kind in ("uncertainty-run", "compress"):
        compress(cfg, overwrite=True, progress=rep, files=files)
    elif stage.kind in ("uncertainty", "speed"):
        with atomic_dir(stage.path) as tmp:
            out = tmp / stage.output.name
            if stage.kind == "speed":
                measure_speed({d.name: d.path for d in stage.deps}, cfg, out, n=stage.params["examples"],
                              repeats=stage.params["repeats"], progress=rep)
            elif stage.params["source"] == "snapshots":
                compute_uncertainty(cfg, out, snapshots=str(stage.deps[0].snapshot_dir), progress=rep)
            elif stage.params["source"] == "runs":
                compute_uncertainty(cfg, out, models=[str(d.path) for d in stage.deps], progress=rep)
            elif stage.params["source"] == "dynamics":
                compute_uncertainty(cfg, out, dynamics=str(teacher.path), stat=stage.params["stat"], progress=rep)
            else:
                compute_uncertainty(cfg, out, oneshot=str(teacher.path), sparsities=stage.params["sparsities"],
                                    progress=rep)
            write_json(tmp / "stage.json", record())
    else:
        raise ValueError(f"unknown stage kind {stage.kind!r}")


def clear_leftovers(stage: Stage) -> None:
    """Remove what a killed run of this stage left half-written: hidden temporary folders of its
    artifact and snapshots (a kill during the final write). Its `.partial` checkpoint stays: the
    run resumes from it. Called under the stage's lock, so no live writer owns them."""
    for folder, name in ((stage.path.parent, stage.path.name), (stage.snapshot_dir, "sparsity-")):
        for p in folder.glob(f".{name}*"):
            if p.name.endswith((".tmp", ".old")) or ".tmp." in p.name:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def describe(stages: list[Stage]) -> str:
    lines = []
    for i, s in enumerate(stages):
        state = "done" if s.done() else "todo"
        deps = ", ".join(d.name for d in s.deps[:4]) + (f", +{len(s.deps) - 4}" if len(s.deps) > 4 else "") or "-"
        lines.append(f"{i:3d}  [{state}]  {s.kind:15s} {s.name:40s} -> {s.path}   (needs: {deps})")
    return "\n".join(lines)


def write_index(exp: Experiment, stages: list[Stage]) -> None:
    """index.json for the report: every finished model run with its group, method, loss and seed,
    and the speed measurement when there is one."""
    root = Path(exp.output_dir)
    rows = []
    for s in stages:
        if s.kind in {"teacher", "compress"} and s.done():
            rows.append({"name": s.name, "path": str(Path(s.path).resolve()), **s.meta,
                         "is_teacher": s.kind == "teacher"})
    speed = next((s for s in stages if s.kind == "speed" and s.done()), None)
    if speed is not None:
        write_json(root / "speed.json", read_json(speed.output))
    for bias in (s for s in stages if s.kind == "bias" and s.done()):  # the report reads the study's copy
        with atomic_file(root / "easy_hard" / f"{bias.params['split']}.parquet") as tmp:
            shutil.copyfile(bias.path / "easy_hard.parquet", tmp)
    write_json(root / "index.json", rows)


def write_analysis(exp: Experiment, stages: list[Stage]) -> None:
    """analysis/uncertainty.json (how the scoring models did) and analysis/agreement.json (how far
    uncertainty-easy agrees with bias-model-easy on the training set; paper: 82.8 %)."""
    teacher = stages[0]
    unc = next((s for s in stages if s.kind == "uncertainty" and s.done()), None)
    bias = next((s for s in stages if s.kind == "bias" and s.done()), None)
    if unc is not None and unc.output.with_suffix(".json").is_file():
        write_json(Path(exp.output_dir) / "analysis" / "uncertainty.json", read_json(unc.output.with_suffix(".json")))
    if unc is None or bias is None:
        return
    cfg = resolve(unc, teacher)
    examples = load_train_split(cfg.data_args()).examples
    v = load_per_example(unc.output, "v", examples)
    probs = bias_probs(str(bias.path), examples, LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16),
                       cfg.max_length)
    easy = easy_mask(probs, np.array([e["label"] for e in examples]))
    p = float(easy.mean())
    write_json(Path(exp.output_dir) / "analysis" / "agreement.json",
               {"n": len(examples), "agreement": agreement(v, easy), "bias_easy_fraction": p,
                "chance": p * p + (1 - p) * (1 - p), "uncertainty": str(unc.output), "bias_model": str(bias.path)})


def prepare(path: str | Path, output_dir: str | Path | None = None, overrides: list[str] | None = None
            ) -> tuple[Experiment, list[Stage]]:
    """Load, plan and check a study (no side effects)."""
    exp = load_experiment(path, overrides)
    if output_dir is not None:  # the same study elsewhere (another machine's run): stage keys do not change
        exp.output_dir = str(output_dir)
    stages = plan(exp)
    check_plan(exp, stages, path)
    return exp, stages


def my_stages(stages: list[Stage], shard: tuple[int, int]) -> list[Stage]:
    """Compressed runs are split across shards; a shard also runs what its runs need (prerequisites,
    the vanilla model a JTT run learns from). The speed stage needs every model: any shard runs it
    once all are done."""
    i, n = shard
    todo = [s for s in stages if not s.done()]
    needed = {id(s) for s in todo if s.kind not in ("compress", "speed") or (s.kind == "compress"
                                                                          and stages.index(s) % n == i)}
    for s in reversed(stages):  # plan order puts dependencies first: one backward pass closes the set
        if id(s) in needed:
            needed.update(id(d) for d in s.deps)
    return [s for s in todo if id(s) in needed or s.kind == "speed"]


def run_study(exp: Experiment, stages: list[Stage], shard: tuple[int, int] = (0, 1), reporter=None) -> list[Stage]:
    """Run this shard's missing stages. Shards may run at once (one per GPU, or several on one): a lock
    per stage makes a second comer wait, then find the stage done and move on. `reporter` (study/live.py)
    gets `stage_start(stage, k, n)`, `stage_end(stage, seconds, summary)`, and is the stages' Reporter."""
    code_version()  # fixed now: a tree updated while the study runs must not relabel its stages
    root = Path(exp.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    teacher = stages[0]
    mine = my_stages(stages, shard)
    rep = reporter or Reporter()
    for k, s in enumerate(mine, 1):
        if s.kind == "speed" and not all(d.done() for d in s.deps):
            rep.note("speed: skipped until every model is done (another shard will time them)")
            continue
        with file_lock(root / "locks" / f"{s.path.name}.lock"):
            if s.done():
                continue
            clear_leftovers(s)
            if hasattr(rep, "stage_start"):
                rep.stage_start(s, k, len(mine))
            t0 = time.perf_counter()
            run_stage(s, teacher, rep)
            if hasattr(rep, "stage_end"):
                rep.stage_end(s, time.perf_counter() - t0)
            write_index(exp, stages)  # a study stopped at any point can still be reported
    write_index(exp, stages)
    write_analysis(exp, stages)
    return stages


def reproduce(path: str | Path, shard: tuple[int, int] = (0, 1), output_dir: str | Path | None = None,
              reporter=None, overrides: list[str] | None = None) -> list[Stage]:
    """The study in an experiment file: check it all, then run this shard's missing stages."""
    exp, stages = prepare(path, output_dir, overrides)
    return run_study(exp, stages, shard, reporter)
