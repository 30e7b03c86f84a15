"""An experiment becomes a graph of typed stages (`stages.graph`), each of a registered kind
(`stages.kinds`), in execution order, each keyed by everything that can change its result.

A stage's artifact lives in `<output_dir>/artifacts/<kind>-<key>`. The key hashes the stage's
config (the teacher it starts from or distils from named by reference), the keys of the stages it
depends on, and the content of every external input: the data it reads (the examples themselves,
after subsetting) and every model folder it starts from (weights, config, tokenizer). A rerun
reuses what is done; a changed setting, data file or given model reruns exactly what depends on it.

`check_plan` validates every stage before any work: its resolved config, its method against the
start model's architecture, its model folders and its data files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import UserError, check_apart, check_writable, claim_output, owned
from ..stages.catalog import (
    BIAS_KINDS,
    SOURCES,
    input_source,
    loss_config,
    loss_needs,
    method_config,
    method_trains,
)
from ..stages.check import ExternalInputs, available_splits, teacher_run_config
from ..stages.graph import KEY_VERSION, Stage, StageConfig, StageModel, TeacherRef
from .spec import Experiment

__all__ = ["KEY_VERSION", "Stage", "check_plan", "plan"]


def _base(exp: Experiment) -> dict[str, Any]:
    return (
        {"task": exp.task}
        | _overrides(exp.defaults)
        | ({"trackers": exp.trackers} if exp.trackers else {})
    )


def _overrides(o) -> dict[str, Any]:
    """The fields an override sets, an explicit null included (`train_limit: null`: the whole
    split)."""
    return o.model_dump(exclude_unset=True)


def _loss(exp: Experiment, name: str) -> dict[str, Any]:
    """A loss's typed settings, and the same as the experiment wrote them (what the key hashes)."""
    written = {"name": name} | exp.loss_settings.get(name, {})
    return {"loss": loss_config(name, exp.loss_settings.get(name, {})), "loss_as_written": written}


def _bias_stages(exp: Experiment, base: dict[str, Any], root: Path) -> dict[str, Stage]:
    """One stage per bias model; a kind that cross-fits through trained models (a transformer) first
    trains one model per fold (each its own stage: cached and resumed on its own)."""
    out: dict[str, Stage] = {}
    biases = exp.named_bias_models()
    for name, b in biases.items():
        bcfg = (
            base
            | {"model": b.model or exp.teacher.model, "seed": exp.seeds[0]}
            | _overrides(b.train)
        )
        label = f"bias-{b.kind}" if len(biases) == 1 else f"bias-{name}"
        kind = BIAS_KINDS[b.kind]
        folds = []
        if kind.fold_stages and b.scoring == "crossfit":
            folds = [
                Stage(
                    "bias-fold",
                    f"{label}-fold{k}",
                    _config(bcfg | {"cv_fold": k, "cv_folds": b.folds}),
                    root=root,
                    params={"kind": b.kind} | kind.params(b.model_dump()),
                )
                for k in range(b.folds)
            ]
        out[name] = Stage(
            "bias",
            label,
            _config(bcfg),
            deps=folds,
            root=root,
            params={
                "split": b.easy_hard_split,
                "kind": b.kind,
                "scoring": b.scoring,
                "folds": b.folds,
            }
            | kind.params(b.model_dump()),
            meta={"bias": name, "primary": name == next(iter(biases))},
        )
    return out


def _config(fields: dict[str, Any], **typed) -> StageConfig:
    """A stage config from the RunConfig fields it sets (`model` a folder, or a TeacherRef) and its
    typed parts."""
    fields = dict(fields)
    if "model" in fields:
        typed["model"] = fields.pop("model")
    return StageConfig(run=fields, **typed)


def _label(loss: str, bias: str | None, several: bool) -> str:
    """A row's loss label: named after its bias model only when the study has several, so a study
    with one bias model keeps its plain labels (and its keys)."""
    return f"{loss}-{bias}" if bias is not None and several else loss


def _teacher_stage(exp: Experiment, teacher_cfg: dict[str, Any], root: Path) -> Stage:
    """The study's teacher stage: apart from `plan` so the graph's first node reads on its own."""
    return Stage(
        "teacher",
        "teacher",
        _config(teacher_cfg),
        root=root,
        meta={
            "given": exp.teacher.path,
            "group": "teacher",
            "method": "teacher",
            "loss": "ce",
            "seed": exp.seeds[0],
            "is_teacher": True,
        },
    )


