"""The `robust-compress` command: each subcommand is a thin call into the library.

Option help texts are the config fields' descriptions (`config.field_help`), and every flag maps to
a config field (`FLAGS`), so the CLI and the config cannot drift (tests/test_trust.py checks both).
The config is torch-free and each command imports what it runs inside itself, so `--help`,
`--version`, `tasks`, `f-bias` and `report` load no torch (tests/test_docs.py checks it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__
from .io import UserError, os_error_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Compress BERT-family NLU models and measure the OOD robustness it costs.",
)

# flag -> RunConfig field it sets (dotted); the help text comes from that field
FLAGS = {
    "model": "model",
    "task": "task",
    "data_dir": "data_dir",
    "output": "output_dir",
    "teacher": "inputs.teacher",
    "sparsity": "compression.sparsity",
    "heads": "compression.heads",
    "layers": "compression.layers",
    "loss": "loss.name",
    "method": "compression.method",
}


def _help(flag: str) -> str:
    from .config import LOSS_NAMES, METHOD_NAMES, field_help

    if flag == "loss":
        return "training objective: " + " | ".join(LOSS_NAMES)
    if flag == "method":
        return "compression method: " + " | ".join(METHOD_NAMES)
    return field_help(FLAGS[flag])


def _opt(flag: str, *names: str):
    return typer.Option(*names, help=_help(flag), show_default=False)


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML run config", metavar="FILE")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override: key=value (dotted keys)", metavar="KEY=VALUE"),
]
ModelOpt = Annotated[str | None, _opt("model")]
TaskOpt = Annotated[str | None, _opt("task")]
DataOpt = Annotated[str | None, _opt("data_dir")]
OutOpt = Annotated[str | None, _opt("output", "--output", "-o")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume/--no-resume", help="continue from the last checkpoint")
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="replace an output robust-compress wrote earlier (never a file or folder it did "
        "not write, nor an input)",
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="also show library messages")]


def _cfg(config: Path | None, sets: list[str] | None, **flags: Any):
    """The run config from three dict layers: the YAML file < the flags < `--set` (each deeper key
    merged, not replaced)."""
    from .config import load_config

    layer: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is not None:
            d = layer
            *parents, last = FLAGS[flag].split(".")
            for p in parents:
                d = d.setdefault(p, {})
            d[last] = value
    return load_config(config, list(sets or []), over=layer)


def _quiet(verbose: bool) -> None:
    """Library noise (load reports, progress bars of other libraries) only with -v."""
    import transformers

    if verbose:
        transformers.logging.set_verbosity_info()
        return

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:
        pass


def _reporter():
    from .stages.progress import LineReporter

    return LineReporter(every=10.0)


def _version(value: bool) -> None:
    if value:
        from . import code_version

        typer.echo(f"robust-compress {__version__} (code {code_version()})")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="print the version and the code version, then exit",
        ),
    ] = False,
):
    """Compress BERT-family NLU models and measure the OOD robustness it costs."""


@app.command()
def finetune(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = None,
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    output: OutOpt = None,
    resume: ResumeOpt = True,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
):
    """Fine-tune a model on a task (the teacher), then evaluate it on every ID and OOD set."""
    from .stages import finetune as run

    _quiet(verbose)
    cfg = _cfg(config, set_, model=model, task=task, data_dir=data_dir, output=output)
    out = run(cfg, resume=resume, overwrite=overwrite, progress=_reporter())
    _print_summary(out / "summary.json")


@app.command()
def compress(
    method: Annotated[str | None, _opt("method")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = None,
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    output: OutOpt = None,
    teacher: Annotated[str | None, _opt("teacher")] = None,
    sparsity: Annotated[float | None, _opt("sparsity")] = None,
    heads: Annotated[float | None, _opt("heads")] = None,
    layers: Annotated[int | None, _opt("layers")] = None,
    loss: Annotated[str | None, _opt("loss")] = None,
    resume: ResumeOpt = True,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
):
    """Compress a model (prune, distill, truncate or quantize) with any loss, then evaluate it."""
    from .stages import compress as run

    _quiet(verbose)
    cfg = _cfg(
        config,
        set_,
        method=method,
        model=model,
        task=task,
        data_dir=data_dir,
        output=output,
        teacher=teacher,
        sparsity=sparsity,
        heads=heads,
        layers=layers,
        loss=loss,
    )
    out = run(cfg, resume=resume, overwrite=overwrite, progress=_reporter())
    _print_summary(out / "summary.json")


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="saved model folder or hub id")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    output: OutOpt = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="teacher summary.json (or folder) for F_bias", metavar="PATH"),
    ] = None,
    overwrite: OverwriteOpt = False,
    new_head: Annotated[
        bool,
        typer.Option(
            "--new-head",
            help="score a folder that has no classifier head with a new (seeded, random) one",
        ),
    ] = False,
    verbose: VerboseOpt = False,
):
    """Write per-example predictions and a summary (accuracy + CI, per heuristic, ECE, Delta,
    F_bias) to -o (default: <model>-eval beside the model)."""
    from .config import load_config
    from .stages import evaluate_folder
    from .stages.evaluate import default_output, saved_settings

    _quiet(verbose)
    base = saved_settings(model_dir, task) if config is None else {}  # evaluate as trained
    cfg = load_config(
        config,
        list(set_ or []),
        base=base
        | {"model": str(model_dir)}
        | {k: v for k, v in {"task": task, "data_dir": data_dir}.items() if v is not None},
    )
    out = Path(output) if output else default_output(model_dir)
    summary = evaluate_folder(
        model_dir, cfg, out, reference, progress=_reporter(), overwrite=overwrite, new_head=new_head
    )
    _print_summary(out / "summary.json", summary)


@app.command()
def uncertainty(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="parquet file: id, v", metavar="FILE")
    ],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    models: Annotated[
        list[str] | None, typer.Option(help="model folders of different sparsities", metavar="DIR")
    ] = None,
    snapshots: Annotated[
        str | None, typer.Option(help="snapshot folder of one pruning run", metavar="DIR")
    ] = None,
    oneshot: Annotated[
        str | None, typer.Option(help="one model, one-shot pruned (cheapest)", metavar="DIR")
    ] = None,
    sparsities: Annotated[
        list[float] | None, typer.Option(help="for --oneshot", metavar="S")
    ] = None,
    dynamics: Annotated[
        str | None,
        typer.Option(help="a teacher folder with training dynamics (free)", metavar="DIR"),
    ] = None,
    stat: Annotated[str, typer.Option(help="for --dynamics: loss | p_gold")] = "loss",
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
):
    """Per-training-example loss variance across models of different sparsities (RMC step 1)."""
    from .stages import compute_uncertainty

    _quiet(verbose)
    cfg = _cfg(
        config,
        set_,
        model=models[0] if models else (oneshot or dynamics or "none"),
        task=task,
        data_dir=data_dir,
    )
    df = compute_uncertainty(
        cfg,
        output,
        models=models,
        snapshots=snapshots,
        oneshot=oneshot,
        sparsities=sparsities,
        dynamics=dynamics,
        stat=stat,
        progress=_reporter(),
        overwrite=overwrite,
    )
    typer.echo(
        f"{len(df)} examples, v mean {df['v'].mean():.4f} max {df['v'].max():.4f}; written: "
        f"{output}"
    )


@app.command("bias-model")
def bias_model(
    kind: Annotated[
        str,
        typer.Option(
            help="partial (hypothesis/claim only) | overlap | shallow (the encoder on a small "
            "seeded subset: no known bias needed)"
        ),
    ] = "partial",
    features: Annotated[str, typer.Option(help="overlap: basic | literature")] = "basic",
    subset: Annotated[
        int, typer.Option(help="shallow: training examples it is fit on (a seeded subset)")
    ] = 2000,
    epochs: Annotated[float, typer.Option(help="shallow: epochs on that subset")] = 3.0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = None,
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    output: OutOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
):
    """Train a bias-only model (used for easy/hard splits and the debiasing losses)."""
    from .stages import train_bias_model
    from .stages.shortcut import BIAS_KINDS

    _quiet(verbose)
    if kind not in BIAS_KINDS:
        raise UserError(f"--kind {kind!r}: use {' or '.join(map(repr, BIAS_KINDS))}")
    cfg = _cfg(config, set_, model=model or "none", task=task, data_dir=data_dir, output=output)
    if features not in ("basic", "literature"):
        raise UserError(f"--features {features!r}: use 'basic' or 'literature'")
    out = train_bias_model(
        cfg,
        kind,
        overwrite=overwrite,
        progress=_reporter(),
        features=features,
        subset=subset,
        epochs=epochs,
    )
    _print_summary(out / "summary.json")


@app.command("easy-hard")
def easy_hard(
    bias: Annotated[str, typer.Option(help="bias-only model folder", metavar="DIR")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="parquet file: id, easy", metavar="FILE")
    ],
    split: Annotated[str, typer.Option(help="eval split to partition")] = "dev_matched",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    models: Annotated[
        list[Path] | None,
        typer.Option("--model", help="evaluated model folders to score", metavar="DIR"),
    ] = None,
    overwrite: OverwriteOpt = False,
):
    """Split an ID dev set into easy/hard with a bias-only model; score models on each part."""
    from .stages import score_easy_hard, write_easy_hard

    cfg = _cfg(config, set_, model=bias, task=task, data_dir=data_dir)
    df = write_easy_hard(cfg, bias, split, output, models or [], overwrite)
    typer.echo(
        f"{split}: {int(df['easy'].sum())} easy / {int((~df['easy']).sum())} hard; written: "
        f"{output}"
    )
    for m, r in score_easy_hard(models or [], split, df):
        typer.echo(
            f"{m!s:40s} easy {100 * r['easy_acc']:5.1f}  hard {100 * r['hard_acc']:5.1f}  "
            f"gap {100 * r['gap']:5.1f}  conf easy {r['easy_conf']:.3f} hard {r['hard_conf']:.3f}"
        )


@app.command()
def reproduce(
    experiment: Annotated[Path, typer.Argument(help="experiment YAML (see configs/)")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check everything, show the plan, run nothing")
    ] = False,
    shard: Annotated[
        str, typer.Option(help="i/n: run every n-th compressed run, starting at i", metavar="I/N")
    ] = "0/1",
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="write the report at the end")
    ] = True,
    output_dir: Annotated[
        Path | None,
        typer.Option(help="study folder instead of the YAML's output_dir", metavar="DIR"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="override an experiment key (dotted), e.g. uncertainty.source=runs",
        ),
    ] = None,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="remove partial checkpoints and temporary folders that no stage of this plan owns",
        ),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            help="who runs the stages: local (one after another, here) "
            "| ray (a Ray cluster) | submitit (Slurm job arrays)"
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="ray: the cluster to join (auto: the running one; default: start one here)"
        ),
    ] = None,
    slurm_partition: Annotated[
        str | None, typer.Option(help="submitit: the Slurm partition")
    ] = None,
    slurm_gpus: Annotated[
        int | None, typer.Option(help="submitit: GPUs per job", metavar="N")
    ] = None,
    verbose: VerboseOpt = False,
):
    """Run a whole study: teacher, uncertainty, bias model, every compression x loss x seed,
    report."""
    from .study.executors import make_executor
    from .study.run import reproduce as run

    try:
        i, n = (int(x) for x in shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise UserError(f"--shard {shard!r}: expected i/n with 0 <= i < n") from None
    runner = make_executor(
        executor, address=address, slurm_partition=slurm_partition, slurm_gpus=slurm_gpus
    )
    _quiet(verbose)
    stages = run(
        experiment,
        (i, n),
        output_dir,
        _reporter(),
        set_,
        runner,
        dry_run=dry_run,
        clean=clean,
        echo=typer.echo,
        live=True,
    )
    if report and not dry_run:
        from .report import build_report

        typer.echo(f"report: {build_report(stages[0].root)}")


@app.command()
def shrink(
    model: Annotated[str, typer.Argument(help="the fine-tuned model to shrink (folder)")],
    task: Annotated[str, typer.Option(help="a built-in task or a task YAML")] = "mnli",
    speedup: Annotated[float, typer.Option(help="how many times faster on --runtime")] = 2.0,
    runtime: Annotated[str, typer.Option(help="the runtime that will serve it")] = (
        "onnxruntime-fp32"
    ),
    bias: Annotated[
        str, typer.Option(help="bias models: auto (the task's known ones, else shallow) or kinds")
    ] = "auto",
    loss: Annotated[str, typer.Option(help="the recovery loss (reads the first bias model)")] = (
        "conf_reg"
    ),
    seeds: Annotated[str, typer.Option(help="comma-separated training seeds")] = "42,43,44",
    epochs: Annotated[float, typer.Option(help="recovery epochs")] = 1.0,
    train_limit: Annotated[int | None, typer.Option(help="training pairs (default all)")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="examples per set (default all)")] = None,
    data_dir: DataOpt = None,
    set_: SetOpt = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="shrink folder", metavar="DIR")
    ] = Path("runs/shrink"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the plan and its time")] = False,
    quality_gate: Annotated[
        bool,
        typer.Option(
            "--quality-gate", help="refuse to write the model if a robustness row is worse"
        ),
    ] = False,
    debias_teacher: Annotated[
        bool,
        typer.Option(
            "--debias-teacher", help="debias the model first (conf_reg), then shrink that"
        ),
    ] = False,
    verbose: VerboseOpt = False,
):
    """Your model, N times faster on a runtime and no less robust, or a refusal with the row."""
    import yaml
    from pydantic import ValidationError

    from .recipes.plan import ShrinkOptions
    from .recipes.shrink import shrink as run_shrink

    _quiet(verbose)
    try:
        opts = ShrinkOptions(
            model=model,
            task=task,
            speedup=speedup,
            runtime=runtime,
            bias=bias.split(","),
            loss=loss,
            seeds=[int(x) for x in seeds.split(",")],
            epochs=epochs,
            train_limit=train_limit,
            eval_limit=eval_limit,
            data_dir=str(data_dir) if data_dir else None,
            debias_teacher=debias_teacher,
            settings={k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in set_ or [])},
        )
    except (ValidationError, ValueError) as e:
        raise UserError(f"shrink: {_first_error(e)}") from None
    done = run_shrink(opts, output, dry_run=dry_run, quality_gate=quality_gate, echo=typer.echo)
    typer.echo(done.text)
    if done.failures:
        rows = "; ".join(f"{r.what} {r.difference}" for r in done.failures)
        if quality_gate:
            typer.echo(f"refused by the quality gate: measurably less robust on {rows}", err=True)
            raise typer.Exit(1)
        typer.echo(f"warning: measurably less robust on {rows}")
    for p in done.written:
        typer.echo(f"written: {p}")


def _first_error(e: Exception) -> str:
    """One line from a pydantic or conversion error."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        err = e.errors()[0]
        return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
    return str(e)


