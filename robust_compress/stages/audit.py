"""`audit MODEL [MODEL ...]`: the robustness card of models that already exist, none of them
trained.

Each model (a folder or a hub id, its classes matched to the task's) is evaluated on the task's ID
and OOD sets; a bias-only model (given, or a hypothesis/claim-only one trained once and cached)
splits the ID sets into easy and hard; the models are timed side by side. Everything is laid out
as a study folder (index.json, one evaluation folder per model, easy_hard/, speed.json), so the
report (`report.build_report`) computes Δ, F_bias against the first model, calibration, collapse
and speed-ups with the same code as a study's. `write_card` rewrites each model's README.md card
with these numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import AutoConfig

from .. import __version__, schemas
from ..config import RunConfig
from ..data.load import Split, load_eval_splits, load_train_split
from ..data.tasks import TaskSpec, load_task
from ..io import UserError, check_writable, digest, read_json, read_yaml, write_json
from ..metrics import f_bias, is_collapsed
from ..models.families import encoder_flops, family_of
from ..models.load import (
    check_model_dir,
    count_parameters,
    label_order,
    load_model,
    model_digest,
    model_labels,
    resolve_model_dir,
)
from ..models.overlap import is_overlap_model
from ..models.quantized import QUANT_FILE
from .artifact import bytes_on_disk
from .card import build_card, write_card
from .evaluate import evaluate_folder, scoring_labels
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
        base = Path(s).name if Path(s).expanduser().is_dir() else s.replace("/", "--")
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
    check_writable(out)
    task = load_task(cfg.task)
    splits = load_eval_splits(cfg.data_args(), task)
    models = []
    for name, src in zip(_names(sources), sources, strict=True):
        folder = resolve_model_dir(src)
        check_model_dir(folder)
        family_of(AutoConfig.from_pretrained(folder))
        if not model_labels(folder):
            raise UserError(
                f"{src}: not a fine-tuned classifier (its config.json names no "
                "*ForSequenceClassification architecture): audit scores models as they are"
            )
        scoring_labels(folder, task, splits, cfg)
        if write_cards:
            if not Path(src).expanduser().is_dir():
                raise UserError(
                    f"--write-card: {src} is a hub id, not a folder of yours; save it to a folder "
                    "first"
                )
            check_writable(folder)
        models.append(Audited(name, src, folder))
    id_splits = [s for s, sp in splits.items() if sp.role == "id"]
    notes, train, bias_start = [], None, None
    if not id_splits:
        notes.append("no ID set among the chosen sets: no easy/hard split")
    elif bias is not None:
        if not is_overlap_model(bias):
            folder = resolve_model_dir(bias)
            check_model_dir(folder)
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


def _record(m: Audited, labels: list[str], cfg: RunConfig) -> dict[str, Any]:
    """What made the model (its compression.json when the tool wrote it), with its size and
    FLOPs."""
    if (m.folder / "compression.json").is_file():
        return read_json(m.folder / "compression.json")
    record: dict[str, Any] = {"method": "none", "start_model": m.source}
    if not (m.folder / QUANT_FILE).is_file():
        model = load_model(str(m.folder), labels, label_map=cfg.label_map)
        total, nonzero = count_parameters(model)
        record |= {"parameters": total, "nonzero_parameters": nonzero, **encoder_flops(model)}
    return record | {"bytes_on_disk": bytes_on_disk(m.folder)}


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


def audit(
    sources: list[str],
    cfg: RunConfig,
    out: str | Path,
    bias: str | None = None,
    write_cards: bool = False,
    speed_examples: int = 512,
    repeats: int = 3,
    progress: Reporter | None = None,
) -> dict[str, Any]:
    """Audit `sources` (the first is the reference) into the study-shaped folder `out`; returns
    audit.json's content (per model: ID/OOD accuracy, Δ, F_bias, ECE, collapse, speed)."""
    rep = progress or Reporter()
    out = Path(out)
    plan = check_audit(sources, cfg, out, bias, write_cards)
    for n in plan.notes:
        rep.note(n)
    index, summaries, records = [], {}, {}
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
                cfg, bias_model, split, out / "easy_hard" / f"{split}.parquet"
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
        s = summaries[m.name]
        fb = s.get("f_bias")
        if (
            m.name == first and s.get("delta") is not None
        ):  # against itself: 1, or undefined as for any model
            fb = None if math.isnan(f := f_bias(s["delta"], s["delta"])) else f
        row: dict[str, Any] = {
            "name": m.name,
            "source": m.source,
            "acc_id": s.get("acc_id"),
            "acc_ood": s.get("acc_ood"),
            "delta": s.get("delta"),
            "f_bias": fb,
            "id_split": s.get("id_split"),
        }
        if s.get("id_split"):
            df = pd.read_parquet(
                out / "models" / m.name / "predictions" / f"{s['id_split']}.parquet"
            )
            row |= {
                "ece_id": s["splits"][s["id_split"]]["ece"],
                "collapsed": bool(is_collapsed(df)),
            }
            if s["id_split"] in easy:
                e = df.merge(easy[s["id_split"]], on="id")
                row |= {
                    "easy_acc": float(e[e["easy"]]["correct"].mean()),
                    "hard_acc": float(e[~e["easy"]]["correct"].mean()),
                }
        if speed:
            rate = speed["examples_per_s"][m.name]
            row |= {"examples_per_s": rate, "speedup": rate / speed["examples_per_s"][first]}
        rows.append(row)
        if write_cards:
            sp = (
                {
                    "examples_per_s": row["examples_per_s"],
                    "speedup": row["speedup"],
                    "reference": first,
                }
                if speed
                else None
            )
            others = ", ".join(x.name for x in plan.models if x.name != m.name)
            note = (
                f"Audited by robust-compress {__version__} (`audit`, task {plan.task.name}) beside "
                f"{others or 'no other model'}; "
                f"the reference for F_bias and speed-up is {first}."
            )
            write_card(
                m.folder,
                build_card(
                    m.name,
                    s,
                    records[m.name],
                    _run_config(m.folder)
                    or {"task": cfg.task, "model": records[m.name].get("start_model")},
                    sp,
                    note,
                ),
            )
    result = {
        "task": plan.task.name,
        "reference": first,
        "bias_model": bias_model,
        "notes": plan.notes,
        "models": rows,
        "version": __version__,
    }
    write_json(out / "audit.json", result)
    return result
