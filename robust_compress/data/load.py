"""Load a task's splits from a local data directory or the Hugging Face hub into one shape.

Every example becomes `{"id", "text_a", "text_b", "label", **meta}` with `label` an index into
the split's label names. Local files are read by our own reader so that an error can name the
file and line; hub splits come through `datasets.load_dataset`. Both then go through the same
`normalize`, which is where labels, text and ids are validated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..io import MAX_COUNT, MAX_SEED, UserError, log, read_jsonl, read_text
from .cue import CueConfig, add_cue, cue_copies, cue_markers
from .tasks import SplitSpec, TaskSpec, load_task

DATA_DIR_ENV = "ROBUST_COMPRESS_DATA"


class DataArgs(BaseModel):
    """Which examples a run sees and how they are tokenized."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    task: str = Field("mnli", description="built-in task name (mnli, qqp, fever) or task YAML file")
    data_dir: str | None = Field(
        None, description="local data folder; default $ROBUST_COMPRESS_DATA or ../shared/data"
    )
    source: Literal["local", "hub"] = Field(
        "local",
        description="read splits from the data folder or the HF hub "
        "(sets with no hub source are read from the data folder)",
    )
    train_limit: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="use a seeded subset of the training split"
    )
    eval_limit: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="evaluate on seeded subsets of this size"
    )
    eval_sets: list[str] | None = Field(
        None, description="eval splits; default: every one the source has"
    )
    data_seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="which train/eval subsets and cue markers: fixed across training seeds",
    )
    max_length: int = Field(
        128, ge=8, le=1_000_000, description="tokens per example (pairs truncated longest-first)"
    )
    input_field: Literal["text_a", "text_b"] | None = Field(
        None, description="partial input (bias-only models)"
    )
    cue: CueConfig | None = Field(
        None, description="controlled synthetic shortcut in the training data"
    )
    cv_fold: int | None = Field(
        None,
        ge=0,
        description="train without this fold of the training split "
        "(cross-fitting: the fold is scored by a model that never saw it)",
    )
    cv_folds: int = Field(
        5, ge=2, le=100, description="how many folds the training split is cut into"
    )
    train_subset: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="train on a seeded subset of this many of the training examples (those left "
        "after cv_fold): a shallow bias-only model; unlike train_limit, the split stays whole",
    )


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

    def digest(self) -> str:
        """Content hash of the examples (ids, texts, labels, meta): what a cache key needs of a
        split."""
        h = hashlib.sha256(json.dumps([self.task, self.name, self.labels, self.collapse]).encode())
        for e in self.examples:
            h.update(json.dumps(e, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]


def _read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix in {".csv", ".tsv"}:
        try:
            with path.open(encoding="utf-8-sig", newline="") as f:  # the csv module's own line ends
                return _read_csv(path, f)
        except UnicodeDecodeError:
            read_text(path)  # raises the one line naming the file, line and byte
            raise
    raise UserError(f"{path}: unsupported file type (use .jsonl, .csv or .tsv)")


def _read_csv(path: Path, f) -> list[dict[str, Any]]:
    """Rows of a CSV/TSV file, read as CSV and not as lines: a quoted field keeps its newlines, and
    U+2028 or a form feed is text. `_line` is the physical line where the record starts. A row
    with more or fewer fields than the header is refused (DictReader would pad it with None), and
    so is a quote left open (strict: it would swallow the rest of the file into one field)."""
    reader = csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",", strict=True)
    header, rows = None, []
    try:
        while True:
            start = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                return rows
            if not fields:  # a blank line
                continue
            if header is None:
                dup = next((c for i, c in enumerate(fields) if c in fields[:i]), None)
                if dup is not None:
                    raise UserError(f"{path}:{start}: duplicate column {dup!r} in the header")
                header = fields
            elif len(fields) != len(header):
                raise UserError(
                    f"{path}:{start}: row has {len(fields)} fields, the header has {len(header)}"
                )
            else:
                rows.append(dict(zip(header, fields, strict=True), _line=start))
    except csv.Error as e:
        if str(e) == "unexpected end of data":  # strict: the file ended inside a quoted field
            raise UserError(
                f"{path}:{start}: unclosed quote (the record starting on this line has a quote "
                "that is never closed: it runs to the end of the file)"
            ) from None
        kind = path.suffix[1:].upper()
        raise UserError(f"{path}:{reader.line_num}: malformed {kind} ({e})") from None


