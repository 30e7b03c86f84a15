"""Model cards: every model folder the tool writes carries a README.md with Hugging Face model-card
metadata (`model-index`: accuracy on each ID and OOD set) and the recipe that made it, built with
huggingface_hub's `ModelCard` / `ModelCardData` / `EvalResult`, so the hub and `ModelCard.load`
read it as they read any card. `audit --write-card` rewrites it with an audit's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__
from ..data.tasks import TaskSpec, load_task
from ..io import UserError, atomic_write_text

CARD = "README.md"


def _task(name: str | None) -> TaskSpec | None:
    try:
        return load_task(name) if name else None
    except UserError:  # a task file that moved: the card names the task without its datasets
        return None


def _eval_results(
    summary: dict[str, Any], task_name: str, spec: TaskSpec | None
) -> list[EvalResult]:
    """One accuracy per ID and OOD set (cue copies are synthetic: in the text only)."""
    out = []
    for split, s in summary.get("splits", {}).items():
        if s.get("role") not in ("id", "ood"):
            continue
        hub = spec.splits[split].hub if spec is not None and split in spec.splits else None
        out.append(
            EvalResult(
                task_type="text-classification",
                task_name=f"{task_name} ({'in' if s['role'] == 'id' else 'out of'} distribution)",
                dataset_type=hub.path if hub else task_name,
                dataset_name=f"{task_name} {split}",
                dataset_config=hub.name if hub else None,
                dataset_split=hub.split if hub else split,
                metric_type="accuracy",
                metric_name="accuracy",
                metric_value=round(float(s["accuracy"]), 4),
            )
        )
    return out


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in d.items() if v is not None) or "defaults"


def _results_text(summary: dict[str, Any], speed: dict[str, Any] | None) -> list[str]:
    lines = [
        "## Results",
        "",
        "Accuracy in %, with its bootstrap 95 % confidence interval over the examples.",
        "",
        "| set | role | accuracy | 95 % CI | examples | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for split, s in summary.get("splits", {}).items():
        lo, hi = s.get("ci95", [float("nan")] * 2)
        lines.append(
            f"| {split} | {s.get('role')} | {100 * s['accuracy']:.1f} | [{100 * lo:.1f}, "
            f"{100 * hi:.1f}] | {s.get('n')} | {s.get('ece', float('nan')):.3f} |"
        )
        for key, cells in s.items():
            if key.startswith("by_") and key != "by_gold" and not key.endswith("_only"):
                lines += [
                    f"| {split} · {cell} | | {100 * acc:.1f} | | | |" for cell, acc in cells.items()
                ]
    lines.append("")
    if summary.get("delta") is not None:
        line = (
            f"Relative OOD drop Δ = (acc_ID − acc_OOD) / acc_ID = {summary['delta']:.3f} "
            f"({summary.get('id_split')} vs {', '.join(summary['delta_ood']['splits'])})"
        )
        if summary.get("f_bias") is not None:
            line += f"; F_bias = Δ / Δ_reference = {summary['f_bias']:.2f}"
        lines += [line + ".", ""]
    if speed:
        lines += [
            (
                f"Measured speed: {speed['examples_per_s']:.1f} examples/s, "
                f"{speed['speedup']:.2f}× {speed['reference']} (fp32, same machine, side by side)."
            ),
            "",
        ]
    return lines


def build_card(
    name: str,
    summary: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
    speed: dict[str, Any] | None = None,
    note: str | None = None,
) -> ModelCard:
    """The card of one model. summary: summary.json; record: compression.json; run: the resolved
    run config; speed: {examples_per_s, speedup, reference} when measured."""
    record, run = record or {}, run or {}
    task_name = str(run.get("task") or (summary or {}).get("task") or "the task")
    spec = _task(run.get("task"))
    task_label = spec.name if spec else Path(task_name).stem
    base = record.get("start_model") or run.get("model")
    method = record.get("method", "none")
    results = _eval_results(summary, task_label, spec) if summary else []
    data = ModelCardData(
        model_name=name,
        base_model=str(base) if base else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        metrics=["accuracy"] if results else None,
        tags=["robust-compress", task_label] + ([method] if method not in ("none", None) else []),
        eval_results=results or None,
    )
    loss = run.get("loss") or {}
    recipe = [
        "## How it was made",
        "",
        f"- tool: robust-compress {__version__}",
        f"- base model: {base or 'unknown'}",
        f"- compression: {method}"
        + (f" ({_fmt(record['settings'])})" if record.get("settings") else ""),
        f"- loss: {loss.get('name', record.get('loss') or 'unknown')}"
        + (f" ({_fmt({k: v for k, v in loss.items() if k != 'name'})})" if len(loss) > 1 else ""),
        f"- seeds: training {run.get('seed', 'unknown')}, data {run.get('data_seed', 'unknown')}",
    ]
    if run:
        keys = (
            "epochs",
            "max_steps",
            "lr",
            "batch_size",
            "train_limit",
            "max_length",
            "input_field",
        )
        recipe.append(f"- training: {_fmt({k: run.get(k) for k in keys})}")
    if record.get("parameters"):
        recipe.append(
            f"- parameters: {record['parameters']:,} ({record.get('nonzero_parameters', 0):,} "
            "non-zero)"
        )
    if record.get("scheme"):
        recipe.append(
            f"- int8 scheme: {record['scheme']} (load with `robust_compress.models.quantized."
            "load_for_inference`)"
        )
    text = [
        f"# {name}",
        "",
        f"A sequence classifier for {task_label} written by robust-compress {__version__}.",
    ]
    if run.get("input_field"):
        note = (note + " " if note else "") + (
            f"A bias-only model: it sees only {run['input_field']} of each pair "
            "(for easy/hard splits and debiasing losses)."
        )
    if note:
        text += ["", note]
    text += (
        [""]
        + (_results_text(summary, speed) if summary else ["Not evaluated.", ""])
        + recipe
        + [
            "",
            "## Use",
            "",
            "```python",
            "import robust_compress  # registers the pruned_<type> model types (no remote code)",
            "from transformers import AutoModelForSequenceClassification",
            'model = AutoModelForSequenceClassification.from_pretrained("<this folder>")',
            "```",
            "",
        ]
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(text))


def write_card(folder: Path, card: ModelCard) -> Path:
    """Write (or replace) the folder's README.md atomically."""
    path = Path(folder) / CARD
    atomic_write_text(path, str(card))
    return path