@app.command()
def audit(
    models: Annotated[
        list[str], typer.Argument(help="model folders or hub ids; the first is the reference")
    ],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="audit folder (a study folder + report/)", metavar="DIR"
        ),
    ] = Path("runs/audit"),
    bias: Annotated[
        str | None,
        typer.Option(
            help="bias-only model for easy/hard (default: a hypothesis-only "
            "model trained once from --set model=..., cached)",
            metavar="DIR",
        ),
    ] = None,
    write_card: Annotated[
        bool,
        typer.Option(
            "--write-card",
            help="write each model folder's card with the audit's numbers (README.md; "
            "MODEL_CARD.md beside a README.md the tool did not write)",
        ),
    ] = False,
    examples: Annotated[
        int, typer.Option(help="ID examples to time on (0: no speed)", metavar="N")
    ] = 512,
    repeats: Annotated[int, typer.Option(help="timed rounds after a warm-up", metavar="N")] = 3,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
):
    """Robustness card of existing models (none trained): ID and OOD accuracy, per heuristic,
    easy/hard, ECE, collapse, Delta and F_bias against the first, speed-up; HTML + Markdown + JSON
    report."""
    from .report import build_report
    from .stages import audit as run
    from .stages.audit import format_audit_table

    _quiet(verbose)
    cfg = _cfg(config, set_, model=models[0] if models else None, task=task, data_dir=data_dir)
    result = run(
        models,
        cfg,
        output,
        bias=bias,
        write_cards=write_card,
        speed_examples=examples,
        repeats=repeats,
        progress=_reporter(),
        overwrite=overwrite,
    )
    report = build_report(output, name=output.name)
    typer.echo(format_audit_table(result))
    for card in (result.get("cards") or {}).values():
        typer.echo(f"card: {card}")
    typer.echo(f"report: {report}")


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="saved model folder (any compressed kind)")],
    format: Annotated[str, typer.Option("--format", help="export format: onnx")] = "onnx",
    output: OutOpt = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="also write onnxruntime's dynamic int8 model")
    ] = False,
    examples: Annotated[
        int, typer.Option(help="examples to check parity and time on", metavar="N")
    ] = 256,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
):
    """Export a model for serving (ONNX), check it against PyTorch and time it in onnxruntime."""
    from .stages import export_onnx

    _quiet(verbose)
    if format != "onnx":
        raise UserError(f"--format {format!r}: only 'onnx' is supported")
    rec = export_onnx(
        model_dir, output, int8=int8, n=examples, progress=_reporter(), overwrite=overwrite
    )
    typer.echo(f"PyTorch {rec['torch_examples_per_s']:.1f} ex/s")
    for name in ("fp32", "int8"):
        if name in rec:
            r = rec[name]
            typer.echo(
                f"onnxruntime {name}: {r['examples_per_s']:.1f} ex/s "
                f"({r['speedup_vs_torch']:.2f}x PyTorch), "
                f"max |logit diff| {r['max_abs_logit_diff']:.2e}, same prediction on "
                f"{100 * r['prediction_agreement']:.1f}%, {r['bytes'] / 2**20:.1f} MiB: {r['file']}"
            )


