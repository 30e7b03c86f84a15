"""Model cards: every model folder the tool writes carries a README.md with Hugging Face model-card
metadata (`model-index`: accuracy on each ID and OOD set) and the recipe that made it, built with
huggingface_hub's `ModelCard` / `ModelCardData` / `EvalResult`, so the hub and `ModelCard.load`
read it as they read any card. `audit --write-card` rewrites it with an audit's numbers.

A card the tool writes has the line `<!-- written by robust-compress V (sha256 H) ... -->` after its
metadata, H the digest of the rest of the file: a README.md that still matches it (or a card of an
earlier version, recognised by its sentences) is the tool's and is replaced; any other README.md
(the user's, or the tool's card once edited) is kept, and the card goes beside it as MODEL_CARD.md
(`card_path`; `audit` notes it and lists where each card went in audit.json's `cards`).
User strings (folder, task, set and group names) are escaped in the Markdown body (`md`); the YAML
metadata is written with `yaml.safe_dump`.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__
from ..data.tasks import TaskSpec, load_task
from ..io import UserError, atomic_write_text

CARD = "README.md"
SIDE_CARD = "MODEL_CARD.md"  # where the card goes when README.md is the user's
MARKER = re.compile(
    r"^<!-- written by robust-compress \S+ \(sha256 ([0-9a-f]{64})\)[^\n]*-->\n", re.M
)


def md(value: Any) -> str:
    """A user string as Markdown text or a table cell: `&`, `<`, `>` as entities (no HTML, no
    unclosed `<!--` hiding the rest of the card), `\\`, `|` and backticks escaped, one line."""
    s = html.escape(str(value), quote=False).replace("\\", "\\\\")
    return " ".join(s.replace("|", "\\|").replace("`", "\\`").splitlines())


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
    return (
        ", ".join(md(f"{k}={json.dumps(v)}") for k, v in d.items() if v is not None) or "defaults"
    )


def _results_text(
    summary: dict[str, Any], speed: dict[str, Any] | None, task_label: str
) -> list[str]:
    lines = [
        "## Results",
        "",
        f"Measured on {md(task_label)}: accuracy in %, with its bootstrap 95 % confidence "
        "interval over the examples.",
        "",
        "| set | role | accuracy | 95 % CI | examples | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for split, s in summary.get("splits", {}).items():
        lo, hi = s.get("ci95", [float("nan")] * 2)
        lines.append(
            f"| {md(split)} | {md(s.get('role'))} | {100 * s['accuracy']:.1f} | [{100 * lo:.1f}, "
            f"{100 * hi:.1f}] | {s.get('n')} | {s.get('ece', float('nan')):.3f} |"
        )
        for key, cells in s.items():
            if key.startswith("by_") and key != "by_gold" and not key.endswith("_only"):
                lines += [
                    f"| {md(split)} · {md(cell)} | | {100 * acc:.1f} | | | |"
                    for cell, acc in cells.items()
                ]
    lines.append("")
    if summary.get("delta") is not None:
        line = (
            f"Relative OOD drop Δ = (acc_ID − acc_OOD) / acc_ID = {summary['delta']:.3f} "
            f"({md(summary.get('id_split'))} vs "
            f"{', '.join(md(x) for x in summary['delta_ood']['splits'])})"
        )
        if summary.get("f_bias") is not None:
            line += f"; F_bias = Δ / Δ_reference = {summary['f_bias']:.2f}"
        lines += [line + ".", ""]
    if speed:
        lines += [
            (
                f"Measured speed: {speed['examples_per_s']:.1f} examples/s, "
                f"{speed['speedup']:.2f}× {md(speed['reference'])} (fp32, same machine, side by "
                "side)."
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
    task: TaskSpec | None = None,
) -> ModelCard:
    """The card of one model. summary: summary.json; record: compression.json; run: the resolved
    run config; speed: {examples_per_s, speedup, reference} when measured; task: the task the
    summary was measured on (an audit's), when it is not the run's own. `note` is Markdown: escape
    user strings in it with `md`."""
    record, run = record or {}, run or {}
    task_name = str(run.get("task") or (summary or {}).get("task") or "the task")
    trained = _task(run.get("task"))
    trained_label = trained.name if trained else Path(task_name).stem
    spec = task or trained  # the sets the numbers were measured on
    task_label = spec.name if spec else trained_label
    base = record.get("start_model") or run.get("model")
    method = record.get("method", "none")
    results = _eval_results(summary, task_label, spec) if summary else []
    data = ModelCardData(
        model_name=name,
        base_model=str(base) if base else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        metrics=["accuracy"] if results else None,
        tags=list(dict.fromkeys(["robust-compress", trained_label, task_label]))
        + ([method] if method not in ("none", None) else []),
        eval_results=results or None,
    )
    loss = run.get("loss") or {}
    recipe = [
        "## How it was made",
        "",
        f"- tool: robust-compress {__version__}",
        f"- base model: {md(base or 'unknown')}",
        f"- compression: {md(method)}"
        + (f" ({_fmt(record['settings'])})" if record.get("settings") else ""),
        f"- loss: {md(loss.get('name', record.get('loss') or 'unknown'))}"
        + (f" ({_fmt({k: v for k, v in loss.items() if k != 'name'})})" if len(loss) > 1 else ""),
        f"- seeds: training {md(run.get('seed', 'unknown'))}, "
        f"data {md(run.get('data_seed', 'unknown'))}",
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
            f"- int8 scheme: {md(record['scheme'])} (load with `robust_compress.models.quantized."
            "load_for_inference`)"
        )
    text = [
        f"# {md(name)}",
        "",
        f"A sequence classifier for {md(trained_label)} written by robust-compress {__version__}.",
    ]
    if run.get("input_field"):
        note = (note + " " if note else "") + (
            f"A bias-only model: it sees only {md(run['input_field'])} of each pair "
            "(for easy/hard splits and debiasing losses)."
        )
    if note:
        text += ["", note]
    text += (
        [""]
        + (_results_text(summary, speed, task_label) if summary else ["Not evaluated.", ""])
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
    return ModelCard(f"---\n{_yaml(data)}\n---\n\n" + "\n".join(text))


def _yaml(data: ModelCardData) -> str:
    return yaml.safe_dump(data.to_dict(), sort_keys=False, allow_unicode=True).strip()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_card(card: ModelCard) -> str:
    """The file's text: safe_dump'ed metadata, the marker line (the digest of all the rest), the
    body."""
    head = f"---\n{_yaml(card.data)}\n---\n"
    marker = (
        f"<!-- written by robust-compress {__version__} (sha256 {_sha(head + card.text)}): "
        f"replaced by its next card unless edited; an edited card is kept, the next goes to "
        f"{SIDE_CARD} -->\n"
    )
    return head + marker + card.text


def is_tool_card(path: Path) -> bool:
    """Whether `path` is a card this tool wrote and nobody changed since: its marker's digest
    matches the rest of the file; a card of an earlier version (no marker, so an edit cannot be
    told) by its own sentences."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    m = MARKER.search(text)
    if m is not None:
        return _sha(text[: m.start()] + text[m.end() :]) == m.group(1)
    return (
        text.startswith("---\n")
        and "\n- robust-compress\n" in text.split("\n---\n", 1)[0]
        and re.search(
            r"^A sequence classifier for .* written by robust-compress \S+\.$", text, re.M
        )
        is not None
        and all(f"\n{h}\n" in text for h in ("## How it was made", "## Use"))
    )


def card_path(folder: Path) -> Path:
    """Where the folder's card goes: README.md when there is none or it is the tool's; beside a
    README.md the user wrote (or edited), MODEL_CARD.md (when that is absent or the tool's). Both
    the user's: a UserError (checked before any work)."""
    folder = Path(folder)
    for path in (folder / CARD, folder / SIDE_CARD):
        if not (path.exists() or path.is_symlink()) or is_tool_card(path):
            return path
    raise UserError(
        f"{folder}: {CARD} and {SIDE_CARD} are both yours (not written by robust-compress, or "
        "edited): the card would replace one; move one aside"
    )


def write_card(folder: Path, card: ModelCard) -> Path:
    """Write the card atomically where `card_path` says (README.md unless that is the user's);
    returns the path written."""
    path = card_path(folder)
    atomic_write_text(path, render_card(card))
    return path
