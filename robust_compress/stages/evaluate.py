"""`evaluate MODEL`: per-example predictions and a summary for any saved model (a folder or a hub
id), as it is meant to run (an int8 artifact is scored as int8), its classes matched to the
task's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data.load import Split, load_eval_splits
from ..data.tasks import TaskSpec, load_task
from ..io import UserError, claim_output, read_yaml
from ..metrics import summarize
from ..models.families import family_of
from ..models.labels import eval_labels
from ..models.load import (
    check_head,
    check_model_dir,
    load_arch,
    load_tokenizer,
    model_labels,
    resolve_model_dir,
    unapplied_map,
)
from ..models.quantized import load_for_inference
from .artifact import load_reference, write_artifact
from .predict import predict_tables
from .progress import Reporter


def default_output(model: str | Path) -> Path:
    """Beside a model folder, never inside it (evaluating must not change the folder it reads);
    runs/eval/<org>--<name> for a hub id (the cache is not ours)."""
    p = Path(model).expanduser()
    return (
        p.with_name(p.name + "-eval")
        if p.is_dir()
        else Path("runs") / "eval" / str(model).replace("/", "--")
    )


# what `evaluate MODEL` takes from the model's run_config.yaml (evaluated as trained); the
# task-bound ones only while the task is the one it was trained on
INHERITED = ("task", "max_length", "data_dir", "source", "input_field", "cue", "eval_sets")
TASK_BOUND = ("task", "cue", "eval_sets")  # split names, one marker per label


def _same_task(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return load_task(a) == load_task(b)
    except UserError:  # one does not load (here): not known to be the same
        return False


def saved_settings(model_dir: str | Path, task: str | None = None) -> dict[str, Any]:
    """The settings `evaluate MODEL` inherits from MODEL's run_config.yaml (none for a hub id or a
    folder without one): task, lengths, data and eval sets. With `task` (--task) naming another
    task than the saved one, nothing task-bound is inherited (its eval sets are another task's
    split names, its cue markers another task's labels)."""
    saved = Path(model_dir) / "run_config.yaml"
    if not saved.is_file():
        return {}
    raw = read_yaml(saved)
    base = {k: v for k, v in raw.items() if k in INHERITED}
    if task is not None and not _same_task(str(task), str(raw.get("task"))):
        base = {k: v for k, v in base.items() if k not in TASK_BOUND}
    return base


def scoring_labels(
    folder: Path, task: TaskSpec, splits: dict[str, Split], cfg: RunConfig
) -> list[str]:
    """The labels a saved classifier is scored over (the task's, or a 2-way model's on 2-way sets);
    one line naming `label_map` when its classes cannot be matched."""
    check_model_dir(folder)
    have = model_labels(folder)
    if not have:
        return task.labels
    return eval_labels(
        have,
        task.labels,
        {n: s.labels for n, s in splits.items()},
        unapplied_map(folder, cfg.label_map),
        str(folder),
    )


NEW_HEAD = "; fine-tune it first, or pass --new-head to score a new (seeded) head on purpose"


def check_classifier(
    folder: Path, source: str | Path, hint: str = NEW_HEAD, new_head: bool = False
) -> None:
    """The model checks `evaluate` and `audit` share, before any data is read: a saved model whose
    config transformers loads without running the folder's code, of a supported family, and a
    fine-tuned classifier that holds its head's tensors (else it would be scored by a random
    head), unless `new_head` asks for a new head on purpose. `hint`: what to do instead."""
    check_model_dir(folder)
    config = load_arch(folder)
    family_of(config)
    if new_head:
        return
    if not model_labels(folder):
        raise UserError(
            f"{source}: not a fine-tuned classifier (a bare encoder: its config.json names no "
            f"*ForSequenceClassification architecture), so it would be scored by a random head"
            f"{hint}"
        )
    check_head(folder, config, hint)


def evaluate_folder(
    model_dir: str | Path,
    cfg: RunConfig,
    output: Path | None = None,
    reference: str | Path | None = None,
    progress: Reporter | None = None,
    overwrite: bool = False,
    new_head: bool = False,
    files: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a saved model (a folder or a hub id); write predictions/, summary.json (and `files`)
    to `output` (default: `default_output`). An existing non-empty `output` is replaced only with
    `overwrite`, and never the model's own folder. A folder without a classifier head is refused
    unless `new_head` (it would be scored by a random head)."""
    rep = progress or Reporter()
    out = Path(output) if output else default_output(model_dir)
    folder = resolve_model_dir(str(model_dir))
    read = [(folder, "model folder"), (reference, "reference summary")] + cfg.input_paths()
    claim_output(out, read, overwrite)
    check_classifier(folder, model_dir, new_head=new_head)
    ref = load_reference(reference, required=True)
    task = load_task(cfg.task)
    splits = load_eval_splits(cfg.data_args(), task)
    labels = scoring_labels(folder, task, splits, cfg)
    model = load_for_inference(folder, labels, cfg.label_map, new_head=new_head)
    tokenizer = load_tokenizer(str(folder), model)
    rep.task("evaluate", sum(len(s) for s in splits.values()), "examples")
    tables, speed = predict_tables(model, tokenizer, splits, cfg, progress=rep.update)
    summary = summarize(
        tables,
        {n: s.role for n, s in splits.items()},
        {n: s.group_by for n, s in splits.items()},
        ref,
        rule=task.delta_rule(list(splits)),
    )
    summary["eval_examples_per_s"] = {k: round(v, 1) for k, v in speed.items()}
    write_artifact(
        out,
        tables=tables,
        files={
            "summary.json": summary,
            "eval_config.yaml": cfg.model_dump(mode="json") | {"model": str(model_dir)},
        }
        | (files or {}),
    )
    return summary
