"""An experiment file, typed: every section and every override is a validated model, so a typo
anywhere (`defaults`, a compression's `train`, `bias_model.train`, a loss setting) is an error
naming the file and the key before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import RunOverrides, apply_overrides, error_lines, error_where
from ..io import MAX_COUNT, MAX_SEED, UserError, read_yaml
from ..stages.catalog import (
    BIAS_KINDS,
    LOSS_NAMES,
    METHOD_NAMES,
    RUNTIMES,
    SOURCES,
    loss_config,
    loss_needs,
    method_config,
)

LossName = Literal[tuple(LOSS_NAMES)]
MethodName = Literal[tuple(METHOD_NAMES)]


def _nested(check, prefix: str) -> None:
    """Run a nested validation; re-raise its errors with their full key (pydantic drops it)."""
    try:
        check()
    except ValidationError as e:
        raise ValueError(error_lines(e, prefix)) from None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TeacherSpec(_Spec):
    model: str = Field(description="the pretrained model the teacher is fine-tuned from")
    path: str | None = Field(
        None, description="use this fine-tuned teacher folder instead of training one"
    )
    config: str | None = Field(
        None,
        description="with `path`: the run config (`finetune -c`) that fine-tunes "
        "the teacher into `path` when it is missing",
    )
    train: RunOverrides = Field(
        default_factory=RunOverrides, description="overrides for fine-tuning"
    )

    @model_validator(mode="after")
    def _config_needs_path(self) -> TeacherSpec:
        if self.config is not None and self.path is None:
            raise ValueError("teacher.config fine-tunes the teacher into teacher.path: give both")
        return self


class CompressionSpec(_Spec):
    name: str
    method: MethodName
    model: str | None = Field(None, description="student / start model; default: the teacher")
    settings: dict[str, Any] = Field(default_factory=dict, description="the method's settings")
    train: RunOverrides = Field(
        default_factory=RunOverrides, description="overrides for this compression"
    )
    losses: list[LossName] | None = Field(None, description="default: the experiment's losses")
    teacher: str | None = Field(
        None,
        description="one of `teachers` (a debiased teacher) to compress and "
        "distil from; default: the study's teacher",
    )
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(
        None, min_length=1, description="default: the experiment's seeds (fewer: a trimmed row)"
    )
    bias_models: list[str] | None = Field(
        None,
        description="which bias models the known-bias losses run with here; default: every one",
    )
    seeds_by_loss: dict[str, list[Annotated[int, Field(ge=0, le=MAX_SEED)]]] = Field(
        default_factory=dict,
        description="seeds for some runs other than the row's `seeds`, by loss or loss-bias "
        "name (e.g. {reweight-hyp: [42, 43, 44], smooth: [42]}): more seeds where a result is "
        "close, fewer for a control; 'ce' must run at every seed another loss runs at",
    )
    start: str | None = Field(
        None,
        description="stack on an earlier compression of this study: start from each "
        "of its models (one run per model, with its seed and loss), e.g. "
        "int8 on top of structured pruning",
    )

    @model_validator(mode="after")
    def _settings(self) -> CompressionSpec:
        _nested(lambda: self.method_config(), f"({self.name}) settings.")
        return self

    def method_config(self):
        return method_config(self.method, self.settings)


class UncertaintySpec(_Spec):
    source: Literal[tuple(SOURCES)] = Field(  # type: ignore[valid-type]
        "snapshots", description=", ".join(f"{n}: {s.summary}" for n, s in SOURCES.items())
    )
    sparsities: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.7, 0.85])
    stat: Literal["loss", "p_gold"] = Field(
        "loss", description="dynamics: variance of the loss or of p(gold)"
    )
    train: RunOverrides = Field(default_factory=RunOverrides)

    @field_validator("sparsities")
    @classmethod
    def _in_range(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not 0 < s < 1]
        if bad:
            raise ValueError(f"sparsities {bad} must be in (0, 1)")
        if len(set(v)) < 2:
            raise ValueError("at least two distinct sparsities are needed for a variance")
        return sorted(set(v))


class BiasSpec(_Spec):
    kind: Literal[tuple(BIAS_KINDS)] = Field(  # type: ignore[valid-type]
        "partial",
        description=", ".join(f"{n}: {k.__doc__.splitlines()[0]}" for n, k in BIAS_KINDS.items()),
    )
    model: str | None = None
    train: RunOverrides = Field(default_factory=RunOverrides)
    easy_hard_split: str = "dev_matched"
    scoring: Literal["crossfit", "insample"] = Field(
        "crossfit",
        description="training-set probabilities for the losses: each example scored by a model "
        "that did not see it (k folds), or by the model trained on all of it",
    )
    folds: int = Field(5, ge=2, le=20, description="k of the cross-fitting")
    features: Literal["basic", "literature"] = Field(
        "basic",
        description="overlap model: the basic HANS "
        "features, or the debiasing literature's fuller set",
    )
    subset: int = Field(
        2000,
        ge=1,
        le=MAX_COUNT,
        description="shallow model: how many training examples it is fit on, a seeded subset "
        "(data_seed) of the training split; cross-fitted, each fold model's of the folds it sees",
    )
    epochs: float = Field(
        3.0,
        gt=0,
        le=100,
        description="shallow model: its epochs on that subset (a few: over-confident by design)",
    )

    @model_validator(mode="after")
    def _shallow_settings(self) -> BiasSpec:
        given = [k for k in ("subset", "epochs") if k in self.model_fields_set]
        if self.kind != "shallow" and given:
            raise ValueError(
                f"{' and '.join(given)}: settings of kind 'shallow' (not {self.kind!r})"
            )
        if self.kind == "shallow" and "epochs" in self.train.model_fields_set:
            raise ValueError("a shallow model's epochs are `epochs` (default 3), not train.epochs")
        return self


class TeacherVariant(_Spec):
    """Another teacher, fine-tuned like the study's with its own loss: debias, then compress."""

    loss: LossName
    bias: str | None = Field(
        None, description="the bias model its loss reads (a name in bias_models)"
    )
    train: RunOverrides = Field(
        default_factory=RunOverrides, description="more overrides for this teacher"
    )


