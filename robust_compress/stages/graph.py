"""A study's stage graph, typed: each node is one stage of a registered kind (`stages/kinds.py`),
with a typed config whose teacher is a reference to the teacher's stage, never a string to replace.

A stage's artifact lives in `<root>/artifacts/<kind>-<key>`. The key hashes the stage's config as
the study wrote it (the teacher it starts from as a placeholder: `<teacher>`, `<teacher:NAME>`), the
stage's own settings, the keys of the stages it depends on and the content of its external inputs
(filled by `stages.check`). These are the very data every key was computed from before the graph was
typed: finished studies keep their keys (tests/test_stage_keys.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import RunConfig, RunOverrides, error_lines
from ..io import UserError, digest

if TYPE_CHECKING:
    from .check import ExternalInputs
    from .progress import Reporter

KEY_VERSION = 3  # bump when a stage's artifact changes meaning for the same inputs


class Kind:
    """A kind of stage: what its stage runs (`run`), what it writes (`output_file`: the one file a
    later stage reads, else the folder), what it gives a loss downstream (`provides`: the `Inputs`
    field), what it checks and costs before any work (`check`), and its one-line result. The kinds
    are in stages/kinds.py, registered in `KINDS`; the study never asks which kind it holds."""

    name: ClassVar[str]
    output_file: ClassVar[str | None] = None  # the one file later stages read (else: the folder)
    provides: ClassVar[str | None] = (
        None  # the loss-input (`Inputs`) field its artifact fills downstream
    )
    reads_inputs: ClassVar[bool] = (
        False  # its loss reads upstream artifacts (filled in by `provides`)
    )
    trains: ClassVar[bool] = True  # trains a model: an executor gives it a GPU where there is one
    is_model: ClassVar[bool] = (
        False  # a model the study reports (a row of index.json, timed by speed)
    )
    sharded: ClassVar[bool] = (
        False  # split across `--shard i/n` (others: run by every shard that needs them)
    )
    needs_every_model: ClassVar[bool] = (
        False  # waits for every model of the study (any shard runs it last)
    )

    def run(self, stage: Stage, cfg: RunConfig, rep: Reporter, files: dict[str, Any]) -> None:
        raise NotImplementedError

    def result(self, stage: Stage) -> str:
        return ""

    def check(self, stage: Stage, cfg: RunConfig | None, ins: ExternalInputs) -> None:
        """Check the stage's inputs before any work; fill its external digests and planned work."""


KINDS: dict[str, Kind] = {}  # filled by stages/kinds.py


@dataclass(eq=False)
class TeacherRef:
    """A stage's teacher: the study's (`variant` None) or a debiased one, by its stage."""

    stage: Stage = field(repr=False)
    variant: str | None = None

    @property
    def placeholder(self) -> str:
        """How the key names it: by role, not by path (the path holds the teacher's own key)."""
        return "<teacher>" if self.variant is None else f"<teacher:{self.variant}>"

    @property
    def path(self) -> Path:
        return self.stage.path


@dataclass(eq=False)
class StageModel:
    """A start model another stage of the study makes: a compression stacked on another's model
    (int8 on top of structured pruning)."""

    stage: Stage = field(repr=False)

    @property
    def placeholder(self) -> str:
        """How the key names it: by the stage's name (its key is among the deps)."""
        return f"<model:{self.stage.name}>"

    @property
    def path(self) -> Path:
        return self.stage.path


Ref = TeacherRef | StageModel


def is_placeholder(value: object) -> bool:
    """A teacher's or another stage's model placeholder as stage records (stage.json) store it."""
    return (
        isinstance(value, str) and value.startswith(("<teacher", "<model:")) and value.endswith(">")
    )


@dataclass(eq=False)
class StageConfig:
    """A stage's run config before it is placed: the `RunConfig` fields it sets (typed, explicit
    nulls kept), the model it starts from (a folder or a teacher), its compression and loss (typed),
    and the teacher its loss and F_bias read. `resolve` makes the RunConfig; `key_data` is what the
    key hashes."""

    run: Any = None  # RunOverrides: only the fields set count
    model: str | TeacherRef | StageModel | None = None
    compression: Any = None  # a compression method's config
    loss: Any = None  # a loss's settings
    teacher: TeacherRef | None = None
    loss_as_written: dict[str, Any] | None = (
        None  # the key hashes the settings as written (1 and 1.0 differ)
    )

    def __post_init__(self) -> None:
        if self.run is None:
            self.run = RunOverrides()
        elif isinstance(self.run, dict):
            self.run = RunOverrides.model_validate(self.run)

    def set_fields(self) -> dict[str, Any]:
        return self.run.model_dump(exclude_unset=True)

    def key_data(self) -> dict[str, Any]:
        """The config as the key hashes it: the fields set, teachers by placeholder, a compression's
        settings as given (a compressed run gives all of them, defaults included)."""
        data = self.set_fields()
        data.pop("cache_dir", None)  # where the cache lives is not an input
        if self.model is not None:
            data["model"] = self.model.placeholder if isinstance(self.model, Ref) else self.model
        if self.compression is not None:
            data["compression"] = self.compression.model_dump(mode="json", exclude_unset=True)
        if self.teacher is not None:
            data["inputs"] = {"teacher": self.teacher.placeholder}
        if self.loss is not None:
            data["loss"] = (
                self.loss_as_written
                if self.loss_as_written is not None
                else self.loss.model_dump(mode="json", exclude_unset=True)
            )
        return data

    def model_path(self) -> str | None:
        return str(self.model.path) if isinstance(self.model, Ref) else self.model

    def model_label(self) -> str:
        """What the stage runs, for throughput estimates: "teacher" for any teacher's architecture
        (and for a model stacked on one of its compressions)."""
        return "teacher" if isinstance(self.model, Ref) else str(self.model or "")