@app.command()
def speed(
    models: Annotated[
        list[Path], typer.Argument(help="saved model folders; the first is the reference")
    ],
    task: TaskOpt = None,
    data_dir: DataOpt = None,
    examples: Annotated[int, typer.Option(help="ID examples to time on", metavar="N")] = 512,
    repeats: Annotated[int, typer.Option(help="timed rounds after a warm-up", metavar="N")] = 3,
    bf16: Annotated[
        bool, typer.Option("--bf16", help="bf16 autocast (int8 models stay fp32)")
    ] = False,
    runtime: Annotated[
        list[str] | None,
        typer.Option(
            "--runtime",
            help="also time on this runtime (repeatable): pytorch-fp32 | pytorch-bf16 | "
            "onnxruntime-fp32 | onnxruntime-int8",
            metavar="NAME",
        ),
    ] = None,
    output: OutOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
):
    """Time saved models side by side on this machine (the speed stage's harness): examples/s and
    the speed-up over the first, on the chosen runtimes too."""
    from .models.runtimes import RUNTIMES
    from .stages import measure_speed

    _quiet(verbose)
    cfg = _cfg(None, None, model=str(models[0]), task=task, data_dir=data_dir)
    cfg = cfg.model_copy(update={"bf16": bf16})
    if bad := [r for r in runtime or [] if r not in RUNTIMES]:
        raise UserError(f"--runtime {bad[0]!r}: unknown; have {', '.join(RUNTIMES)}")
    names = {str(m): m for m in models}
    out = Path(output) if output else Path("speed.json")
    result = measure_speed(
        names,
        cfg,
        out,
        n=examples,
        repeats=repeats,
        progress=_reporter(),
        runtimes=runtime,
        overwrite=overwrite,
        record=True,
    )
    for label, rates, missing in [("bf16" if bf16 else "fp32", result["examples_per_s"], {})] + [
        (rt, r["examples_per_s"], r["missing"]) for rt, r in result.get("runtimes", {}).items()
    ]:
        if len(result.get("runtimes", {})):
            typer.echo(f"{label}:")
        base = rates.get(str(models[0]))
        for name in names:
            if name in rates:
                typer.echo(
                    f"{name:60s} {rates[name]:8.1f} ex/s  "
                    + (f"{rates[name] / base:5.2f}x" if base else "")
                )
            else:
                typer.echo(f"{name:60s} not run: {missing.get(name, '')}")
    typer.echo(f"written: {out}")