def _uncertainty_stages(
    exp: Experiment, base: dict[str, Any], root: Path, teacher: Stage, the_teacher: TeacherRef
) -> tuple[list[Stage], Stage | None]:
    """The uncertainty stage and the pruning runs it scores with, only when some loss needs a
    difficulty: a study without one plans none."""
    if not any("difficulty" in loss_needs(loss) for loss in exp.all_losses()):
        return [], None
    u = exp.uncertainty
    source = SOURCES[u.source]
    ucfg = base | {"seed": exp.seeds[0]} | _overrides(u.train)
    runs = [
        Stage(
            "uncertainty-run",
            f"uncertainty-pruning{suffix}",
            _config(ucfg, model=the_teacher, compression=compression_config(prune)),
            deps=[teacher],
            root=root,
        )
        for suffix, prune in source.runs(u.sparsities).items()
    ]
    unc = Stage(
        "uncertainty",
        "uncertainty",
        _config(ucfg, model=the_teacher),
        deps=runs or [teacher],
        root=root,
        params={"source": u.source} | source.params(u),
    )
    return [*runs, unc], unc


def _variant_stages(
    exp: Experiment,
    teacher_cfg: dict[str, Any],
    teacher: Stage,
    the_teacher: TeacherRef,
    biases: dict[str, Stage],
    root: Path,
) -> dict[str, Stage]:
    """Debiased teachers: the study's teacher recipe with their own loss (their teacher targets, if
    the loss has any, are the study's teacher: self-distillation, as Utama et al.)."""
    several = len(biases) > 1
    variants: dict[str, Stage] = {}
    for name, t in exp.teachers.items():
        deps = [teacher] + ([biases[t.bias]] if t.bias is not None else [])
        variants[name] = Stage(
            "teacher",
            f"teacher-{name}",
            _config(teacher_cfg | _overrides(t.train), teacher=the_teacher, **_loss(exp, t.loss)),
            deps=deps,
            root=root,
            meta={
                "group": f"teacher-{name}",
                "method": "teacher",
                "loss": _label(t.loss, t.bias, several),
                "loss_name": t.loss,
                "bias": t.bias,
                "seed": exp.seeds[0],
                "variant": name,
            },
        )
    return variants


