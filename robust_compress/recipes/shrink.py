"""`shrink MODEL`: plan the study (`recipes/plan.py`), run it like any study, read the verdict
(`report/shrink.py`), and hand over the model only when the gate lets it through: its folder
(weights, tokenizer, model card), its ONNX export, the verdict as Markdown and JSON."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig
from ..data.tasks import load_task
from ..io import atomic_dir, read_json, write_json
from ..report import build_report
from ..report import shrink as verdict
from ..stages.audit import model_record
from ..stages.evaluate import evaluate_folder
from ..stages.export import export_onnx
from ..study.live import dry_run_estimate, reporter_for
from ..study.run import describe, prepare, run_study
from .plan import ShrinkOptions, write_study

MODEL_DIR, ONNX_DIR, ORIGINAL = "model", "model-onnx", "original"
EVAL_RECORD = "shrink-evaluation.json"


def evaluate_original(opts: ShrinkOptions, out: Path, progress=None) -> Path:
    """The user's model as the study's teacher: a copy of its files beside its evaluation on the
    study's sets (`out/original`), so the verdict compares both on the same examples. Remade only
    when the evaluation's settings change."""
    folder = out / ORIGINAL
    fields = {"task": opts.task, "eval_limit": opts.eval_limit, "seed": opts.seeds[0]}
    fields |= {"data_dir": opts.data_dir} if opts.data_dir else {}
    fields |= {k: v for k, v in opts.settings.items() if k in RunConfig.model_fields}
    want = {"model": str(Path(opts.model).resolve()), **fields}
    if (folder / EVAL_RECORD).is_file() and read_json(folder / EVAL_RECORD) == want:
        return folder
    cfg = RunConfig(model=opts.model, output_dir=str(folder), **fields)
    record = model_record(Path(opts.model), opts.model, load_task(opts.task).labels, cfg)
    evaluate_folder(
        opts.model,
        cfg,
        folder,
        progress=progress,
        overwrite=True,
        files={"compression.json": record},
    )
    for f in Path(opts.model).iterdir():
        if f.is_file() and not (folder / f.name).exists() and f.name != "README.md":
            shutil.copy2(f, folder / f.name)
    write_json(folder / EVAL_RECORD, want)
    return folder


@dataclass
class Outcome:
    """What a shrink did: the study file, the verdict text, the rows that failed the gate (empty:
    passed), and the folders handed over (none when refused or on a dry run)."""

    study_file: Path
    text: str
    failures: list[verdict.Row] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


def shrink(
    opts: ShrinkOptions,
    out: Path,
    dry_run: bool = False,
    quality_gate: bool = False,
    executor=None,
    echo=print,
) -> Outcome:
    """Run the whole recipe into `out` (resumable: a rerun reuses every finished stage)."""
    inputs = [(Path(opts.model), "model"), (Path(opts.task), "task file")]
    if opts.data_dir:
        inputs.append((Path(opts.data_dir), "data folder"))
    if dry_run:  # plan in a scratch folder: nothing is written under `out`
        with tempfile.TemporaryDirectory() as tmp:
            path = write_study(opts, Path(tmp) / "plan", inputs, Path(out) / ORIGINAL)
            exp, stages = prepare(path, Path(out) / "study")
            todo = [s for s in stages if not s.done()]
            text = (
                describe(stages)
                + f"\n{len(stages)} stages; "
                + dry_run_estimate(todo, Path(exp.output_dir), opts.model)
            )
        return Outcome(Path(out) / "shrink.yaml", text + "; nothing written (dry run)")
    write_study(opts, Path(out), inputs)  # claims `out` before any work
    teacher = evaluate_original(opts, Path(out))
    path = write_study(opts, Path(out), inputs, teacher)
    exp, stages = prepare(path)
    todo = [s for s in stages if not s.done()]
    echo(f"{len(stages)} stages: {len(stages) - len(todo)} reused, {len(todo)} to run")
    rep = reporter_for(
        todo,
        Path(exp.output_dir),
        f"robust-compress shrink: {exp.name}",
        teacher_model=opts.model,
        reused=len(stages) - len(todo),
    )
    try:
        run_study(exp, stages, reporter=rep, executor=executor)
    finally:
        if hasattr(rep, "close"):
            rep.close()
    build_report(exp.output_dir)
    group = exp.compressions[0].name
    rows, speed = verdict.verdict_rows(Path(exp.output_dir), group, list(exp.bias_models))
    text = verdict.render(rows, speed, opts.speedup, opts.runtime)
    failures = verdict.gate_failures(rows)
    (Path(out) / "verdict.md").write_text(text + "\n", encoding="utf-8")
    write_json(Path(out) / "verdict.json", verdict.as_json(rows, speed) | {"gate": quality_gate})
    done = Outcome(path, text, failures)
    if quality_gate and failures:
        return done
    first = next(
        s for s in stages if s.meta.get("group") == group and s.meta.get("seed") == opts.seeds[0]
    )
    with atomic_dir(Path(out) / MODEL_DIR) as tmp:
        for f in first.path.iterdir():
            if f.is_file() and f.name != "stage.json":
                shutil.copy2(f, tmp / f.name)
    export_onnx(Path(out) / MODEL_DIR, Path(out) / ONNX_DIR, overwrite=True)
    done.written = [Path(out) / MODEL_DIR, Path(out) / ONNX_DIR]
    return done