@app.command("report")
def report_cmd(
    study: Annotated[Path, typer.Argument(help="study folder (holds index.json)")],
    output: OutOpt = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="also write a weights-free copy of the study "
            "(records + predictions + report) here",
            metavar="DIR",
        ),
    ] = None,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="add the study's runs to the existing --export folder (rows added later, a "
            "shard run elsewhere); a run both hold must be the same run",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
):
    """Rebuild the HTML + Markdown report of a study from its saved predictions (default: its
    report/ folder, which the tool owns and replaces; an existing -o or --export folder needs
    --overwrite, or --merge to add to an export)."""
    from .report import build_report, export_study, merge_export
    from .report.export import claim_export

    if merge and export is None:
        raise UserError("--merge: needs --export DIR, the export to add the study's runs to")
    if export is not None:  # every output claimed before any work
        claim_export(study, export, overwrite, merge)
    typer.echo(f"report: {build_report(study, output, overwrite=overwrite)}")
    if merge:
        added, same = merge_export(study, export)
        typer.echo(
            f"merged into {export}: {len(added)} run(s) added, {len(same)} held by both and "
            "identical (stage key and predictions)"
        )
    elif export is not None:
        typer.echo(f"exported: {export_study(study, export, overwrite=overwrite)}")


@app.command("f-bias")
def f_bias_cmd(
    model_summary: Annotated[Path, typer.Argument(help="the model's summary.json")],
    teacher_summary: Annotated[Path, typer.Argument(help="the teacher's summary.json")],
):
    """F_bias = Delta_model / Delta_teacher from two summary.json files."""
    import math

    from . import schemas
    from .metrics import f_bias

    m, t = (schemas.read(p, schemas.Summary) for p in (model_summary, teacher_summary))
    for who, s in (("model", m), ("teacher", t)):
        if s.delta is None:
            raise UserError(f"{who} summary has no Delta (it needs an ID and an OOD split)")
    fb = f_bias(m.delta, t.delta)
    shown = "undefined (teacher Delta < 0.01 or model Delta < 0)" if math.isnan(fb) else f"{fb:.4f}"
    typer.echo(f"Delta_model={m.delta:.4f} Delta_teacher={t.delta:.4f} F_bias={shown}")


