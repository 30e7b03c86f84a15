"""What a study's stages read from outside the study, checked before any work and digested for the
keys: the task spec, the data each stage reads (the examples themselves, after subsetting) and every
model folder a stage starts from (weights, config, tokenizer)."""

from __future__ import annotations

from pathlib import Path

from ..compress import METHODS
from ..config import RunConfig, load_config
from ..data.load import DataArgs, available_eval_splits, load_eval_splits, load_train_split
from ..data.tasks import TaskSpec, load_task
from ..io import UserError, digest, read_yaml
from ..models.families import family_of
from ..models.load import (
    check_max_length,
    check_model_dir,
    label_order,
    load_arch,
    model_digest,
    resolve_model_dir,
)


class ExternalInputs:
    """The external inputs of one study, each read and digested once. `where` (the experiment file)
    starts every error line."""

    def __init__(
        self,
        task: str,
        teacher_model: str,
        where: str | Path,
        label_map: dict[str, str] | None = None,
    ):
        self.task: TaskSpec = load_task(task)
        self.where, self.label_map = where, label_map
        # the task's resolved spec (a custom task file's alpha, ood_combine, label sets, ...) is an
        # input of every stage: the name alone would not change when the file does (non-default
        # fields only: a field added to the spec later, at its default, keeps every key)
        self.task_key = digest(self.task.model_dump(mode="json", exclude_defaults=True))
        self.teacher_arch = load_arch(resolve_model_dir(teacher_model))
        self._models: dict[str, str] = {}
        self._data: dict[str, tuple[str, int, int]] = {}

    def model(self, name: str, label_map: dict[str, str] | None = None) -> str:
        """Content digest of a model folder a stage starts from, once it is checked usable for the
        task (a classifier's labels matched to the task's by name, or by the `label_map`
        setting)."""
        if name not in self._models:
            folder = resolve_model_dir(name)
            check_model_dir(folder)
            family_of(load_arch(folder))
            try:
                label_order(
                    folder, self.task.labels, label_map if label_map is not None else self.label_map
                )
            except UserError as e:
                raise UserError(f"{self.where}: {e} (task {self.task.name!r})") from None
            self._models[name] = model_digest(folder)
        return self._models[name]

    def data(self, cfg: RunConfig, needs_train: bool) -> tuple[str, int, int]:
        """(digest, training examples, eval examples) of the data a stage reads."""
        k = digest(cfg.data_args().model_dump(mode="json")) + str(needs_train)
        if k not in self._data:
            args: DataArgs = cfg.data_args()
            evals = load_eval_splits(args, self.task)
            parts = [s.digest() for s in evals.values()]
            n_train = 0
            if needs_train:
                train = load_train_split(args, self.task)
                parts.append(train.digest())
                n_train = len(train)
            self._data[k] = (digest(parts), n_train, sum(len(s) for s in evals.values()))
        return self._data[k]

    def teacher_layers(self) -> int:
        """The teacher's encoder layers (a study's time estimate of what a method does per
        layer)."""
        return int(getattr(self.teacher_arch, family_of(self.teacher_arch).n_layers_key, 12))

    def check_start(self, stage: str, model: str | None, cfg: RunConfig) -> None:
        """The start model (None: the study's teacher) takes the stage's max_length and method."""
        arch = self.teacher_arch if model is None else load_arch(resolve_model_dir(model))
        try:
            check_max_length(arch, cfg.max_length, f"stage {stage}")
            if cfg.compression is not None:
                try:
                    METHODS[cfg.compression.method](cfg.compression).check(arch)
                except UserError as e:
                    raise UserError(f"stage {stage}: {e}") from None
        except UserError as e:
            raise UserError(f"{self.where}: {e}") from None


def available_splits(task: str, data_dir: str | None, source: str) -> list[str]:
    """The eval splits of a task that its data source has."""
    return available_eval_splits(load_task(task), data_dir, source)


def given_run_config(folder: str | Path) -> RunConfig:
    """The config a given (already trained) model folder was made with."""
    return RunConfig.model_validate(read_yaml(Path(folder).expanduser() / "run_config.yaml"))


def teacher_run_config(config: str | Path, path: str | Path, where: str | Path) -> RunConfig:
    """The run config a study fine-tunes its missing teacher with: it must write to
    `teacher.path`."""
    cfg = load_config(config)
    if Path(cfg.output_dir).expanduser().resolve() != Path(path).expanduser().resolve():
        raise UserError(
            f"{where}: teacher.config {config} writes to {cfg.output_dir}, but teacher.path is "
            f"{path}"
        )
    return cfg
