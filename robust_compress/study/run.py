"""`reproduce`: plan a study, check all of it, run each missing stage once through an executor
(study/executors.py: local, Ray, submitit; shards and locks), record provenance. The report is built
by the caller (the CLI) from what this leaves behind."""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import schemas
from ..io import atomic_file, file_lock, own_dir, read_json, write_json
from ..stages.graph import Stage
from ..stages.progress import Reporter
from ..stages.shortcut import bias_model_analysis
from ..stages.training import finetune_config
from .executors import Local, Study, code_version, device_name
from .live import dry_run_estimate, reporter_for
from .plan import check_plan, plan
from .spec import Experiment, load_experiment


def run_stage(stage: Stage, rep: Reporter) -> None:
    """Run one stage into its artifact folder (its kind knows how), recording provenance."""
    stage.run(rep, code_version(), device_name())


def stale_leftovers(exp: Experiment, stages: list[Stage]) -> list[Path]:
    """Partial checkpoints and temporary folders in the study's artifacts/ that no unfinished stage
    of this plan owns (a run killed under settings since changed, or a finished stage's cleanup cut
    short by a kill): dead weight, never results. An unfinished stage of this plan keeps its own,
    to resume from."""
    root = Path(exp.output_dir) / "artifacts"
    owned = {s.path.name for s in stages if not s.done()}
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


