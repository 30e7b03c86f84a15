"""Task specifications: which files or hub splits make a task, and how their labels relate.

A task is data, not code: the built-in tasks below are plain `TaskSpec` values, and a user's
own sentence-pair task is the same structure read from a YAML file (`--task my_task.yaml`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..io import UserError, read_yaml, validation_line


class HubSource(BaseModel):
    """Arguments of `datasets.load_dataset(path, name, split=..., data_files=...)`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    path: str
    name: str | None = None
    split: str
    data_files: str | list[str] | dict[str, str | list[str]] | None = None


class SplitSpec(BaseModel):
    """One split: where it lives, how its columns and labels map onto the task."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    role: Literal["train", "id", "ood"]
    local: list[str] = Field(
        default_factory=list, description="paths under the data dir; first that exists wins"
    )
    hub: HubSource | None = None
    text_a: str | None = None  # column names; default: the task's
    text_b: str | None = None
    id_column: str | None = None  # default: line number / row index
    labels: list[str] | None = None  # this split's label names, when they differ from the task's
    collapse: dict[str, str] | None = None  # task label -> split label (probabilities are summed)
    group_by: list[str] = Field(default_factory=list)  # meta columns to break accuracy down by
    keep: list[str] = Field(default_factory=list)  # extra meta columns carried to prediction tables
    in_delta: bool = (
        True  # an OOD split that counts towards Delta / F_bias (else: reported beside it)
    )
    exclude_pairs_in: list[str] = Field(
        default_factory=list
    )  # drop pairs also in these splits (either order)

    @model_validator(mode="after")
    def _has_source(self) -> SplitSpec:
        if not self.local and self.hub is None:
            raise ValueError("a split needs `local` paths or a `hub` source")
        return self


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    text_a: str
    text_b: str
    labels: list[str]
    splits: dict[str, SplitSpec]
    alpha: float = Field(0.5, ge=0, le=1, description="RMC difficulty floor for this task")
    bias_field: Literal["text_a", "text_b"] = "text_b"  # the partial input a bias-only model sees
    ood_combine: Literal["pooled", "mean"] = (
        "pooled"  # OOD accuracy for Delta: pooled examples or mean of sets
    )

    @field_validator("splits")
    @classmethod
    def _split_names(cls, v: dict[str, SplitSpec]) -> dict[str, SplitSpec]:
        """A split's name names its files (predictions/<split>.parquet, easy_hard/, caches)."""
        for name in v:
            if not re.fullmatch(r"\w[\w.+-]*", name) or len(name) > 100:
                raise ValueError(
                    f"{name!r} is not a safe file name (a split's name names its files, e.g. "
                    "predictions/<split>.parquet): use letters, digits, '_', '-', '+' and '.', "
                    "starting with a letter, digit or '_'"
                )
        return v

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if len(set(self.labels)) != len(self.labels) or len(self.labels) < 2:
            raise ValueError("labels must be at least two distinct names")
        trains = [n for n, s in self.splits.items() if s.role == "train"]
        if len(trains) != 1:
            raise ValueError(f"exactly one split must have role 'train', found {trains}")
        for name, s in self.splits.items():
            unknown = [x for x in s.exclude_pairs_in if x not in self.splits]
            if unknown:
                raise ValueError(f"split {name}: exclude_pairs_in names unknown splits {unknown}")
            if s.collapse is not None:
                if s.labels is None:
                    raise ValueError(f"split {name}: `collapse` needs the split's own `labels`")
                missing = set(self.labels) - set(s.collapse)
                bad = set(s.collapse.values()) - set(s.labels)
                if missing or bad:
                    raise ValueError(
                        f"split {name}: collapse must map every task label {self.labels} "
                        f"to one of {s.labels}"
                    )
            elif s.labels is not None and not set(s.labels) <= set(self.labels):
                raise ValueError(
                    f"split {name}: labels {s.labels} are not task labels and no `collapse` "
                    "is given"
                )
        return self

    @property
    def train_split(self) -> str:
        return next(n for n, s in self.splits.items() if s.role == "train")

    def eval_splits(self) -> list[str]:
        return [n for n, s in self.splits.items() if s.role != "train"]

    def delta_rule(self, splits: list[str]) -> dict:
        """Which of these splits make the OOD accuracy of Delta / F_bias, and how they combine."""
        return {
            "splits": [
                s
                for s in splits
                if s in self.splits and self.splits[s].role == "ood" and self.splits[s].in_delta
            ],  # (cue copies of an ID split are not task splits)
            "combine": self.ood_combine,
        }

    def split_labels(self, split: str) -> list[str]:
        s = self.splits[split]
        return s.labels if (s.labels is not None and s.collapse is not None) else self.labels


_MNLI_LABELS = ["entailment", "neutral", "contradiction"]
_HANS_COLLAPSE = {
    "entailment": "entailment",
    "neutral": "non-entailment",
    "contradiction": "non-entailment",
}

