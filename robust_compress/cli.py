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

        base = {k: v for k, v in read_yaml(saved).items() if k in ("task", "max_length", "data_dir", "source")}
    from .config import load_config

    cfg = load_config(config, list(set_ or []), base=base | {"model": str(model_dir)}
                      | {k: v for k, v in dict(task=task, data_dir=data_dir).items() if v is not None})
    summary = evaluate_folder(model_dir, None, cfg, Path(output) if output else None, reference)
    out = Path(output) if output else model_dir / "eval"
    _print_summary(out / "summary.json", summary)


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