@app.command()
def tasks(data_dir: DataOpt = None):
    """List built-in tasks, their splits, and which splits the local data folder has."""
    from .data.load import resolve_data_dir
    from .data.tasks import BUILTIN

    root = resolve_data_dir(data_dir)
    shown = (
        root.resolve()
        if root is not None
        else "none (pass --data-dir or set $ROBUST_COMPRESS_DATA)"
    )
    typer.echo(f"data folder: {shown}")
    for name, spec in BUILTIN.items():
        typer.echo(f"{name}: labels {spec.labels}")
        for split, s in spec.splits.items():
            have = root is not None and any((root / p).is_file() for p in s.local)
            hub = (
                f"hub {s.hub.path}" + (f"/{s.hub.name}" if s.hub and s.hub.name else "")
                if s.hub
                else "no hub source"
            )
            typer.echo(f"  {split:16s} {s.role:5s} local: {'yes' if have else 'missing':7s} {hub}")


def _print_summary(path: Path, summary: dict | None = None) -> None:
    from .schemas import Summary, parse, read

    summary = parse(summary, Summary, path).model_dump() if summary is not None else None
    summary = summary or read(Path(path), Summary).model_dump()
    for name, s in summary["splits"].items():
        lo, hi = s["ci95"]
        typer.echo(
            f"{name:16s} {s['role']:4s} acc {100 * s['accuracy']:5.1f}  "
            f"[{100 * lo:.1f}, {100 * hi:.1f}]  ECE {s['ece']:.3f}  n={s['n']}"
        )
        for key, cells in s.items():
            if key.startswith("by_") and not key.endswith("_only") and key != "by_gold":
                for cell, acc in cells.items():
                    typer.echo(f"    {cell:32s} {100 * acc:5.1f}")
    if summary.get("delta") is not None:
        line = f"Delta {summary['delta']:.4f}"
        if summary.get("f_bias") is not None:
            line += f"  F_bias {summary['f_bias']:.4f}"
        typer.echo(line)
    typer.echo(f"written: {path}")


def main() -> None:
    logging.basicConfig(
        format="%(levelname)s: %(message)s", level=logging.WARNING, stream=sys.stderr
    )
    logging.getLogger("robust_compress").setLevel(logging.INFO)
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (
        OSError
    ) as e:  # permission denied, disk full, ...: the file and the problem, no traceback
        typer.echo(f"error: {os_error_line(e)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
