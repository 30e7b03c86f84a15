"""The one artifact writer, and the checks every stage makes before it starts working.

An artifact is a folder written under a temporary name and renamed into place when complete:
model + tokenizer (safetensors), the resolved config, records (JSON/YAML), prediction tables and
a summary. `preflight` reads and validates everything a run will need (config, task, every
training and eval split, the model folders, the output location) before the first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import schemas
from ..config import RunConfig
from ..data.load import Split, load_eval_splits, load_train_split
from ..data.tasks import TaskSpec, load_task
from ..io import UserError, atomic_dir, claim_output, read_json, write_yaml
from ..models.families import family_of
from ..models.load import (
    check_head,
    check_max_length,
    check_model_dir,
    label_order,
    load_arch,
    resolve_model_dir,
    save_model,
)
from ..models.overlap import is_overlap_model
from ..train.extras import EXTRAS, REGISTRY
from .card import build_card, write_card
from .predict import save_tables


@dataclass
class Checked:
    """What preflight loaded: the task, the training split (None if not needed), every eval
    split."""

    task: TaskSpec
    train: Split | None
    evals: dict[str, Split]


def check_inputs(cfg: RunConfig, labels: list[str]) -> None:
    """The loss's input sources exist (a teacher folder, an uncertainty file, ...); a given model's
    classes can be matched to the task's."""
    for name in REGISTRY[cfg.loss.name].needs:
        src = getattr(cfg.inputs, EXTRAS[name].source)
        p = Path(src)
        if EXTRAS[name].source == "uncertainty":
            if not p.is_file():
                raise UserError(f"{p}: file not found (inputs.uncertainty)")
        elif not is_overlap_model(p):
            folder = resolve_model_dir(src)
            check_model_dir(folder)
            check_head(folder)  # its logits are what the student learns from
            label_order(folder, labels, cfg.label_map)
    load_reference(cfg.inputs.teacher)  # read after training (F_bias): a broken one found now


def preflight(cfg: RunConfig, overwrite: bool, needs_train: bool = True, method=None) -> Checked:
    """Everything that can fail before training, checked now: output location, task, data,
    models."""
    claim_output(cfg.output_dir, cfg.input_paths(), overwrite)
    task = load_task(cfg.task)
    args = cfg.data_args()
    evals = load_eval_splits(args, task)
    train = load_train_split(args, task) if needs_train else None
    folder = resolve_model_dir(cfg.model)
    check_model_dir(folder)
    config = load_arch(folder)
    family_of(config)
    check_max_length(config, cfg.max_length, str(folder))
    label_order(folder, task.labels, cfg.label_map)
    if method is not None:
        method.check(config)
    check_inputs(cfg, task.labels)
    return Checked(task, train, evals)


def load_reference(path: str | Path | None, required: bool = False) -> dict[str, Any] | None:
    """A teacher's summary.json (or the model folder holding one) for F_bias, read through its
    schema (a broken one: one line naming the file and the key); None if it has none, which is
    an error when the reference was asked for (`required`: `evaluate --reference`)."""
    if path is None:
        return None
    p = Path(path)
    p = p / "summary.json" if p.is_dir() else p
    if not p.is_file():
        if required:
            raise UserError(f"{p}: file not found (--reference)")
        return None
    data = read_json(p)
    schemas.parse(data, schemas.Summary, p)
    return data


def write_artifact(
    out: Path,
    *,
    model=None,
    tokenizer=None,
    cfg: RunConfig | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    files: dict[str, Any] | None = None,
    save=None,
) -> Path:
    """Write a complete artifact folder atomically. `files`: name -> content (JSON, YAML or, for
    `.parquet`, a DataFrame: by suffix), or a function of the folder being written (for what is
    measured on the saved weights). Files are written in order, after the weights, the config and
    the predictions, so a study's record (`stage.json`, last) exists only in a complete artifact.
    `save(folder)` writes weights another way than `save_pretrained` (int8)."""
    with atomic_dir(out, overwrite=True) as tmp:
        if model is not None:
            save_model(model, tokenizer, tmp)
        if save is not None:
            save(tmp)
        if cfg is not None:
            write_yaml(tmp / "run_config.yaml", cfg.model_dump(mode="json"))
        if tables is not None:
            save_tables(tmp / "predictions", tables)
        written = {}
        for name, content in (files or {}).items():
            written[name] = content = content(tmp) if callable(content) else content
            if name.endswith(".parquet"):
                content.to_parquet(tmp / name, index=False)
            elif name.endswith(".yaml"):
                write_yaml(tmp / name, content)
            else:
                schemas.write(tmp / name, content)  # validated by its schema where the file has one
        if (tmp / "config.json").is_file():  # a model folder: its card (results, recipe, version)
            record = written.get("compression.json") or {}
            note = (
                "A pruning snapshot, kept for per-sample uncertainty; not evaluated."
                if record.get("method") == "magnitude-snapshot"
                else None
            )
            write_card(
                tmp,
                build_card(
                    out.name,
                    written.get("summary.json"),
                    record,
                    cfg.model_dump(mode="json") if cfg is not None else None,
                    note=note,
                ),
            )
    return out


def bytes_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