@dataclass(eq=False)
class Stage:
    kind: str  # a name in stages.kinds.KINDS
    name: str
    config: StageConfig = field(default_factory=StageConfig)
    deps: list[Stage] = field(default_factory=list)
    params: dict[str, Any] = field(
        default_factory=dict
    )  # settings of the stage itself (in the key)
    meta: dict[str, Any] = field(default_factory=dict)  # descriptive only (names for the report)
    root: Path = Path(".")
    external: dict[str, str] = field(
        default_factory=dict
    )  # content digests of data and model inputs
    work: dict[str, float] = field(
        default_factory=dict
    )  # examples to train on / to score (for estimates)

    @property
    def spec(self) -> Kind:
        """The stage's kind: what it runs, what it writes, when it is done."""
        return KINDS[self.kind]

    @property
    def key(self) -> str:
        return digest(
            KEY_VERSION,
            self.kind,
            self.config.key_data(),
            self.params,
            [d.key for d in self.deps],
            self.external,
        )[:12]

    @property
    def given(self) -> bool:
        """An input the user gave (a fine-tuned teacher folder): never run, never written."""
        return bool(self.meta.get("given"))

    @property
    def path(self) -> Path:
        """The artifact folder (a given teacher: the user's folder)."""
        if self.given:
            return Path(self.meta["given"])
        return self.root / "artifacts" / f"{self.kind}-{self.key}"

    @property
    def output(self) -> Path:
        """What a later stage reads: the folder, or the one file a file-producing stage writes in
        it."""
        return self.path / self.spec.output_file if self.spec.output_file else self.path

    @property
    def snapshot_dir(self) -> Path:
        return self.path.with_name(self.path.name + "-snapshots")

    @property
    def record(self) -> Path:
        """stage.json: provenance (code version, device, seconds), written last inside the
        artifact."""
        return self.path / "stage.json"

    def snapshot_paths(self) -> list[Path]:
        sparsities = getattr(self.config.compression, "snapshots", None) or []
        return [self.snapshot_dir / f"sparsity-{s:.2f}" for s in sparsities]

    def done(self) -> bool:
        """Everything the stage produces is there: its artifact is written whole (the record is its
        last file, inside the folder that is renamed into place), and so is every snapshot."""
        if (
            self.given
        ):  # an input, checked before the study starts, never run (a pending one: made first)
            return not self.meta.get("pending") and self.path.is_dir()
        return self.record.is_file() and all(
            (p / "config.json").is_file() for p in self.snapshot_paths()
        )

    def result(self) -> str:
        """Its key numbers in one line (what the study prints when it ends)."""
        return self.spec.result(self)

    def resolve(self) -> RunConfig:
        """The RunConfig this stage runs: teachers and upstream artifacts filled in by their
        paths."""
        c = self.config
        data = c.set_fields() | {"model": c.model_path(), "output_dir": str(self.path)}
        if c.compression is not None:
            data["compression"] = c.compression
        if c.loss is not None:
            data["loss"] = c.loss
        inputs = {"teacher": str(c.teacher.path)} if c.teacher is not None else {}
        if self.spec.reads_inputs:  # a loss's inputs: each upstream artifact by what it provides
            start = (
                c.model.stage if isinstance(c.model, StageModel) else None
            )  # (the start model is none)
            inputs |= {
                d.spec.provides: str(d.output)
                for d in self.deps
                if d.spec.provides and d is not start
            }
        if inputs:
            data["inputs"] = inputs
        try:
            return RunConfig.model_validate(data)
        except Exception as e:  # noqa: BLE001 -- pydantic's error, one line naming the stage
            msg = error_lines(e) if hasattr(e, "errors") else str(e)
            raise UserError(f"stage {self.name}: {msg}") from None

    def run(self, rep: Reporter, code_version: str, device: str) -> None:
        """Run the stage into its artifact folder. Its record (stage.json) is the artifact's last
        file, written before the folder is renamed into place: a stage is done exactly when its
        record exists."""
        cfg = self.resolve()
        t0 = time.perf_counter()

        def record(_folder=None) -> dict:
            import torch
            import transformers

            return {
                "name": self.name,
                "kind": self.kind,
                "key": self.key,
                "code_version": code_version,
                "device": device,
                "threads": torch.get_num_threads(),  # another count sums floats in another order
                "torch": torch.__version__,  # another version may pick other kernels
                "transformers": transformers.__version__,
                "seconds": round(time.perf_counter() - t0, 1),
                "deps": [d.key for d in self.deps],
                "external": self.external,
                "params": self.params,
                "config": self.config.key_data(),
            }

        self.spec.run(self, cfg, rep, {"stage.json": record})