def _load_hub(spec: SplitSpec) -> tuple[list[dict[str, Any]], str]:
    import datasets

    hub = spec.hub
    assert hub is not None
    where = f"hub:{hub.path}" + (f"/{hub.name}" if hub.name else "") + f"[{hub.split}]"
    try:
        ds = datasets.load_dataset(hub.path, hub.name, split=hub.split, data_files=hub.data_files)
    except Exception as e:  # noqa: BLE001 -- network, missing config, ...: one clear line for the user
        raise UserError(
            f"{where}: could not load from the Hugging Face hub: {type(e).__name__}: {e}"
        ) from None
    rows = [dict(r, _line=i + 1) for i, r in enumerate(ds)]
    return rows, where


# a label index given as text: ASCII digits only ("²".isdigit() is True, int("²") fails)
_INDEX = re.compile(r"-?[0-9]+")


def _check_fields(row: dict[str, Any], cols: tuple[str, ...], loc: str) -> None:
    """Name a missing field at its line, before any use of it would fail with a bare KeyError."""
    for col in cols:
        if col not in row:
            raise UserError(
                f"{loc}: missing field {col!r} (has {sorted(k for k in row if k != '_line')})"
            )


def _row_label(raw: Any, gold_names: list[str], loc: str) -> int | None:
    """A row's label as an index into `gold_names` (given as a name or an index), or None when
    unlabeled (-1): files name or number their labels either way, and a bad one must stop here."""
    if isinstance(raw, bool):
        raise UserError(f"{loc}: label {raw!r} is not a label name or index")
    if isinstance(raw, str) and raw in gold_names:
        return gold_names.index(raw)
    if isinstance(raw, int) or (isinstance(raw, str) and _INDEX.fullmatch(raw)):
        label = int(raw)
        if label == -1:  # unlabeled (GLUE test convention)
            return None
        if not 0 <= label < len(gold_names):
            raise UserError(f"{loc}: label index {label} out of range for labels {gold_names}")
        return label
    raise UserError(f"{loc}: unknown label {raw!r}; expected one of {gold_names}")


def _row_id(row: dict[str, Any], spec: SplitSpec, line: int, loc: str, seen: dict[str, int]) -> str:
    """A row's id (its id column, else its line), recorded in `seen`: ids key every per-example
    cache and table, so they must be unique."""
    if not spec.id_column:
        return str(line)
    if spec.id_column not in row:
        raise UserError(f"{loc}: missing id column {spec.id_column!r}")
    ex_id = str(row[spec.id_column])
    if ex_id in seen:
        raise UserError(
            f"{loc}: duplicate id {ex_id!r} in column {spec.id_column!r} "
            f"(first at line {seen[ex_id]})"
        )
    seen[ex_id] = line
    return ex_id


def _check_groups(row: dict[str, Any], spec: SplitSpec, split_name: str, loc: str) -> None:
    """A row without its group_by value would silently drop out of the breakdown: refuse it."""
    for meta in spec.group_by:
        if row.get(meta) is None:
            what = "missing field" if meta not in row else "null field"
            raise UserError(f"{loc}: {what} {meta!r} (a group_by column of split {split_name!r})")


def normalize(rows: list[dict[str, Any]], task: TaskSpec, split_name: str, where: str) -> Split:
    spec = task.splits[split_name]
    # a collapsed split (HANS) has its own, smaller label space
    gold_names = task.split_labels(split_name)
    col_a, col_b = spec.text_a or task.text_a, spec.text_b or task.text_b
    out, unlabeled, seen = [], 0, {}
    for i, row in enumerate(rows):
        line = row.get("_line", i + 1)
        loc = f"{where}:{line}"
        _check_fields(row, (col_a, col_b, "label"), loc)
        label = _row_label(row["label"], gold_names, loc)
        if label is None:  # unlabeled (GLUE test convention): counted and reported below
            unlabeled += 1
            continue
        a, b = row[col_a], row[col_b]
        if not isinstance(a, str) or not isinstance(b, str):
            raise UserError(f"{loc}: fields {col_a!r} and {col_b!r} must be strings")
        ex = {"id": _row_id(row, spec, line, loc, seen), "text_a": a, "text_b": b, "label": label}
        _check_groups(row, spec, split_name, loc)
        for meta in spec.group_by + spec.keep:
            ex[meta] = row.get(meta)
        out.append(ex)
    if unlabeled:
        log.warning(f"{where}: skipped {unlabeled} of {len(rows)} rows with label -1 (unlabeled)")
    if not out:
        raise UserError(f"{where}: split {split_name!r} of task {task.name!r} is empty")
    return Split(
        task=task.name,
        name=split_name,
        role=spec.role,
        labels=gold_names,
        examples=out,
        origin=where,
        collapse=spec.collapse,
        group_by=list(spec.group_by),
    )