@dataclass
class _Compressions:
    """What the compression stages of a study are planned from, and the lists they are appended
    to: one object, so the per-seed, per-loss and stacked steps can each be a short method."""

    exp: Experiment
    base: dict[str, Any]
    root: Path
    teacher: Stage
    biases: dict[str, Stage]
    unc: Stage | None
    variants: dict[str, Stage]
    stages: list[Stage]
    models: list[Stage]

    def label(self, loss: str, bias: str | None) -> str:
        return _label(loss, bias, len(self.biases) > 1)

    def stack_on(self, first: Stage, name: str) -> None:
        """The compressions that start from `name`'s models: one stage per such model, right after
        it, with its seed and loss (a method that trains trains with that loss)."""
        exp = self.exp
        for c in (c for c in exp.compressions if c.start == name):
            settings = c.method_config()
            typed = {
                "compression": compression_config(settings.model_dump(mode="json")),
                "teacher": first.config.teacher,
            }
            if method_trains(c.method):
                typed |= {
                    "loss": first.config.loss,
                    "loss_as_written": first.config.loss_as_written,
                }
            cfg = _config(
                self.base
                | {"model": StageModel(first), "seed": first.meta["seed"]}
                | _overrides(c.train),
                **typed,
            )
            tail = first.name.split("/", 1)[
                1
            ]  # the loss label and seed of the model it starts from
            s = Stage(
                "compress",
                f"{c.name}/{tail}",
                cfg,
                deps=[first, *first.deps],
                root=self.root,
                meta=first.meta
                | {
                    "group": c.name,
                    "method": c.method,
                    "start": first.name,
                    "sparsity": getattr(settings, "sparsity", None),
                },
            )
            self.stages.append(s)
            self.models.append(s)
            self.stack_on(s, c.name)

    def seed(self, seed: int, order: list[str], by_teacher: list) -> None:
        """One seed's compressions: the study's teacher's before a debiased one's, each loss in
        `order` (vanilla first), so a study stopped early has whole tables for the seeds it
        reached."""
        exp = self.exp
        vanilla: dict[str, Stage] = {}
        for loss, c in [
            (loss, c)
            for debiased in (False, True)
            for loss in order
            for c in by_teacher
            if (c.teacher is not None) == debiased
        ]:
            trains = method_trains(c.method)
            seeds = c.seeds or exp.seeds
            losses = (c.losses or exp.losses) if trains else ["ce"]  # no training: one row...
            if loss not in losses or (not trains and seed != seeds[0]):  # ...one seed
                continue
            uses_bias = trains and "bias_probs" in loss_needs(loss)
            biases = [
                b
                for b in ((c.bias_models or list(self.biases)) if uses_bias else [None])
                if seed in exp.seeds_for(c, loss, b)
            ]
            if not biases:
                continue
            src = self.variants[c.teacher] if c.teacher else self.teacher
            if (
                src not in self.stages
            ):  # a debiased teacher, trained just before its first compression
                self.stages.append(src)
            ref = TeacherRef(src, c.teacher)
            for bias in biases:
                s = self.compress(c, loss, bias, seed, src, ref, vanilla.get(c.name))
                self.stages.append(s)
                self.models.append(s)
                self.stack_on(s, c.name)
                if loss == "ce":
                    vanilla[c.name] = s

    def compress(
        self,
        c,
        loss: str,
        bias: str | None,
        seed: int,
        src: Stage,
        ref: TeacherRef,
        reference: Stage | None,
    ) -> Stage:
        """One compression of `src` with one loss, bias model and seed; `reference`: the same
        compression's vanilla run of this seed, if planned (a loss may learn from it)."""
        trains = method_trains(c.method)
        # the one table of who produces each loss-input source (train/extras.py reads them)
        producer = {
            "teacher": src,
            "uncertainty": self.unc,
            "bias_model": self.biases.get(bias),
            "reference_model": reference,
        }
        deps = (
            [src]
            + [producer[input_source(n)] for n in loss_needs(loss) if input_source(n) != "teacher"]
            if trains
            else [src]
        )
        settings = c.method_config()
        typed = {
            "compression": compression_config(settings.model_dump(mode="json")),
            "teacher": ref,
        }
        if trains:
            typed |= _loss(self.exp, loss)
        cfg = _config(
            self.base | {"model": c.model or ref, "seed": seed} | _overrides(c.train), **typed
        )
        return Stage(
            "compress",
            f"{c.name}/{self.label(loss, bias)}/seed{seed}",
            cfg,
            deps=deps,
            root=self.root,
            meta={
                "group": c.name,
                "method": c.method,
                "loss": self.label(loss, bias),
                "seed": seed,
                "sparsity": getattr(settings, "sparsity", None),
                "loss_name": loss,
                "bias": bias,
                "teacher_variant": c.teacher,
            },
        )


def plan(exp: Experiment) -> list[Stage]:
    """The stage graph in execution order (dependencies first), without external digests."""
    root = Path(exp.output_dir)
    base = _base(exp)
    stages: list[Stage] = []

    # the teacher keeps its training dynamics (free): the `dynamics` uncertainty reads them
    teacher_cfg = (
        base
        | {"model": exp.teacher.model, "seed": exp.seeds[0], "record_dynamics": True}
        | _overrides(exp.teacher.train)
    )
    teacher = _teacher_stage(exp, teacher_cfg, root)
    stages.append(teacher)
    the_teacher = TeacherRef(teacher)

    biases = _bias_stages(exp, base, root)
    for b in biases.values():
        stages.extend(b.deps + [b])

    unc_stages, unc = _uncertainty_stages(exp, base, root, teacher, the_teacher)
    stages.extend(unc_stages)

    variants = _variant_stages(exp, teacher_cfg, teacher, the_teacher, biases, root)

    # Seed-major; within a seed, the compressions of the study's teacher before those of a debiased
    # one (whose teacher is trained just before they need it), and every compression's vanilla (ce)
    # run first: a study stopped early still has whole tables for the seeds it reached.
    order = ["ce"] + [loss for loss in exp.all_losses() if loss != "ce"]
    models = [teacher, *variants.values()]
    all_seeds = list(
        dict.fromkeys(
            exp.seeds
            + [s for c in exp.compressions for s in c.seeds or []]
            + [s for c in exp.compressions for ss in c.seeds_by_loss.values() for s in ss]
        )
    )
    by_teacher = sorted(
        (c for c in exp.compressions if c.start is None), key=lambda c: c.teacher is not None
    )
    compressions = _Compressions(
        exp, base, root, teacher, biases, unc, variants, stages=stages, models=models
    )
    for seed in all_seeds:
        compressions.seed(seed, order, by_teacher)
    stages.extend(
        v for v in variants.values() if v not in stages
    )  # a debiased teacher nothing compresses
    if exp.speed is not None:
        stages.append(
            Stage(
                "speed",
                "speed",
                _config(base, model=the_teacher),
                deps=models,
                root=root,
                params=exp.speed.params(),
            )
        )
    return stages


