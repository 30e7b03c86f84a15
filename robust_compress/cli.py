"""The `robust-compress` command: each subcommand is a thin call into the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .io import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress BERT-family NLU models and measure the OOD robustness it costs.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: key=value (dotted keys)")]
ModelOpt = Annotated[str | None, typer.Option(help="model folder or hub id")]
TaskOpt = Annotated[str | None, typer.Option(help="task name (mnli, qqp, fever) or task YAML")]
DataOpt = Annotated[str | None, typer.Option(help="local data folder (default $ROBUST_COMPRESS_DATA, ../shared/data)")]
OutOpt = Annotated[str | None, typer.Option("--output", "-o", help="output folder")]


def _cfg(config: Path | None, sets: list[str] | None, **flags: Any):
    from .config import load_config

    base = {k: v for k, v in flags.items() if v is not None}
    overrides = list(sets or [])
    if config is None:
        return load_config(None, overrides, base=base)
    # flags beat the file; --set beats both
    return load_config(config, [f"{k}={json.dumps(v)}" for k, v in base.items()] + overrides)


@app.command()
def finetune(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None, task: TaskOpt = None,
             data_dir: DataOpt = None, output: OutOpt = None,
             resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = True,
             overwrite: Annotated[bool, typer.Option(help="replace an existing output folder")] = False):
    """Fine-tune a model on a task (the teacher), then evaluate it on every ID and OOD set."""
    from .runner import finetune as run

    cfg = _cfg(config, set_, model=model, task=task, data_dir=data_dir, output_dir=output)
    out = run(cfg, resume=resume, overwrite=overwrite)
    _print_summary(out / "summary.json")


@app.command()
def compress(method: Annotated[str | None, typer.Option(help="magnitude | heads | distill | truncate | quantize")] = None,
             config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None, task: TaskOpt = None,
             data_dir: DataOpt = None, output: OutOpt = None,
             teacher: Annotated[str | None, typer.Option(help="fine-tuned teacher folder")] = None,
             sparsity: Annotated[float | None, typer.Option(help="magnitude: target sparsity in [0, 1)")] = None,
             heads: Annotated[float | None, typer.Option(help="heads: count (>=1) or fraction (<1) to remove")] = None,
             layers: Annotated[int | None, typer.Option(help="truncate: keep the first k layers")] = None,
             loss: Annotated[str | None, typer.Option(help="ce | kd | distil | smooth | rmc | focal | jtt | ...")] = None,
             resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = True,
             overwrite: Annotated[bool, typer.Option(help="replace an existing output folder")] = False):
    """Compress a model (prune, distill, truncate or quantize) with any loss, then evaluate it."""
    from .compress import compress as run

    comp = {k: v for k, v in {"method": method, "teacher": teacher, "sparsity": sparsity, "heads": heads,
                              "layers": layers}.items() if v is not None}
    sets = [f"compression.{k}={json.dumps(v)}" for k, v in comp.items()]
    if loss:
        sets.append(f"loss.name={loss}")
    cfg = _cfg(config, sets + list(set_ or []), model=model, task=task, data_dir=data_dir, output_dir=output)
    out = run(cfg, resume=resume, overwrite=overwrite)
    _print_summary(out / "summary.json")


@app.command()
def evaluate(model_dir: Annotated[Path, typer.Argument(help="saved model folder")],
             config: ConfigOpt = None, set_: SetOpt = None, task: TaskOpt = None, data_dir: DataOpt = None,
             output: OutOpt = None,
             reference: Annotated[Path | None, typer.Option(help="teacher summary.json (or folder) for F_bias")] = None):
    """Write per-example predictions and a summary (accuracy + CI, per heuristic, ECE, Delta, F_bias)."""
    from .runner import evaluate_folder

    saved = model_dir / "run_config.yaml"
    base: dict[str, Any] = {}
    if saved.is_file() and config is None:  # evaluate as trained: task, lengths, eval sets
        from .io import read_yaml

        base = {k: v for k, v in read_yaml(saved).items()
                if k in ("task", "max_length", "data_dir", "source", "input_field", "cue", "eval_sets")}
    from .config import load_config

    cfg = load_config(config, list(set_ or []), base=base | {"model": str(model_dir)}
                      | {k: v for k, v in {"task": task, "data_dir": data_dir}.items() if v is not None})
    summary = evaluate_folder(model_dir, None, cfg, Path(output) if output else None, reference)
    out = Path(output) if output else model_dir / "eval"
    _print_summary(out / "summary.json", summary)


@app.command()
def uncertainty(output: Annotated[Path, typer.Option("--output", "-o", help="parquet file: id, v")],
                config: ConfigOpt = None, set_: SetOpt = None, task: TaskOpt = None, data_dir: DataOpt = None,
                models: Annotated[list[str] | None, typer.Option(help="model folders of different sparsities")] = None,
                snapshots: Annotated[str | None, typer.Option(help="snapshot folder of one pruning run")] = None,
                oneshot: Annotated[str | None, typer.Option(help="one model, one-shot pruned (cheapest)")] = None,
                sparsities: Annotated[list[float] | None, typer.Option(help="for --oneshot")] = None):
    """Per-training-example loss variance across models of different sparsities (RMC step 1)."""
    from .shortcut import compute_uncertainty

    cfg = _cfg(config, set_, model=models[0] if models else (oneshot or "none"), task=task, data_dir=data_dir)
    df = compute_uncertainty(cfg, output, models=models, snapshots=snapshots, oneshot=oneshot, sparsities=sparsities)
    typer.echo(f"{len(df)} examples, v mean {df['v'].mean():.4f} max {df['v'].max():.4f}; written: {output}")


@app.command("bias-model")
def bias_model(kind: Annotated[str, typer.Option(help="partial (hypothesis/claim only) | overlap")] = "partial",
               config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None, task: TaskOpt = None,
               data_dir: DataOpt = None, output: OutOpt = None,
               overwrite: Annotated[bool, typer.Option(help="replace an existing output folder")] = False):
    """Train a bias-only model (used for easy/hard splits and the debiasing losses)."""
    from .shortcut import train_bias_model

    cfg = _cfg(config, set_, model=model or "none", task=task, data_dir=data_dir, output_dir=output)
    out = train_bias_model(cfg, kind, overwrite=overwrite)
    _print_summary(out / "summary.json")


@app.command("easy-hard")
def easy_hard(bias: Annotated[str, typer.Option(help="bias-only model folder")],
              output: Annotated[Path, typer.Option("--output", "-o", help="parquet file: id, easy")],
              split: Annotated[str, typer.Option(help="eval split to partition")] = "dev_matched",
              config: ConfigOpt = None, set_: SetOpt = None, task: TaskOpt = None, data_dir: DataOpt = None,
              models: Annotated[list[Path] | None, typer.Option("--model", help="evaluated model folders to score")] = None):
    """Split an ID dev set into easy/hard with a bias-only model; score models on each part."""
    from .shortcut import easy_hard_metrics, write_easy_hard

    cfg = _cfg(config, set_, model=bias, task=task, data_dir=data_dir)
    df = write_easy_hard(cfg, bias, split, output)
    typer.echo(f"{split}: {int(df['easy'].sum())} easy / {int((~df['easy']).sum())} hard; written: {output}")
    import pandas as pd

    for m in models or []:
        pred = m / "predictions" / f"{split}.parquet"
        if not pred.is_file():
            raise UserError(f"{pred}: no predictions for split {split!r}")
        r = easy_hard_metrics(pd.read_parquet(pred), df)
        typer.echo(f"{m!s:40s} easy {100 * r['acc_easy']:5.1f}  hard {100 * r['acc_hard']:5.1f}  "
                   f"gap {100 * r['gap']:5.1f}  conf easy {r['conf_easy']:.3f} hard {r['conf_hard']:.3f}")


@app.command()
def reproduce(experiment: Annotated[Path, typer.Argument(help="experiment YAML (see configs/)")],
              dry_run: Annotated[bool, typer.Option(help="show the stage plan and exit")] = False,
              shard: Annotated[str, typer.Option(help="i/n: run every n-th compressed run, starting at i")] = "0/1",
              report: Annotated[bool, typer.Option(help="write the report at the end")] = True,
              output_dir: Annotated[Path | None, typer.Option(help="study folder instead of the YAML's output_dir")]
              = None):
    """Run a whole study: teacher, uncertainty, bias model, every compression x loss x seed, report."""
    from .experiment import reproduce as run

    try:
        i, n = (int(x) for x in shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise UserError(f"--shard {shard!r}: expected i/n with 0 <= i < n") from None
    run(experiment, dry_run=dry_run, shard=(i, n), report=report, output_dir=output_dir)


@app.command("report")
def report_cmd(study: Annotated[Path, typer.Argument(help="study folder (holds index.json)")],
               output: OutOpt = None,
               export: Annotated[Path | None, typer.Option(help="also write a weights-free copy of the study "
                                                                 "(records + predictions + report) here")] = None):
    """Rebuild the HTML + Markdown report of a study from its saved predictions."""
    from .report import build_report, export_study

    out = build_report(study, output)
    typer.echo(f"report: {out}")
    if export is not None:
        typer.echo(f"exported: {export_study(study, export)}")


@app.command("f-bias")
def f_bias_cmd(model_summary: Path, teacher_summary: Path):
    """F_bias = Delta_model / Delta_teacher from two summary.json files."""
    from .evaluate import f_bias
    from .runner import load_reference

    m, t = load_reference(model_summary), load_reference(teacher_summary)
    for who, s in (("model", m), ("teacher", t)):
        if "delta" not in s:
            raise UserError(f"{who} summary has no Delta (it needs an ID and an OOD split)")
    typer.echo(f"Delta_model={m['delta']:.4f} Delta_teacher={t['delta']:.4f} F_bias={f_bias(m['delta'], t['delta']):.4f}")


@app.command()
def tasks(data_dir: DataOpt = None):
    """List built-in tasks, their splits, and which splits the local data folder has."""
    from .data import resolve_data_dir
    from .tasks import BUILTIN

    root = resolve_data_dir(data_dir)
    for name, spec in BUILTIN.items():
        typer.echo(f"{name}: labels {spec.labels}")
        for split, s in spec.splits.items():
            have = root is not None and any((root / p).is_file() for p in s.local)
            hub = f"hub {s.hub.path}" + (f"/{s.hub.name}" if s.hub and s.hub.name else "") if s.hub else "no hub source"
            typer.echo(f"  {split:16s} {s.role:5s} local: {'yes' if have else 'missing':7s} {hub}")


def _print_summary(path: Path, summary: dict | None = None) -> None:
    summary = summary or json.loads(Path(path).read_text())
    for name, s in summary["splits"].items():
        lo, hi = s["ci95"]
        typer.echo(f"{name:16s} {s['role']:4s} acc {100 * s['accuracy']:5.1f}  [{100 * lo:.1f}, {100 * hi:.1f}]  "
                   f"ECE {s['ece']:.3f}  n={s['n']}")
        for key, cells in s.items():
            if key.startswith("by_") and not key.endswith("_only") and key != "by_gold":
                for cell, acc in cells.items():
                    typer.echo(f"    {cell:32s} {100 * acc:5.1f}")
    if "delta" in summary:
        line = f"Delta {summary['delta']:.4f}"
        if "f_bias" in summary:
            line += f"  F_bias {summary['f_bias']:.4f}"
        typer.echo(line)
    typer.echo(f"written: {path}")


def main() -> None:
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