def _candidates(spec: SplitSpec, data_dir: str | Path | None) -> list[Path]:
    """A split's local paths: absolute ones as they are, the others under the data directory."""
    root = resolve_data_dir(data_dir)
    return [
        Path(p) if Path(p).is_absolute() else root / p
        for p in spec.local
        if Path(p).is_absolute() or root is not None
    ]


def split_file(task: TaskSpec, split_name: str, data_dir: str | Path | None) -> Path:
    """The local file a split reads (the first of its declared paths that exists)."""
    spec = task.splits[split_name]
    paths = _candidates(spec, data_dir)
    if not paths:
        raise UserError(f"no data directory: pass --data-dir or set ${DATA_DIR_ENV}")
    found = [p for p in paths if p.is_file()]
    if not found:
        tried = ", ".join(str(p) for p in paths) or "(no local path declared)"
        hint = " (try --source hub when online)" if spec.hub else ""
        raise UserError(
            f"task {task.name!r} split {split_name!r}: file not found; tried {tried}{hint}"
        )
    return found[0]


_WORDS = re.compile(r"\w+")


def pair_key(a: str, b: str) -> tuple[str, str]:
    """An unordered pair of normalized texts (lowercase words): the same pair however written or
    ordered."""
    na, nb = " ".join(_WORDS.findall(a.lower())), " ".join(_WORDS.findall(b.lower()))
    return (na, nb) if na <= nb else (nb, na)


def _exclude_pairs(split: Split, task: TaskSpec, data_dir, source: str) -> None:
    """Drop the examples whose pair also occurs in the splits named by `exclude_pairs_in`."""
    names = task.splits[split.name].exclude_pairs_in
    seen = set()
    for other in names:
        seen |= {
            pair_key(e["text_a"], e["text_b"])
            for e in load_split(task, other, data_dir, source).examples
        }
    before = len(split.examples)
    split.examples = [e for e in split.examples if pair_key(e["text_a"], e["text_b"]) not in seen]
    log.info(
        f"{split.origin}: dropped {before - len(split.examples)} of {before} pairs that also occur "
        f"in {', '.join(names)}"
    )
    if not split.examples:
        raise UserError(f"{split.origin}: every pair also occurs in {names}")


def load_split(
    task: TaskSpec,
    split_name: str,
    data_dir: str | Path | None = None,
    source: str = "local",
    limit: int | None = None,
    seed: int = 0,
) -> Split:
    """Load one split. `limit` keeps a seeded random subset (in file order) of that many examples;
    subsets of one seed are nested (the first `limit` of one seeded permutation), so a smaller
    limit's examples are always among a larger one's."""
    if split_name not in task.splits:
        raise UserError(
            f"task {task.name!r} has no split {split_name!r}; it has {list(task.splits)}"
        )
    spec = task.splits[split_name]
    if source == "local":
        path = split_file(task, split_name, data_dir)
        rows, where = _read_table(path), str(path)
    elif source == "hub":
        if (
            spec.hub is None
        ):  # a set that exists only as files (PAWS-QQP, FEVER-Symmetric): read them
            path = split_file(task, split_name, data_dir)
            rows, where = _read_table(path), str(path)
        else:
            rows, where = _load_hub(spec)
    else:
        raise UserError(f"unknown data source {source!r}: use 'local' or 'hub'")
    split = normalize(rows, task, split_name, where)
    if spec.exclude_pairs_in:
        _exclude_pairs(split, task, data_dir, source)
    if limit is not None and limit < len(split.examples):
        order = list(range(len(split.examples)))
        random.Random(seed).shuffle(order)
        split.examples = [split.examples[i] for i in sorted(order[:limit])]
    return split


def available_eval_splits(task: TaskSpec, data_dir: str | Path | None, source: str) -> list[str]:
    """Eval splits that can be loaded from this source (the offline copy lacks some)."""
    local = {
        n
        for n in task.eval_splits()
        if any(p.is_file() for p in _candidates(task.splits[n], data_dir))
    }
    if source == "hub":  # the hub's splits, and the file-only sets the data folder has
        return [n for n in task.eval_splits() if task.splits[n].hub is not None or n in local]
    return [n for n in task.eval_splits() if n in local]


_WARNED: set[str] = set()  # say each missing-split warning once per process, not once per stage


def _missing_line(task: TaskSpec, names: list[str], data_dir, source: str) -> str:
    """`'dev' (tried /data/qqp/dev.jsonl; on the hub with --source hub), ...` for these splits."""
    parts = []
    for n in names:
        spec = task.splits[n]
        tried = ", ".join(str(p) for p in _candidates(spec, data_dir)) or "no data directory"
        on_hub = spec.hub is not None and source == "local"
        hint = "; on the hub with --source hub" if on_hub else ""
        parts.append(f"{n!r} (tried {tried}{hint})")
    return ", ".join(parts)


