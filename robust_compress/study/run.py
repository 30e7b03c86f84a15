"""`reproduce`: plan a study, check all of it, run each missing stage once (shards, locks), record
provenance. The report is built by the caller (the CLI) from what this leaves behind."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.easy_hard import agreement, bias_probs, easy_mask
from ..analysis.uncertainty import DYNAMICS, from_dynamics
from ..data.load import load_train_split
from ..data.tasks import load_task
from ..io import UserError, atomic_dir, atomic_file, file_lock, read_json, write_json
from ..stages import (
    compress,
    compute_uncertainty,
    finetune,
    measure_speed,
    train_bias_model,
)
from ..stages.progress import Reporter
from ..train.extras import BIAS_RECORD, EXTRAS, Context, load_per_example
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
    elif stage.kind == "bias-fold":
        train_bias_model(cfg, stage.params["kind"], overwrite=True, progress=rep, files=files)
    elif stage.kind == "bias":
        pr = stage.params
        train_bias_model(cfg, pr["kind"], overwrite=True, progress=rep, easy_hard_split=pr["split"], files=files,
                         scoring=pr.get("scoring", "insample"), folds=pr.get("folds", 5),
                         fold_models=[str(d.path) for d in stage.deps if d.kind == "bias-fold"],
                         features=pr.get("features", "basic"))
    elif stage.kind in ("uncertainty-run", "compress"):
        compress(cfg, overwrite=True, progress=rep, files=files)
    elif stage.kind in ("uncertainty", "speed"):
        with atomic_dir(stage.path) as tmp:
            out = tmp / stage.output.name
            if stage.kind == "speed":
                measure_speed({d.name: d.path for d in stage.deps}, cfg, out, n=stage.params["examples"],
                              repeats=stage.params["repeats"], progress=rep, runtimes=stage.params.get("runtimes"))
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


def stale_leftovers(exp: Experiment, stages: list[Stage]) -> list[Path]:
    """Partial checkpoints and temporary folders in the study's artifacts/ that no stage of this plan
    owns (a run killed under settings since changed): dead weight, never results. A stage of this plan
    keeps its own, to resume from."""
    root = Path(exp.output_dir) / "artifacts"
    owned = {s.path.name for s in stages}
    out = []
    for p in sorted(root.glob("*")) if root.is_dir() else []:
        name = p.name
        if name.endswith(".partial"):
            owner = name.removesuffix(".partial")
        elif name.startswith(".") and (name.endswith((".tmp", ".old"))):
            owner = name[1:].split(".", 1)[0]
        else:
            continue
        if owner not in owned:
            out.append(p)
    return out


def size_of(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


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


def easy_hard_name(bias: Stage) -> str:
    """The study's easy/hard file of a bias model: the first one's is `<split>.parquet` (the report's
    main split), another's `<split>.<name>.parquet`."""
    split = bias.params["split"]
    return f"{split}.parquet" if bias.meta.get("primary", True) else f"{split}.{bias.meta['bias']}.parquet"


def write_index(exp: Experiment, stages: list[Stage]) -> None:
    """index.json for the report: every finished model run with its group, method, loss and seed,
    and the speed measurement when there is one."""
    root = Path(exp.output_dir)
    rows = []
    for s in stages:
        if s.kind in {"teacher", "compress"} and s.done():
            rows.append({"name": s.name, "path": str(Path(s.path).resolve()), **s.meta,
                         "is_teacher": bool(s.meta.get("is_teacher"))})
    speed = next((s for s in stages if s.kind == "speed" and s.done()), None)
    if speed is not None:
        write_json(root / "speed.json", read_json(speed.output))
    for bias in (s for s in stages if s.kind == "bias" and s.done()):  # the report reads the study's copy
        with atomic_file(root / "easy_hard" / easy_hard_name(bias)) as tmp:
            shutil.copyfile(bias.path / "easy_hard.parquet", tmp)
    write_json(root / "index.json", rows)


def write_analysis(exp: Experiment, stages: list[Stage]) -> None:
    """analysis/uncertainty.json (how the scoring models did), analysis/agreement.json (how far
    uncertainty-easy agrees with the first bias model's easy/hard split on the training set; paper:
    82.8 %) and analysis/bias_models.json (each bias model: its accuracy, how it scored the training
    set, and its agreement with every uncertainty source the study has and with the other bias models)."""
    teacher = stages[0]
    out = Path(exp.output_dir) / "analysis"
    unc = next((s for s in stages if s.kind == "uncertainty" and s.done()), None)
    biases = [s for s in stages if s.kind == "bias" and s.done()]
    if unc is not None and unc.output.with_suffix(".json").is_file():
        write_json(out / "uncertainty.json", read_json(unc.output.with_suffix(".json")))
    if not biases:
        return
    cfg = resolve(unc or biases[0], teacher)
    examples = load_train_split(cfg.data_args().model_copy(update={"cv_fold": None})).examples
    gold = np.array([e["label"] for e in examples])
    sources: dict[str, np.ndarray] = {}
    if unc is not None:
        sources[unc.params["source"]] = load_per_example(unc.output, "v", examples)
    if unc is None or unc.params["source"] != "dynamics":
        dyn = teacher.path / DYNAMICS
        if dyn.is_file():
            with contextlib.suppress(UserError):  # a teacher of one epoch, or of other examples: none
                sources["dynamics"] = from_dynamics(pd.read_parquet(dyn), examples, "loss")["v"].to_numpy()
    cache = LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16)
    easy: dict[str, np.ndarray] = {}
    record: dict[str, dict] = {}
    for b in biases:
        name = b.meta.get("bias", b.name)
        ctx = Context(labels=load_task(cfg.task).labels, alpha=0.5, cache_dir=cfg.cache_dir,
                      max_length=cfg.max_length, batch_size=cfg.eval_batch_size, bf16=cfg.bf16)
        try:  # what the losses read: the stage's own (cross-fitted) probabilities, else in-sample
            probs = np.stack(EXTRAS["bias_probs"].build(str(b.path), examples, None, ctx))
        except UserError:  # it was trained on other data than the compressed runs: score them in-sample
            probs = bias_probs(str(b.path), examples, cache, cfg.max_length)
        easy[name] = easy_mask(probs, gold)
        summary = read_json(b.path / "summary.json")
        p = float(easy[name].mean())
        record[name] = {"kind": b.params["kind"], "stage": b.name, "path": str(b.path),
                        "accuracy": {s: v["accuracy"] for s, v in summary["splits"].items() if v.get("role") != "cue"},
                        "training_set": read_json(b.path / BIAS_RECORD) if (b.path / BIAS_RECORD).is_file() else None,
                        "train_examples_scored": len(examples), "easy_fraction": p,
                        "chance": p * p + (1 - p) * (1 - p),
                        "agreement": {src: agreement(v, easy[name]) for src, v in sources.items()}}
    for a, rec in record.items():
        rec["agreement_with_bias_models"] = {b: float((easy[a] == easy[b]).mean()) for b in record if b != a}
    write_json(out / "bias_models.json", record)
    first = biases[0]
    name = first.meta.get("bias", first.name)
    if unc is not None:
        write_json(out / "agreement.json",
                   {"n": len(examples), "agreement": record[name]["agreement"][unc.params["source"]],
                    "bias_easy_fraction": record[name]["easy_fraction"], "chance": record[name]["chance"],
                    "uncertainty": str(unc.output), "bias_model": str(first.path)})


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