BUILTIN: dict[str, TaskSpec] = {
    "mnli": TaskSpec(
        name="mnli",
        text_a="premise",
        text_b="hypothesis",
        labels=_MNLI_LABELS,
        alpha=0.5,
        splits={
            "train": SplitSpec(
                role="train",
                local=["mnli/train.jsonl", "mnli/train_partial.jsonl"],
                hub=HubSource(path="nyu-mll/glue", name="mnli", split="train"),
            ),
            "dev_matched": SplitSpec(
                role="id",
                local=["mnli/dev_matched.jsonl"],
                id_column="idx",
                hub=HubSource(path="nyu-mll/glue", name="mnli", split="validation_matched"),
            ),
            "dev_mismatched": SplitSpec(
                role="id",
                local=["mnli/dev_mismatched.jsonl"],
                id_column="idx",
                hub=HubSource(path="nyu-mll/glue", name="mnli", split="validation_mismatched"),
            ),
            "hans": SplitSpec(
                role="ood",
                local=["hans/evaluation.jsonl"],
                hub=HubSource(path="jhu-cogsci/hans", split="validation"),
                labels=["entailment", "non-entailment"],
                collapse=_HANS_COLLAPSE,
                group_by=["heuristic"],
            ),
        },
    ),
    "qqp": TaskSpec(
        name="qqp",
        text_a="question1",
        text_b="question2",
        labels=["not_duplicate", "duplicate"],
        alpha=0.2,
        bias_field="text_a",
        splits={
            "train": SplitSpec(
                role="train",
                local=["qqp/train.jsonl", "qqp/train_partial.jsonl"],
                hub=HubSource(path="nyu-mll/glue", name="qqp", split="train"),
            ),
            "dev": SplitSpec(
                role="id",
                local=["qqp/dev.jsonl"],
                hub=HubSource(path="nyu-mll/glue", name="qqp", split="validation"),
            ),
            # offline ID held-out set: real Quora pairs of unknown GLUE split, minus every pair that
            # also occurs (either order, normalized text) in the training file or in PAWS; balanced
            # 50/50, unlike QQP: report it as "QQP held-out (balanced)", never as the GLUE dev set
            "heldout": SplitSpec(
                role="id",
                local=["qqp/quora_pairs_split_unknown.jsonl"],
                id_column="pair_id",
                exclude_pairs_in=["train", "paws_qqp", "paws_wiki"],
            ),
            "paws_qqp": SplitSpec(
                role="ood", local=["paws_qqp/dev_and_test.jsonl"], id_column="id"
            ),
            "paws_wiki": SplitSpec(
                role="ood",
                local=["paws_wiki/test.jsonl"],
                id_column="id",
                text_a="sentence1",
                text_b="sentence2",
                hub=HubSource(
                    path="google-research-datasets/paws", name="labeled_final", split="test"
                ),
            ),
        },
    ),
    "fever": TaskSpec(
        name="fever",
        text_a="evidence",
        text_b="claim",
        labels=["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"],
        alpha=0.3,
        ood_combine="mean",  # the paper: F_bias on the plain mean of Symmetric v1 and v2
        splits={
            "train": SplitSpec(
                role="train",
                local=["fever/train.jsonl"],
                hub=HubSource(path="pietrolesci/nli_fever", split="train"),
            ),
            "dev": SplitSpec(
                role="id",
                local=["fever/dev.jsonl"],
                hub=HubSource(path="pietrolesci/nli_fever", split="dev"),
            ),
            "symmetric_v1": SplitSpec(
                role="ood",
                local=["fever_symmetric/v1/fever_symmetric_generated.jsonl"],
                id_column="id",
                text_a="evidence_sentence",
            ),
            "symmetric_v2": SplitSpec(
                role="ood", local=["fever_symmetric/v2/fever_symmetric_test.jsonl"], id_column="id"
            ),
            # further OOD sets, reported beside F_bias (not in it): FEVER 2.0 adversarial "fixers"
            # (one row per evidence sentence: ids repeat, so rows are numbered by line) and claims
            # with universal adversarial triggers (three-way)
            "fever2_fixers": SplitSpec(
                role="ood", local=["fever_adversarial/fever2_fixers.jsonl"], in_delta=False
            ),
            "triggers": SplitSpec(
                role="ood", local=["fever_adversarial/fever_triggers.jsonl"], in_delta=False
            ),
        },
    ),
}


def load_task(name_or_path: str) -> TaskSpec:
    """A built-in task by name, or a user's task from a YAML file."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml", ".json"} or path.exists():
        raw = read_yaml(path)
        try:
            return TaskSpec.model_validate(raw)
        except ValidationError as e:
            raise UserError(f"{path}: invalid task spec: {validation_line(e)}") from None
    raise UserError(
        f"unknown task {name_or_path!r}: use one of {sorted(BUILTIN)} or a task YAML file"
    )
