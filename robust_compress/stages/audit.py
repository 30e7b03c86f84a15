"""`audit MODEL [MODEL ...]`: the robustness card of models that already exist, none of them
trained.

Each model (a folder or a hub id, its classes matched to the task's) is evaluated on the task's ID
and OOD sets; a bias-only model (given, or a hypothesis/claim-only one trained once and cached)
splits the ID sets into easy and hard; the models are timed side by side. Everything is laid out
as a study folder (index.json, one evaluation folder per model, easy_hard/, speed.json), so the
report (`report.build_report`) computes Δ, F_bias against the first model, calibration, collapse
and speed-ups with the same code as a study's. `write_card` rewrites each model's card with these
numbers and the audit's task (README.md, or MODEL_CARD.md beside a README.md the user wrote).

Nothing is written into an audited model folder but its card: the audit folder may not lie in one,
and the cache (bias-only models, logits) follows the audit folder (`<out>/cache`) unless cache_dir
is set. A row is named after the folder as resolved (`audit .`, `audit ..`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__, schemas
from ..config import RunConfig
from ..data.load import Split, load_eval_splits, load_train_split
from ..data.tasks import TaskSpec, load_task
from ..io import (
    UserError,
    check_writable,
    claim_output,
    digest,
    own_dir,
    read_json,
    read_yaml,
    write_json,
)
from ..metrics import f_bias, is_collapsed
from ..models.families import encoder_flops
from ..models.load import (
    check_head,
    check_model_dir,
    count_parameters,
    label_order,
    load_model,
    model_digest,
    resolve_model_dir,
)
from ..models.overlap import is_overlap_model
from ..models.quantized import QUANT_FILE
from .artifact import bytes_on_disk
from .card import SIDE_CARD, build_card, card_path, md, write_card
from .evaluate import check_classifier, evaluate_folder, scoring_labels
from .progress import Reporter
from .shortcut import train_bias_model, write_easy_hard
from .speed import measure_speed

BIAS_KEY_VERSION = 1
TRAIN_KEYS = (
    "task",
    "data_dir",
    "source",
    "train_limit",
    "data_seed",
    "max_length",
    "cue",
    "epochs",
    "max_steps",
    "lr",
    "batch_size",
    "grad_accum",
    "warmup_ratio",
    "weight_decay",
    "seed",
    "bf16",
    "dropout",
    "label_map",
)


@dataclass
class Audited:
    name: str  # its run name in the audit folder
    source: str  # as given (folder or hub id)
    folder: Path  # resolved
    card: Path | None = None  # where --write-card writes its card


@dataclass
class Plan:
    task: TaskSpec
    splits: dict[str, Split]
    models: list[Audited]
    id_splits: list[str]
    bias: str | None  # a given bias model, or None: train one (when `train_bias`)
    bias_start: str | None
    train: Split | None
    notes: list[str]


def _names(sources: list[str]) -> list[str]:
    names = []
    for s in sources:
        p = Path(s).expanduser()
        base = (p.resolve().name or "model") if p.is_dir() else s.replace("/", "--")
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def check_audit(
    sources: list[str],
    cfg: RunConfig,
    out: Path,
    bias: str | None = None,
    write_cards: bool = False,
) -> Plan:
    """Every input checked before any work: the output folder, the task and its sets, each model
    (a classifier whose classes match the task's), the bias model or its training data."""
    if not sources:
        raise UserError("audit: give at least one model")
    for src in sources:
        _check_cache(cfg.cache_dir, src)
    check_writable(out)
    task = load_task(cfg.task)
    splits = load_eval_splits(cfg.data_args(), task)
    models = []
    for name, src in zip(_names(sources), sources, strict=True):
        folder = resolve_model_dir(src)
        check_classifier(folder, src, "; audit scores models as they are")  # evaluate's checks
        scoring_labels(folder, task, splits, cfg)
        if write_cards:
            if not Path(src).expanduser().is_dir():
                raise UserError(
                    f"--write-card: {src} is a hub id, not a folder of yours; save it to a folder "
                    "first"
                )
            check_writable(folder)
        models.append(Audited(name, src, folder, card_path(folder) if write_cards else None))
    id_splits = [s for s, sp in splits.items() if sp.role == "id"]
    notes, train, bias_start = [], None, None
    if not id_splits:
        notes.append("no ID set among the chosen sets: no easy/hard split")
    elif bias is not None:
        if not is_overlap_model(bias):
            folder = resolve_model_dir(bias)
            check_model_dir(folder)
            check_head(folder)  # its logits split easy from hard
            label_order(folder, task.labels, cfg.label_map)
    else:
        try:
            train = load_train_split(cfg.data_args(), task)
        except UserError as e:
            notes.append(
                f"no training data for a bias-only model ({e}): no easy/hard split (give --bias)"
            )
        else:
            bias_start = cfg.model
            folder = resolve_model_dir(bias_start)
            check_model_dir(folder)
            label_order(folder, task.labels, cfg.label_map)
    return Plan(task, splits, models, id_splits, bias, bias_start, train, notes)


def _check_cache(cache: str | Path, src: str) -> None:
    """The cache (bias-only models, logits) stays out of an audited model folder (the output is
    checked by `claim_output`)."""
    if not Path(src).expanduser().is_dir():
        return  # a hub id: its folder is the hub cache's
    if Path(cache).resolve().is_relative_to(Path(src).expanduser().resolve()):
        raise UserError(
            f"cache_dir {cache}: lies inside the model folder {src} being audited; set "
            "-s cache_dir=DIR elsewhere"
        )


def _record(m: Audited, labels: list[str], cfg: RunConfig) -> dict[str, Any]:
    return model_record(m.folder, m.source, labels, cfg)


def model_record(folder: Path, source: str, labels: list[str], cfg: RunConfig) -> dict[str, Any]:
    """What made a model the tool did not train (its compression.json when the tool wrote it), with
    its size and FLOPs: the record a study's rows read."""
    if (folder / "compression.json").is_file():
        return read_json(folder / "compression.json")
    record: dict[str, Any] = {"method": "none", "start_model": source}
    if not (folder / QUANT_FILE).is_file():
        model = load_model(str(folder), labels, label_map=cfg.label_map)
        total, nonzero = count_parameters(model)
        record |= {"parameters": total, "nonzero_parameters": nonzero, **encoder_flops(model)}
    return record | {"bytes_on_disk": bytes_on_disk(folder)}


def _run_config(folder: Path) -> dict[str, Any]:
    p = folder / "run_config.yaml"
    return read_yaml(p) if p.is_file() else {}


def cached_bias_model(plan: Plan, cfg: RunConfig, progress: Reporter) -> Path:
    """A hypothesis/claim-only model from `cfg.model`, trained once per (start model, training data,
    settings) under the cache folder and reused by every later audit."""
    assert plan.train is not None and plan.bias_start is not None
    key = digest(
        BIAS_KEY_VERSION,
        model_digest(resolve_model_dir(plan.bias_start)),
        plan.train.digest(),
        cfg.model_dump(mode="json", include=set(TRAIN_KEYS)),
    )
    out = Path(cfg.cache_dir) / "bias" / f"partial-{key[:12]}"
    if (out / "summary.json").is_file():
        progress.note(f"bias-only model: cached {out}")
        return out
    progress.note(f"bias-only model: training from {plan.bias_start} (once; cached in {out})")
    bcfg = cfg.model_copy(
        update={
            "model": plan.bias_start,
            "output_dir": str(out),
            "eval_sets": plan.id_splits,
            "trackers": [],
        }
    )
    return train_bias_model(bcfg, "partial", overwrite=True, progress=progress)


def _row(
    m: Audited,
    s: dict[str, Any],
    first: str,
    out: Path,
    easy: dict[str, pd.DataFrame],
    speed: dict[str, Any] | None,
) -> dict[str, Any]:
    """One model's line of audit.json: what was measured (ID, ECE and easy/hard without an OOD set
    too; speed only when timed)."""
    fb = s.get("f_bias")
    id_split = s.get("id_split") or next(
        (k for k, v in s.get("splits", {}).items() if v.get("role") == "id"), None
    )
    if m.name == first and s.get("delta") is not None:  # against itself: 1, or undefined
        fb = None if math.isnan(f := f_bias(s["delta"], s["delta"])) else f
    row: dict[str, Any] = {
        "name": m.name,
        "source": m.source,
        "acc_id": s["splits"][id_split]["accuracy"] if id_split else None,
        "acc_ood": s.get("acc_ood"),
        "delta": s.get("delta"),
        "f_bias": fb,
        "id_split": id_split,
    }
    if id_split:
        df = pd.read_parquet(out / "models" / m.name / "predictions" / f"{id_split}.parquet")
        row |= {"ece_id": s["splits"][id_split]["ece"], "collapsed": bool(is_collapsed(df))}
        if id_split in easy:
            e = df.merge(easy[id_split], on="id")
            row |= {
                "easy_acc": float(e[e["easy"]]["correct"].mean()),
                "hard_acc": float(e[~e["easy"]]["correct"].mean()),
            }
    if speed:
        rate = speed["examples_per_s"][m.name]
        row |= {"examples_per_s": rate, "speedup": rate / speed["examples_per_s"][first]}
    return row


def _write_card(
    m: Audited,
    plan: Plan,
    summary: dict[str, Any],
    record: dict[str, Any],
    row: dict[str, Any],
    first: str,
    cfg: RunConfig,
) -> Path:
    """The model's card with the audit's numbers, measured on the audit's task and sets (not the
    task of its run_config.yaml); where `card_path` said (checked before any work)."""
    sp = (
        {"examples_per_s": row["examples_per_s"], "speedup": row["speedup"], "reference": first}
        if "speedup" in row
        else None
    )
    others = ", ".join(md(x.name) for x in plan.models if x.name != m.name)
    note = (
        f"Audited by robust-compress {__version__} (`audit`, task {md(plan.task.name)}) "
        f"beside {others or 'no other model'}; "
        f"the reference for F_bias and speed-up is {md(first)}."
    )
    run = _run_config(m.folder) or {"task": cfg.task, "model": record.get("start_model")}
    card = build_card(m.name, summary, record, run, sp, note, task=plan.task)
    return write_card(m.folder, card)


def audit(
    sources: list[str],
    cfg: RunConfig,
    out: str | Path,
    bias: str | None = None,
    write_cards: bool = False,
    speed_examples: int = 512,
    repeats: int = 3,
    progress: Reporter | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Audit `sources` (the first is the reference) into the study-shaped folder `out` (an
    existing audit of the tool's only with `overwrite`); returns audit.json's content (per model:
    ID/OOD accuracy, Δ, F_bias, ECE, collapse, speed)."""
    rep = progress or Reporter()
    out = Path(out)
    read = [(s, "model") for s in sources] + [(bias, "bias model")] + cfg.input_paths()
    claim_output(out, read, overwrite)
    if "cache_dir" not in cfg.model_fields_set:  # not ./runs/cache: the cwd may be a model folder
        cfg = cfg.model_copy(update={"cache_dir": str(out / "cache")})
    plan = check_audit(sources, cfg, out, bias, write_cards)
    own_dir(out)
    for n in plan.notes:
        rep.note(n)
    index, summaries, records, cards = [], {}, {}, {}
    for i, m in enumerate(plan.models):
        labels = scoring_labels(m.folder, plan.task, plan.splits, cfg)
        records[m.name] = _record(m, labels, cfg)
        run = _run_config(m.folder)
        ref = out / "models" / plan.models[0].name / "summary.json" if i else None
        rep.note(f"evaluate {m.name} ({i + 1}/{len(plan.models)})")
        summaries[m.name] = evaluate_folder(
            m.folder,
            cfg,
            out / "models" / m.name,
            reference=ref,
            progress=rep,
            files={"compression.json": records[m.name]},
            overwrite=True,
        )
        rec = records[m.name]
        index.append(
            {
                "name": m.name,
                "path": f"models/{m.name}",
                "group": m.name,
                "method": rec.get("method") or "none",
                "loss": (run.get("loss") or {}).get("name") or rec.get("loss") or "–",
                "seed": int(run.get("seed", 0)),
                "is_teacher": i == 0,
                "sparsity": (rec.get("settings") or {}).get("sparsity"),
                "source": m.source,
            }
        )
    bias_model = plan.bias
    if plan.id_splits and bias_model is None and plan.train is not None:
        bias_model = str(cached_bias_model(plan, cfg, rep))
    easy: dict[str, pd.DataFrame] = {}
    if bias_model is not None and plan.id_splits:
        for split in plan.id_splits:
            easy[split] = write_easy_hard(
                cfg, bias_model, split, out / "easy_hard" / f"{split}.parquet", overwrite=True
            )
    speed = (
        measure_speed(
            {m.name: m.folder for m in plan.models},
            cfg.model_copy(update={"bf16": False}),
            out / "speed.json",
            n=speed_examples,
            repeats=repeats,
            progress=rep,
        )
        if speed_examples
        else None
    )
    write_json(out / "index.json", schemas.Index.dump_python(schemas.Index.validate_python(index)))
    rows = []
    first = plan.models[0].name
    for m in plan.models:
        rows.append(row := _row(m, summaries[m.name], first, out, easy, speed))
        if write_cards:
            path = _write_card(m, plan, summaries[m.name], records[m.name], row, first, cfg)
            cards[m.name] = str(path)
            if path.name == SIDE_CARD:
                rep.note(
                    f"{m.name}: {path.parent / 'README.md'} is yours (not written by "
                    f"robust-compress): the card is written beside it, {path}"
                )
    result = {
        "task": plan.task.name,
        "reference": first,
        "bias_model": bias_model,
        "notes": plan.notes,
        "models": rows,
        "cards": cards,
        "version": __version__,
    }
    write_json(out / "audit.json", result)
    return result


def format_audit_table(result: dict[str, Any]) -> str:
    """audit.json's rows as the command prints them: one line per model; "–" where nothing was
    measured (no OOD set: no OOD, Delta, F_bias; no bias model: no easy/hard; --examples 0: no
    speed)."""

    def num(v: Any, fmt: str, width: int, scale: float = 1.0) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return f"{'–':>{width}s}"
        return f"{scale * v:{width}{fmt}}"

    lines = [
        f"{'model':32s} {'ID':>6s} {'OOD':>6s} {'Delta':>6s} {'F_bias':>6s} {'ECE':>5s} "
        f"{'easy':>6s} {'hard':>6s} {'ex/s':>7s} {'speed':>6s}"
    ]
    for r in result["models"]:
        speed = r.get("speedup")
        lines.append(
            f"{r['name'][:32]:32s} {num(r.get('acc_id'), '.1f', 6, 100)} "
            f"{num(r.get('acc_ood'), '.1f', 6, 100)} {num(r.get('delta'), '.3f', 6)} "
            f"{num(r.get('f_bias'), '.2f', 6)} {num(r.get('ece_id'), '.3f', 5)} "
            f"{num(r.get('easy_acc'), '.1f', 6, 100)} {num(r.get('hard_acc'), '.1f', 6, 100)} "
            f"{num(r.get('examples_per_s'), '.1f', 7)} "
            + ("     –" if speed is None else f"{speed:5.2f}x")
            + ("  collapsed" if r.get("collapsed") else "")
        )
    return "\n".join(lines)