def compression_config(settings: dict[str, Any]):
    """Typed compression settings; the key hashes exactly the ones given (a compressed run gives
    every one, defaults included: a changed default reruns it)."""
    rest = dict(settings)
    return method_config(rest.pop("method"), rest)


def is_study(folder: Path) -> bool:
    """A study folder, also one an earlier version wrote before output records existed."""
    return owned(folder) or (folder / "index.json").is_file() or (folder / "artifacts").is_dir()


def check_study_folder(exp: Experiment, where: str | Path) -> None:
    """The study's folder (resumed when it is one) is not a folder of the user's, and neither is,
    holds nor lies inside what the study reads."""
    out = Path(exp.output_dir)
    reads = [
        (where, "experiment file"),
        (exp.teacher.path, "teacher"),
        (exp.teacher.model, "teacher model"),
        (exp.teacher.config, "teacher config"),
        (exp.task, "task file"),
        (exp.defaults.data_dir, "data folder"),
    ] + [(b.model, "bias model") for b in exp.named_bias_models().values()]
    check_apart(out, reads)
    if not is_study(out):
        claim_output(out, overwrite=False)
    check_writable(out)


def check_plan(exp: Experiment, stages: list[Stage], where: str | Path) -> None:
    """Validate every stage before any work and fill each stage's external digests (data,
    models)."""
    teacher = stages[0]
    check_study_folder(exp, where)
    pending = exp.teacher.path is not None and not Path(exp.teacher.path).expanduser().exists()
    if pending and exp.teacher.config is None:
        raise UserError(
            f"{where}: teacher.path {exp.teacher.path}: not found; fine-tune it first "
            "(`robust-compress finetune -c configs/teacher-*.yaml`), give `teacher.config` to have "
            "the study fine-tune it there, or drop teacher.path to train it in the study"
        )
    ins = ExternalInputs(
        exp.task,
        exp.teacher.model if pending else exp.teacher.path or exp.teacher.model,
        where,
        label_map=exp.defaults.label_map,
    )
    if (
        pending
    ):  # fine-tuned first from its run config; the stages after it are keyed once it exists
        cfg = teacher_run_config(exp.teacher.config, exp.teacher.path, where)
        teacher.meta["pending"] = exp.teacher.config
        teacher.external = {"model": "pending"}
        n_train = ins.data(cfg, needs_train=True)[1]
        teacher.work = {
            "train": cfg.max_steps * cfg.batch_size if cfg.max_steps else n_train * cfg.epochs,
            "infer": ins.data(cfg, needs_train=False)[2],
        }
    elif any(s.kind == "uncertainty" for s in stages):
        SOURCES[exp.uncertainty.source].check(teacher, where)
    have = available_splits(exp.task, exp.defaults.data_dir, exp.defaults.source or "local")
    for name, b in exp.named_bias_models().items():
        if b.easy_hard_split not in have:
            key = "bias_model" if exp.bias_model is not None else f"bias_models.{name}"
            raise UserError(
                f"{where}: {key}.easy_hard_split {b.easy_hard_split!r} is not an eval split "
                f"available for task {ins.task.name!r} (have {have})"
            )
    for s in stages:
        if not (s.given and pending):
            s.spec.check(s, None if s.given else s.resolve(), ins)