def clean_leftovers(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Remove `paths` (files or folders): the ones now gone, and the ones kept with why (the first
    error met inside each). Only what is gone counts as removed."""
    removed, kept = [], []
    for p in paths:
        errors: list[str] = []

        def note(_fn, where, exc_info, errors=errors) -> None:
            e = exc_info[1]
            why = getattr(e, "strerror", None) or e
            errors.append(f"{getattr(e, 'filename', None) or where}: {why}")

        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, onerror=note)
            else:
                p.unlink(missing_ok=True)
        except OSError as e:
            errors.append(f"{p}: {e.strerror or e}")
        if p.exists() or p.is_symlink():
            kept.append((p, errors[0] if errors else f"{p}: still there"))
        else:
            removed.append(p)
    return removed, kept


def size_of(paths: list[Path]) -> int:
    return sum(
        f.stat().st_size
        for p in paths
        for f in ([p] if p.is_file() else p.rglob("*"))
        if f.is_file()
    )


def describe(stages: list[Stage]) -> str:
    lines = []
    for i, s in enumerate(stages):
        state = "done" if s.done() else "todo"
        deps = (
            ", ".join(d.name for d in s.deps[:4])
            + (f", +{len(s.deps) - 4}" if len(s.deps) > 4 else "")
            or "-"
        )
        lines.append(f"{i:3d}  [{state}]  {s.kind:15s} {s.name:40s} -> {s.path}   (needs: {deps})")
    return "\n".join(lines)


def easy_hard_name(bias: Stage) -> str:
    """The study's easy/hard file of a bias model: the first one's is `<split>.parquet` (the
    report's main split), another's `<split>.<name>.parquet`."""
    split = bias.params["split"]
    return (
        f"{split}.parquet"
        if bias.meta.get("primary", True)
        else f"{split}.{bias.meta['bias']}.parquet"
    )


def write_index(exp: Experiment, stages: list[Stage]) -> None:
    """index.json for the report: every finished model run with its group, method, loss and seed,
    and the speed measurement when there is one."""
    root = Path(exp.output_dir)
    rows = []
    for s in stages:
        if s.spec.is_model and s.done():
            rows.append(
                {
                    "name": s.name,
                    "path": str(Path(s.path).resolve()),
                    **s.meta,
                    "is_teacher": bool(s.meta.get("is_teacher")),
                }
            )
    speed = next((s for s in stages if s.spec.needs_every_model and s.done()), None)
    if speed is not None:
        schemas.write(root / "speed.json", schemas.read(speed.output).model_dump())
    for bias in (
        s for s in stages if s.kind == "bias" and s.done()
    ):  # the report reads the study's copy
        with atomic_file(root / "easy_hard" / easy_hard_name(bias)) as tmp:
            shutil.copyfile(bias.path / "easy_hard.parquet", tmp)
    write_json(root / "index.json", schemas.Index.dump_python(schemas.Index.validate_python(rows)))


def write_analysis(exp: Experiment, stages: list[Stage]) -> None:
    """analysis/uncertainty.json (how the scoring models did), analysis/agreement.json (how far
    uncertainty-easy agrees with the first bias model's easy/hard split on the training set; paper:
    82.8 %) and analysis/bias_models.json (each bias model: its accuracy, how it scored the training
    set, and its agreement with every uncertainty source the study has and with the other bias
    models)."""
    out = Path(exp.output_dir) / "analysis"
    unc = next((s for s in stages if s.kind == "uncertainty" and s.done()), None)
    biases = [s for s in stages if s.kind == "bias" and s.done()]
    if unc is not None and unc.output.with_suffix(".json").is_file():
        write_json(out / "uncertainty.json", read_json(unc.output.with_suffix(".json")))
    if not biases:
        return
    record, agree = bias_model_analysis(
        (unc or biases[0]).resolve(),
        stages[0].path,
        (unc.params["source"], unc.output) if unc else None,
        [(b.meta.get("bias", b.name), b.params["kind"], b.name, b.path) for b in biases],
    )
    write_json(out / "bias_models.json", record)
    if agree is not None:
        write_json(out / "agreement.json", agree)


def prepare(
    path: str | Path, output_dir: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[Experiment, list[Stage]]:
    """Load, plan and check a study (no side effects)."""
    exp = load_experiment(path, overrides)
    if output_dir is not None:  # the same study elsewhere: stage keys do not change
        exp.output_dir = str(output_dir)
        if "cache_dir" not in exp.defaults.model_fields_set:  # nothing written under ./runs
            cache = str(Path(output_dir) / "cache")
            exp.defaults = exp.defaults.model_copy(update={"cache_dir": cache})
    stages = plan(exp)
    check_plan(exp, stages, path)
    return exp, stages


def my_stages(stages: list[Stage], shard: tuple[int, int]) -> list[Stage]:
    """Compressed runs are split across shards; a shard also runs what its runs need (prerequisites,
    the vanilla model a JTT run learns from). The speed stage needs every model: any shard runs it
    once all are done."""
    i, n = shard
    todo = [s for s in stages if not s.done()]
    needed = {
        id(s)
        for s in todo
        if not (s.spec.sharded or s.spec.needs_every_model)
        or (s.spec.sharded and stages.index(s) % n == i)
    }
    for s in reversed(
        stages
    ):  # plan order puts dependencies first: one backward pass closes the set
        if id(s) in needed:
            needed.update(id(d) for d in s.deps)
    return [s for s in todo if id(s) in needed or s.spec.needs_every_model]


def run_study(
    exp: Experiment,
    stages: list[Stage],
    shard: tuple[int, int] = (0, 1),
    reporter=None,
    executor=None,
) -> list[Stage]:
    """Run this shard's missing stages through `executor` (default: local, one after another).
    Shards may run at once (one per GPU, or several on one): a lock per stage makes a second comer
    wait, then find the stage done and move on. `reporter` (study/live.py) gets `stage_start(stage,
    k, n)`, `stage_end(stage, seconds)`, and is the stages' Reporter."""
    code_version()  # fixed now: a tree updated while the study runs must not relabel its stages
    own_dir(Path(exp.output_dir))  # checked by the plan: empty, new or a study
    study = Study(
        exp,
        stages,
        my_stages(stages, shard),
        reporter or Reporter(),
        run_stage=lambda s, rep: run_stage(s, rep),  # looked up when called (tests replace it)
        index=lambda: write_index(exp, stages),
    )
    (executor or Local()).run(study)
    write_index(exp, stages)
    write_analysis(exp, stages)
    return stages


def make_pending_teacher(exp: Experiment, stages: list[Stage], rep: Reporter | None = None) -> bool:
    """A teacher.path that does not exist yet is fine-tuned first from teacher.config (the stages
    after it are keyed by its content, so the study is planned again afterwards). True if it ran."""
    teacher = stages[0]
    if not teacher.meta.get("pending"):
        return False
    own_dir(Path(exp.output_dir))  # checked by the plan: empty, new or a study
    with file_lock(Path(exp.output_dir) / "locks" / "pending-teacher.lock"):
        if not Path(exp.teacher.path).expanduser().is_dir():
            finetune_config(exp.teacher.config, progress=rep)
    return True


def reproduce(
    path: str | Path,
    shard: tuple[int, int] = (0, 1),
    output_dir: str | Path | None = None,
    reporter=None,
    overrides: list[str] | None = None,
    executor=None,
    dry_run: bool = False,
    clean: bool = False,
    echo=None,
    live: bool = False,
) -> list[Stage]:
    """The study in an experiment file: check it all, fine-tune a pending teacher, say what is
    stale (and remove it with `clean`), then run this shard's missing stages; with `dry_run`, only
    print the plan and its time. `echo`: where the lines for a person go (the CLI's); `live`: show
    the live view (`study/live.py`) instead of `reporter`. The `reproduce` command is this call."""
    say = echo or (lambda _line: None)
    exp, stages = prepare(path, output_dir, overrides)
    stale = stale_leftovers(exp, stages)
    if stale and clean and not dry_run:
        removed, kept = clean_leftovers(stale)
        say(
            f"removed {len(removed)} partial checkpoint(s) / temporary folder(s) no unfinished "
            "stage of this plan owns"
        )
        if kept:
            say(f"could not remove {len(kept)}: {kept[0][1]}" + (" ..." if len(kept) > 1 else ""))
    elif stale:
        say(
            f"{len(stale)} partial checkpoint(s) / temporary folder(s) "
            f"({size_of(stale) / 2**20:.0f} MiB) in {Path(exp.output_dir) / 'artifacts'} belong "
            "to no unfinished stage of this plan (runs killed under other settings, or a finished "
            "stage's cleanup cut short): --clean removes them"
        )
    pending = stages[0].meta.get("pending")
    if pending and not dry_run:
        say(
            f"teacher.path {exp.teacher.path} is missing: fine-tuning it first with "
            f"`finetune -c {pending}`"
        )
        make_pending_teacher(exp, stages, reporter)
        exp, stages = prepare(path, output_dir, overrides)
    todo = my_stages(stages, shard)
    teacher_model = str(stages[0].meta.get("given") or stages[0].config.model or "")
    if dry_run:
        if pending:
            say(
                f"teacher.path {exp.teacher.path} is missing: the study fine-tunes it first with "
                f"`finetune -c {pending}`; the keys below are provisional until it exists"
            )
        say(describe(stages))
        say(
            f"{len(stages)} stages; {dry_run_estimate(todo, Path(exp.output_dir), teacher_model)}; "
            "nothing written (dry run)"
        )
        return stages
    reused = sum(s.done() for s in stages)
    say(
        f"{len(stages)} stages: {reused} reused, {len(todo)} to run"
        + (" (this shard)" if shard[1] > 1 else "")
    )
    if live:
        reporter = reporter_for(
            todo,
            Path(exp.output_dir),
            f"robust-compress: {exp.name}",
            teacher_model=teacher_model,
            reused=reused,
        )
    try:
        return run_study(exp, stages, shard, reporter, executor)
    finally:
        if live and hasattr(reporter, "close"):
            reporter.close()