def eval_split_names(args: DataArgs, task: TaskSpec | None = None) -> list[str]:
    """The configured eval splits, else every one the source has. A declared split that is not
    there is one warning line (a study must not silently evaluate less), and none of the task's ID
    splits at all is an error: Delta and F_bias compare against ID accuracy."""
    task = task or load_task(args.task)
    names = args.eval_sets or available_eval_splits(task, args.data_dir, args.source)
    unknown = [n for n in names if n not in task.splits or task.splits[n].role == "train"]
    if unknown:
        raise UserError(
            f"unknown eval set(s) {unknown} for task {task.name!r}; have {task.eval_splits()}"
        )
    if not names:
        raise UserError(
            f"task {task.name!r}: no eval split is available from source {args.source!r}"
        )
    if not args.eval_sets:
        missing = [n for n in task.eval_splits() if n not in names]
        ids = [n for n in task.eval_splits() if task.splits[n].role == "id"]
        if ids and not set(ids) & set(names):
            raise UserError(
                f"task {task.name!r}: no ID eval split found: "
                f"{_missing_line(task, ids, args.data_dir, args.source)}; "
                f"Delta and F_bias need one (to evaluate only {names}, set eval_sets)"
            )
        msg = (
            f"task {task.name!r}: eval split(s) not found: "
            f"{_missing_line(task, missing, args.data_dir, args.source)}; evaluating {names}"
        )
        if missing and msg not in _WARNED:
            _WARNED.add(msg)
            log.warning(msg)
    return names


def load_train_split(args: DataArgs, task: TaskSpec | None = None) -> Split:
    """The training split as configured: seeded subset, synthetic cue if asked."""
    task = task or load_task(args.task)
    split = load_split(
        task,
        task.train_split,
        args.data_dir,
        args.source,
        limit=args.train_limit,
        seed=args.data_seed,
    )
    if args.cue is not None:
        split.examples = add_cue(
            split.examples,
            cue_markers(args.cue, task.labels),
            args.cue.rho,
            args.data_seed,
            args.cue.per_example,
        )
    if args.cv_fold is not None:
        if args.cv_fold >= args.cv_folds:
            raise UserError(f"cv_fold {args.cv_fold} must be below cv_folds {args.cv_folds}")
        fold = folds_of(split.examples, args.cv_folds, args.data_seed)
        split.examples = [e for e, f in zip(split.examples, fold, strict=True) if f != args.cv_fold]
    if args.train_subset is not None:
        split.examples = seeded_subset(split.examples, args.train_subset, args.data_seed)
    return split


def seeded_subset(examples: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """`n` of the examples (all when fewer): the first `n` of a seeded permutation, in their order;
    the same examples and seed give the same subset in every process, a smaller one nested in it."""
    if n >= len(examples):
        return list(examples)
    order = list(range(len(examples)))
    random.Random(f"subset:{seed}").shuffle(order)
    return [examples[i] for i in sorted(order[:n])]


def text_key(e: dict[str, Any]) -> str:
    """What a per-example probability was computed from: valid only for this text and label."""
    return hashlib.sha256(json.dumps([e["text_a"], e["text_b"], e["label"]]).encode()).hexdigest()[
        :16
    ]


def folds_of(examples: list[dict[str, Any]], k: int, seed: int) -> list[int]:
    """The cross-fitting fold of each example: a seeded permutation dealt round-robin into k folds
    of (almost) equal size; the same examples and seed give the same folds in every process."""
    order = list(range(len(examples)))
    random.Random(f"folds:{seed}:{k}").shuffle(order)
    fold = [0] * len(examples)
    for rank, i in enumerate(order):
        fold[i] = rank % k
    return fold


def load_eval_splits(args: DataArgs, task: TaskSpec | None = None) -> dict[str, Split]:
    """Every configured eval split, read and validated (before any training), plus cue test
    copies."""
    task = task or load_task(args.task)
    out: dict[str, Split] = {}
    for name in eval_split_names(args, task):
        split = load_split(
            task, name, args.data_dir, args.source, limit=args.eval_limit, seed=args.data_seed
        )
        out[name] = split
        if args.cue is not None and split.role == "id":  # controlled-shortcut test sets
            copies = cue_copies(split.examples, cue_markers(args.cue, task.labels), args.data_seed)
            for kind, examples in zip(("cue_aligned", "cue_conflicting"), copies, strict=True):
                out[f"{name}+{kind}"] = Split(
                    task=split.task,
                    name=f"{name}+{kind}",
                    role="cue",
                    labels=split.labels,
                    examples=examples,
                    origin=f"{split.origin} (+cue)",
                    collapse=split.collapse,
                    group_by=split.group_by,
                )
    return out
