"""Load a task's splits from a local data directory or the Hugging Face hub into one shape.

Every example becomes `{"id", "text_a", "text_b", "label", **meta}` with `label` an index into
the split's label names. Local files are read by our own reader so that an error can name the
file and line; hub splits come through `datasets.load_dataset`. Both then go through the same
`normalize`, which is where labels and text are validated.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import UserError, read_jsonl
from .tasks import SplitSpec, TaskSpec

DATA_DIR_ENV = "ROBUST_COMPRESS_DATA"


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """CLI flag or config value, else $ROBUST_COMPRESS_DATA, else ../shared/data if present."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    default = Path("../shared/data")
    return default if default.is_dir() else None


@dataclass
class Split:
    task: str
    name: str
    role: str
    labels: list[str]  # label names of this split's gold labels
    examples: list[dict[str, Any]]
    origin: str  # file path or hub id, for messages and provenance
    collapse: dict[str, str] | None = None
    group_by: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)


def _read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix in {".csv", ".tsv"}:
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            return [dict(row, _line=i) for i, row in enumerate(reader, start=2)]
    raise UserError(f"{path}: unsupported file type (use .jsonl, .csv or .tsv)")


def _load_hub(spec: SplitSpec) -> tuple[list[dict[str, Any]], str]:
    import datasets

    hub = spec.hub
    assert hub is not None
    where = f"hub:{hub.path}" + (f"/{hub.name}" if hub.name else "") + f"[{hub.split}]"
    try:
        ds = datasets.load_dataset(hub.path, hub.name, split=hub.split, data_files=hub.data_files)
    except Exception as e:  # noqa: BLE001 -- network, missing config, ...: one clear line for the user
        raise UserError(f"{where}: could not load from the Hugging Face hub: {type(e).__name__}: {e}") from None
    rows = [dict(r, _line=i + 1) for i, r in enumerate(ds)]
    return rows, where


def normalize(rows: list[dict[str, Any]], task: TaskSpec, split_name: str, where: str) -> Split:
    spec = task.splits[split_name]
    gold_names = task.split_labels(split_name)  # a collapsed split (HANS) has its own, smaller label space
    col_a, col_b = spec.text_a or task.text_a, spec.text_b or task.text_b
    out = []
    for i, row in enumerate(rows):
        line = row.get("_line", i + 1)
        loc = f"{where}:{line}"
        for col in (col_a, col_b, "label"):
            if col not in row:
                raise UserError(f"{loc}: missing field {col!r} (has {sorted(k for k in row if k != '_line')})")
        raw = row["label"]
        if isinstance(raw, bool):
            raise UserError(f"{loc}: label {raw!r} is not a label name or index")
        if isinstance(raw, str) and raw in gold_names:
            label = gold_names.index(raw)
        elif isinstance(raw, int) or (isinstance(raw, str) and raw.lstrip("-").isdigit()):
            label = int(raw)
            if label == -1:  # unlabeled (GLUE test): not usable for training or accuracy
                continue
            if not 0 <= label < len(gold_names):
                raise UserError(f"{loc}: label index {label} out of range for labels {gold_names}")
        else:
            raise UserError(f"{loc}: unknown label {raw!r}; expected one of {gold_names}")
        a, b = row[col_a], row[col_b]
        if not isinstance(a, str) or not isinstance(b, str):
            raise UserError(f"{loc}: fields {col_a!r} and {col_b!r} must be strings")
        ex_id = str(row[spec.id_column]) if spec.id_column and spec.id_column in row else str(line)
        ex = {"id": ex_id, "text_a": a, "text_b": b, "label": label}
        for meta in spec.group_by + spec.keep:
            ex[meta] = row.get(meta)
        out.append(ex)
    if not out:
        raise UserError(f"{where}: split {split_name!r} of task {task.name!r} is empty")
    ids = [e["id"] for e in out]
    if len(set(ids)) != len(ids):  # ids key caches (teacher logits, uncertainty): must be unique
        for e, line in zip(out, (r.get("_line", i + 1) for i, r in enumerate(rows))):
            e["id"] = f"{e['id']}@{line}"
    return Split(task=task.name, name=split_name, role=spec.role, labels=gold_names, examples=out,
                 origin=where, collapse=spec.collapse, group_by=list(spec.group_by))


def load_split(task: TaskSpec, split_name: str, data_dir: str | Path | None = None, source: str = "local",
               limit: int | None = None, seed: int = 0) -> Split:
    """Load one split. `limit` keeps a seeded random subset (in file order) of that many examples."""
    if split_name not in task.splits:
        raise UserError(f"task {task.name!r} has no split {split_name!r}; it has {list(task.splits)}")
    spec = task.splits[split_name]
    if source == "local":
        root = resolve_data_dir(data_dir)
        if root is None:
            raise UserError(f"no data directory: pass --data-dir or set ${DATA_DIR_ENV}")
        found = [root / p for p in spec.local if (root / p).is_file()]
        if not found:
            tried = ", ".join(str(root / p) for p in spec.local) or "(no local path declared)"
            hint = " (try --source hub when online)" if spec.hub else ""
            raise UserError(f"task {task.name!r} split {split_name!r}: file not found; tried {tried}{hint}")
        rows, where = _read_table(found[0]), str(found[0])
    elif source == "hub":
        if spec.hub is None:
            raise UserError(f"task {task.name!r} split {split_name!r} has no hub source; use local files")
        rows, where = _load_hub(spec)
    else:
        raise UserError(f"unknown data source {source!r}: use 'local' or 'hub'")
    split = normalize(rows, task, split_name, where)
    if limit is not None and limit < len(split.examples):
        keep = sorted(random.Random(seed).sample(range(len(split.examples)), limit))
        split.examples = [split.examples[i] for i in keep]
    return split


def available_eval_splits(task: TaskSpec, data_dir: str | Path | None, source: str) -> list[str]:
    """Eval splits that can be loaded from this source (the offline copy lacks some)."""
    if source == "hub":
        return [n for n in task.eval_splits() if task.splits[n].hub is not None]
    root = resolve_data_dir(data_dir)
    return [n for n in task.eval_splits()
            if root is not None and any((root / p).is_file() for p in task.splits[n].local)]