class SpeedSpec(_Spec):
    examples: int = Field(512, ge=8, le=1 << 20, description="ID examples each model is timed on")
    repeats: int = Field(
        3, ge=1, le=1000, description="timed rounds after a warm-up (best round counts)"
    )
    runtimes: list[Literal[RUNTIMES]] | None = Field(  # type: ignore[valid-type]
        None,
        description="also time every model on each of these runtimes (a speed-up column and a "
        "Pareto figure per runtime); unset: the study's own precision only",
    )

    def params(self) -> dict[str, Any]:
        """The stage's settings (its key): `runtimes` only when set, so studies without it keep
        their keys."""
        return self.model_dump(exclude=set() if self.runtimes else {"runtimes"})


class Experiment(_Spec):
    name: str
    task: str = "mnli"
    output_dir: str
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [42], min_length=1
    )
    defaults: RunOverrides = Field(
        default_factory=RunOverrides, description="overrides for every stage"
    )
    teacher: TeacherSpec
    compressions: list[CompressionSpec]
    losses: list[LossName] = Field(default_factory=lambda: ["ce"])
    loss_settings: dict[LossName, dict[str, Any]] = Field(
        default_factory=dict, description="settings per loss name (lam, T, ...)"
    )
    uncertainty: UncertaintySpec = Field(default_factory=UncertaintySpec)
    bias_model: BiasSpec | None = Field(
        None, description="one bias model (its split is the study's easy/hard)"
    )
    bias_models: dict[str, BiasSpec] = Field(
        default_factory=dict,
        description="several, by name: each known-"
        "bias loss runs once with each; the first makes the main split",
    )
    teachers: dict[str, TeacherVariant] = Field(
        default_factory=dict, description="debiased teachers by name"
    )
    speed: SpeedSpec | None = Field(
        default_factory=SpeedSpec,
        description="time every model against the teacher (the Speed-up column); "
        "null: no speed stage",
    )
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [c.name for c in self.compressions]
        if len(set(names)) != len(names):
            raise ValueError(f"compression names must be unique: {names}")
        self._check_loss_settings()
        biases = self._check_bias_models()
        self._check_teachers(biases)
        self._check_compressions(names, biases)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct: {self.seeds}")
        return self

    def _check_loss_settings(self) -> None:
        """Settings only for losses the study uses, each valid for its loss: a typo'd loss name
        would otherwise be ignored without a word."""
        unused = sorted(set(self.loss_settings) - set(self.all_losses()))
        if unused:
            raise ValueError(
                f"loss_settings for {unused}: no compression of this study uses "
                f"{'that loss' if len(unused) == 1 else 'these losses'} (losses: "
                f"{self.all_losses()})"
            )
        for loss, settings in self.loss_settings.items():
            _nested(
                lambda loss=loss, settings=settings: loss_config(loss, settings),
                f"loss_settings.{loss}.",
            )

    def _check_bias_models(self) -> dict[str, BiasSpec]:
        """One way of naming bias models, and one wherever a loss reads it; returns them by name
        for the checks that follow."""
        if self.bias_model is not None and self.bias_models:
            raise ValueError(
                "give `bias_model` (one) or `bias_models` (several, by name), not both"
            )
        biases = self.named_bias_models()
        needs_bias = [n for n in self.all_losses() if "bias_probs" in loss_needs(n)]
        if needs_bias and not biases:
            raise ValueError(f"losses {needs_bias} need a `bias_model` section")
        return biases

    def _check_teachers(self, biases: dict[str, BiasSpec]) -> None:
        """A debiased teacher's loss must get the inputs it reads, and only ones a teacher can
        have."""
        for name, t in self.teachers.items():
            if "bias_probs" in loss_needs(t.loss) and t.bias not in biases:
                raise ValueError(
                    f"teachers.{name}: loss {t.loss!r} needs `bias`, one of {list(biases)}"
                )
            if t.bias is not None and "bias_probs" not in loss_needs(t.loss):
                raise ValueError(
                    f"teachers.{name}: loss {t.loss!r} reads no bias model (drop `bias`)"
                )
            if any(n in loss_needs(t.loss) for n in ("difficulty", "weight")):
                raise ValueError(
                    f"teachers.{name}: loss {t.loss!r} needs inputs a teacher cannot have"
                )

    def _check_compressions(self, names: list[str], biases: dict[str, BiasSpec]) -> None:
        """Every compression names teachers and bias models the study has, stacks on an earlier
        one, and runs 'jtt' only beside 'ce' (its first model)."""
        for c in self.compressions:
            if c.teacher is not None and c.teacher not in self.teachers:
                raise ValueError(
                    f"compression {c.name}: teacher {c.teacher!r} is not one of `teachers` "
                    f"{list(self.teachers)}"
                )
            if unknown := [b for b in c.bias_models or [] if b not in biases]:
                raise ValueError(
                    f"compression {c.name}: bias_models {unknown} are not in {list(biases)}"
                )
        self._check_stacked(names)
        for c in self.compressions:
            self._check_seeds_by_loss(c, biases)
            if (
                c.start is None
                and "jtt" in (c.losses or self.losses)
                and "ce" not in (c.losses or self.losses)
            ):
                raise ValueError(
                    f"compression {c.name}: loss 'jtt' needs 'ce' in its losses (its first model)"
                )

    def _check_seeds_by_loss(self, c: CompressionSpec, biases: dict[str, BiasSpec]) -> None:
        """Every key names a run of this row, and its vanilla (ce) run exists at each seed: the
        row's differences are paired by seed."""
        losses = c.losses or self.losses
        runs = set(losses) | {f"{loss}-{b}" for loss in losses for b in c.bias_models or biases}
        if unknown := sorted(set(c.seeds_by_loss) - runs):
            raise ValueError(
                f"compression {c.name}: seeds_by_loss names {unknown}, not runs of this row "
                f"(have {sorted(runs)})"
            )
        vanilla = set(c.seeds_by_loss.get("ce", c.seeds or self.seeds))
        for key, seeds in c.seeds_by_loss.items():
            if missing := sorted(set(seeds) - vanilla):
                raise ValueError(
                    f"compression {c.name}: seeds_by_loss.{key} has seeds {missing} at which "
                    f"'ce' (the row's reference) does not run"
                )

    def seeds_for(self, c: CompressionSpec, loss: str, bias: str | None) -> list[int]:
        """The seeds one run of a compression row trains at."""
        by = c.seeds_by_loss
        row = c.seeds or self.seeds
        return by.get(f"{loss}-{bias}", by.get(loss, row)) if bias else by.get(loss, row)

    def _check_stacked(self, names: list[str]) -> None:
        """A stacked compression starts from an earlier one and inherits its model, losses, seeds,
        teacher and bias models: giving them again would be ignored."""
        for i, c in enumerate(self.compressions):
            if c.start is None:
                continue
            if c.start not in names[:i]:
                raise ValueError(
                    f"compression {c.name}: start {c.start!r} must name an earlier compression "
                    f"(have {names[:i]})"
                )
            given = [
                k
                for k in ("model", "losses", "seeds", "teacher", "bias_models", "seeds_by_loss")
                if getattr(c, k) not in (None, {})
            ]
            if given:
                raise ValueError(
                    f"compression {c.name}: a stacked compression takes its {', '.join(given)} "
                    f"from {c.start!r} (drop them)"
                )

    def named_bias_models(self) -> dict[str, BiasSpec]:
        """Every bias model by name (a lone `bias_model` is called "bias")."""
        return (
            dict(self.bias_models)
            if self.bias_models
            else ({"bias": self.bias_model} if self.bias_model is not None else {})
        )

    def all_losses(self) -> list[str]:
        """Every loss used, in the declared order (the order stages run in)."""
        used = {loss for c in self.compressions for loss in (c.losses or self.losses)}
        extra = sorted(used - set(self.losses))
        return [loss for loss in self.losses if loss in used] + extra


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Parse and type-check an experiment file, with `key=value` overrides (the planner then
    validates every stage)."""
    raw = apply_overrides(read_yaml(Path(path)), list(overrides or []))
    if "model" in raw and "teacher" not in raw and "compressions" not in raw:
        raise UserError(
            f"{path}: a run config (one training run), not a study: run it with "
            f"`robust-compress finetune -c {path}`"
        )
    try:
        return Experiment.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{error_where(e, path, overrides)}: {error_lines(e)}") from None
