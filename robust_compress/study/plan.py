"""An experiment becomes a graph of stages, each keyed by everything that can change its result.

A stage's artifact lives in `<output_dir>/artifacts/<kind>-<key>`. The key hashes the stage's
config (with upstream artifacts as placeholders), the keys of the stages it depends on, and the
content of every external input: the data it reads (the examples themselves, after subsetting)
and every model folder it starts from (weights, config, tokenizer). A rerun reuses what is done;
a changed setting, data file or given model reruns exactly what depends on it.

`check_plan` validates every stage before any work: its resolved config, its method against the
start model's architecture, its model folders and its data files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compress import METHODS
from ..config import RunConfig, error_lines
from ..data.load import DataArgs, available_eval_splits, load_eval_splits, load_train_split
from ..data.tasks import load_task
from ..io import UserError, check_writable, digest, read_yaml
from ..models.families import family_of
from ..models.load import (
    check_max_length,
    check_model_dir,
    load_arch,
    model_digest,
    model_labels,
    resolve_model_dir,
)
from ..train.extras import EXTRAS
from ..train.losses import REGISTRY
from .spec import Experiment

TEACHER = "<teacher>"
KEY_VERSION = 3  # bump when a stage's artifact changes meaning for the same inputs


@dataclass
class Stage:
    kind: str  # teacher | bias | uncertainty-run | uncertainty | compress | speed
    name: str
    config: dict[str, Any]
    deps: list[Stage] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # settings of the stage itself (in the key)
    meta: dict[str, Any] = field(default_factory=dict)  # descriptive only (names for the report)
    root: Path = Path(".")
    external: dict[str, str] = field(default_factory=dict)  # content digests of data and model inputs
    work: dict[str, float] = field(default_factory=dict)  # examples to train on / to score (for estimates)

    @property
    def key(self) -> str:
        return digest(KEY_VERSION, self.kind, self.config, self.params, [d.key for d in self.deps],
                      self.external)[:12]

    @property
    def path(self) -> Path:
        """The artifact folder (a given teacher: the user's folder, never written)."""
        if self.kind == "teacher" and self.meta.get("given"):
            return Path(self.meta["given"])
        return self.root / "artifacts" / f"{self.kind}-{self.key}"

    @property
    def output(self) -> Path:
        """What a later stage reads: the folder, or the one file a file-producing stage writes in it."""
        return self.path / OUTPUT_FILE[self.kind] if self.kind in OUTPUT_FILE else self.path

    @property
    def snapshot_dir(self) -> Path:
        return self.path.with_name(self.path.name + "-snapshots")

    @property
    def record(self) -> Path:
        """stage.json: provenance (code version, device, seconds), written last inside the artifact."""
        return self.path / "stage.json"

    def snapshot_paths(self) -> list[Path]:
        sparsities = self.config.get("compression", {}).get("snapshots") or []
        return [self.snapshot_dir / f"sparsity-{s:.2f}" for s in sparsities]

    def done(self) -> bool:
        """Everything the stage produces is there: its artifact is written whole (the record is its
        last file, inside the folder that is renamed into place), and so is every snapshot."""
        if self.kind == "teacher" and self.meta.get("given"):
            return True  # an input, checked by check_plan, never run
        return self.record.is_file() and all((p / "config.json").is_file() for p in self.snapshot_paths())


OUTPUT_FILE = {"uncertainty": "uncertainty.parquet", "speed": "speed.json"}


def _base(exp: Experiment) -> dict[str, Any]:
    return {"task": exp.task} | _overrides(exp.defaults) | ({"trackers": exp.trackers} if exp.trackers else {})


def _overrides(o) -> dict[str, Any]:
    """The fields an override sets, an explicit null included (`train_limit: null`: the whole split)."""
    return o.model_dump(exclude_unset=True)


def teacher_ref(variant: str | None) -> str:
    """The placeholder a stage's config names a teacher by (the study's, or a debiased one)."""
    return TEACHER if variant is None else f"<teacher:{variant}>"


def is_teacher_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith("<teacher") and value.endswith(">")


def stage_ref(name: str) -> str:
    """The placeholder a stacked compression's config names its start model by (another stage's model)."""
    return f"<model:{name}>"


def is_stage_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith("<model:") and value.endswith(">")


def _bias_stages(exp: Experiment, base: dict[str, Any], root: Path) -> dict[str, Stage]:
    """One stage per bias model; a cross-fitted transformer bias model first trains one model per fold
    (each its own stage: cached and resumed on its own)."""
    out: dict[str, Stage] = {}
    biases = exp.named_bias_models()
    for name, b in biases.items():
        bcfg = base | {"model": b.model or exp.teacher.model, "seed": exp.seeds[0]} | _overrides(b.train)
        label = f"bias-{b.kind}" if len(biases) == 1 else f"bias-{name}"
        folds = []
        if b.kind == "partial" and b.scoring == "crossfit":
            folds = [Stage("bias-fold", f"{label}-fold{k}", bcfg | {"cv_fold": k, "cv_folds": b.folds}, root=root,
                           params={"kind": b.kind}) for k in range(b.folds)]
        out[name] = Stage("bias", label, bcfg, deps=folds, root=root,
                          params={"split": b.easy_hard_split, "kind": b.kind, "scoring": b.scoring, "folds": b.folds}
                          | ({"features": b.features} if b.kind == "overlap" else {}),
                          meta={"bias": name, "primary": name == next(iter(biases))})
    return out


def plan(exp: Experiment) -> list[Stage]:
    """The stage graph in execution order (dependencies first), without external digests."""
    root = Path(exp.output_dir)
    base = _base(exp)
    stages: list[Stage] = []

    # the teacher keeps its training dynamics (free): the `dynamics` uncertainty reads them
    teacher_cfg = base | {"model": exp.teacher.model, "seed": exp.seeds[0], "record_dynamics": True} | _overrides(
        exp.teacher.train)
    teacher = Stage("teacher", "teacher", teacher_cfg, root=root,
                    meta={"given": exp.teacher.path, "group": "teacher", "method": "teacher", "loss": "ce",
                          "seed": exp.seeds[0], "is_teacher": True})
    stages.append(teacher)

    biases = _bias_stages(exp, base, root)
    for b in biases.values():
        stages.extend(b.deps + [b])
    several = len(biases) > 1

    def label(loss: str, bias: str | None) -> str:
        return f"{loss}-{bias}" if bias is not None and several else loss

    unc = None
    if any("difficulty" in REGISTRY[loss].needs for loss in exp.all_losses()):
        u = exp.uncertainty
        ucfg = base | {"seed": exp.seeds[0]} | _overrides(u.train)
        prune = {"method": "magnitude", "sparsity": max(u.sparsities)}
        if u.source == "snapshots":
            runs = [Stage("uncertainty-run", "uncertainty-pruning", ucfg | {
                "model": TEACHER, "compression": prune | {"snapshots": u.sparsities}}, deps=[teacher], root=root)]
        elif u.source == "runs":
            runs = [Stage("uncertainty-run", f"uncertainty-pruning-{s:.2f}", ucfg | {
                "model": TEACHER, "compression": prune | {"sparsity": s}}, deps=[teacher], root=root)
                for s in u.sparsities]
        else:
            runs = []
        stages.extend(runs)
        params = {"source": u.source} | ({"stat": u.stat} if u.source == "dynamics" else {"sparsities": u.sparsities})
        unc = Stage("uncertainty", "uncertainty", ucfg | {"model": TEACHER},
                    deps=runs or [teacher], root=root, params=params)
        stages.append(unc)

    # debiased teachers: the study's teacher recipe with their own loss (their teacher targets, if
    # the loss has any, are the study's teacher: self-distillation, as Utama et al.)
    variants: dict[str, Stage] = {}
    for name, t in exp.teachers.items():
        cfg = teacher_cfg | _overrides(t.train) | {"loss": {"name": t.loss} | exp.loss_settings.get(t.loss, {}),
                                                   "inputs": {"teacher": TEACHER}}
        deps = [teacher] + ([biases[t.bias]] if t.bias is not None else [])
        variants[name] = Stage("teacher", f"teacher-{name}", cfg, deps=deps, root=root,
                               meta={"group": f"teacher-{name}", "method": "teacher", "loss": label(t.loss, t.bias),
                                     "loss_name": t.loss, "bias": t.bias, "seed": exp.seeds[0], "variant": name})

    # Seed-major; within a seed, the compressions of the study's teacher before those of a debiased
    # one (whose teacher is trained just before they need it), and every compression's vanilla (ce)
    # run first: a study stopped early still has whole tables for the seeds it reached.
    order = ["ce"] + [loss for loss in exp.all_losses() if loss != "ce"]
    models = [teacher, *variants.values()]
    all_seeds = list(dict.fromkeys(exp.seeds + [s for c in exp.compressions for s in c.seeds or []]))
    by_teacher = sorted((c for c in exp.compressions if c.start is None), key=lambda c: c.teacher is not None)

    def stack_on(first: Stage, name: str) -> None:
        """The compressions that start from `name`'s models: one stage per such model, right after it."""
        for c in (c for c in exp.compressions if c.start == name):
            settings = c.method_config().model_dump(mode="json")
            cfg = first.config | _overrides(c.train) | {"model": stage_ref(first.name), "compression": settings}
            if not METHODS[c.method].trains:
                cfg.pop("loss", None)
            tail = first.name.split("/", 1)[1]  # loss label / seed of the model it starts from
            s = Stage("compress", f"{c.name}/{tail}", cfg, deps=[first, *first.deps], root=root,
                      meta=first.meta | {"group": c.name, "method": c.method, "sparsity": settings.get("sparsity"),
                                         "start": first.name})
            stages.append(s)
            models.append(s)
            stack_on(s, c.name)

    for seed in all_seeds:
        vanilla: dict[str, Stage] = {}
        for loss, c in [(loss, c) for debiased in (False, True) for loss in order
                        for c in by_teacher if (c.teacher is not None) == debiased]:
            method = METHODS[c.method]
            seeds = c.seeds or exp.seeds
            losses = (c.losses or exp.losses) if method.trains else ["ce"]  # no training: one row...
            if seed not in seeds or loss not in losses or (not method.trains and seed != seeds[0]):  # ...one seed
                continue
            src = variants[c.teacher] if c.teacher else teacher
            if src not in stages:  # a debiased teacher, trained just before its first compression
                stages.append(src)
            uses_bias = method.trains and "bias_probs" in REGISTRY[loss].needs
            for bias in (c.bias_models or list(biases)) if uses_bias else [None]:
                provider = {"teacher": src, "uncertainty": unc, "bias": biases.get(bias),
                            "vanilla": vanilla.get(c.name)}
                deps = [src] + [provider[EXTRAS[n].stage] for n in REGISTRY[loss].needs
                                if EXTRAS[n].stage != "teacher"] if method.trains else [src]
                settings = c.method_config().model_dump(mode="json")
                ref = teacher_ref(c.teacher)
                cfg = base | {"model": c.model or ref, "seed": seed} | _overrides(c.train) | {
                    "compression": settings, "inputs": {"teacher": ref}}
                if method.trains:
                    cfg["loss"] = {"name": loss} | exp.loss_settings.get(loss, {})
                s = Stage("compress", f"{c.name}/{label(loss, bias)}/seed{seed}", cfg, deps=deps, root=root,
                          meta={"group": c.name, "method": c.method, "loss": label(loss, bias), "seed": seed,
                                "sparsity": settings.get("sparsity"), "loss_name": loss, "bias": bias,
                                "teacher_variant": c.teacher})
                stages.append(s)
                models.append(s)
                stack_on(s, c.name)
                if loss == "ce":
                    vanilla[c.name] = s
    stages.extend(v for v in variants.values() if v not in stages)  # a debiased teacher nothing compresses
    if exp.speed is not None:
        stages.append(Stage("speed", "speed", base | {"model": TEACHER}, deps=models, root=root,
                            params=exp.speed.params()))
    return stages


def resolve(stage: Stage, teacher: Stage) -> RunConfig:
    """Fill teacher placeholders and loss inputs with upstream artifact paths; validate as a RunConfig."""
    text = json.dumps(stage.config).replace(json.dumps(TEACHER), json.dumps(str(teacher.path)))
    start = stage.config.get("model")
    for d in stage.deps:
        if d.kind == "teacher" and d.meta.get("variant"):
            text = text.replace(json.dumps(teacher_ref(d.meta["variant"])), json.dumps(str(d.path)))
        if start == stage_ref(d.name):
            text = text.replace(json.dumps(start), json.dumps(str(d.path)))
    data = json.loads(text)
    source = {"teacher": "teacher", "uncertainty": "uncertainty", "bias": "bias_model", "compress": "reference_model"}
    if stage.kind == "compress" or (stage.kind == "teacher" and stage.deps):
        for d in stage.deps:
            if start == stage_ref(d.name):
                continue  # the model a stacked compression starts from, not a loss input
            data.setdefault("inputs", {})[source[d.kind]] = str(d.output)
    data["output_dir"] = str(stage.path)
    try:
        return RunConfig.model_validate(data)
    except Exception as e:  # noqa: BLE001 -- pydantic's error, one line naming the stage
        msg = error_lines(e) if hasattr(e, "errors") else str(e)
        raise UserError(f"stage {stage.name}: {msg}") from None


# ---------------------------------------------------------------- checks and external digests


def _root_model(stage: Stage) -> str:
    """The model folder (or teacher placeholder) a stage's chain of stacked compressions starts from."""
    model = stage.config["model"]
    while is_stage_ref(model):
        stage = next(d for d in stage.deps if stage_ref(d.name) == model)
        model = stage.config["model"]
    return model


def _data_key(cfg: RunConfig) -> str:
    return digest(cfg.data_args().model_dump(mode="json"))


def check_plan(exp: Experiment, stages: list[Stage], where: str | Path) -> None:
    """Validate every stage before any work and fill each stage's external digests (data, models)."""
    teacher = stages[0]
    check_writable(Path(exp.output_dir))
    task = load_task(exp.task)
    model_cache: dict[str, str] = {}

    def model_input(name: str) -> str:
        if name not in model_cache:
            folder = resolve_model_dir(name)
            check_model_dir(folder)
            family_of(load_arch(folder))
            have = model_labels(folder)
            if have and have != task.labels:
                raise UserError(f"{where}: {name}: a classifier over {have}, but task {task.name!r} has labels "
                                f"{task.labels} (start from its encoder, or use a model fine-tuned on this task)")
            model_cache[name] = model_digest(folder)
        return model_cache[name]

    data_cache: dict[str, tuple[str, int, int]] = {}

    def data_input(cfg: RunConfig, needs_train: bool) -> tuple[str, int, int]:
        """(digest, training examples, eval examples) of a stage's data."""
        k = _data_key(cfg) + str(needs_train)
        if k not in data_cache:
            args: DataArgs = cfg.data_args()
            evals = load_eval_splits(args, task)
            parts = [s.digest() for s in evals.values()]
            n_train = 0
            if needs_train:
                train = load_train_split(args, task)
                parts.append(train.digest())
                n_train = len(train)
            data_cache[k] = (digest(parts), n_train, sum(len(s) for s in evals.values()))
        return data_cache[k]

    if exp.teacher.path and not Path(exp.teacher.path).expanduser().exists():
        raise UserError(f"{where}: teacher.path {exp.teacher.path}: not found; fine-tune it first (its config: "
                        "configs/teacher-*.yaml) or drop teacher.path to train it in the study")
    teacher_arch = load_arch(resolve_model_dir(exp.teacher.path or exp.teacher.model))
    if exp.uncertainty.source == "dynamics" and any(s.kind == "uncertainty" for s in stages):
        given = Path(exp.teacher.path).expanduser() if exp.teacher.path else None
        if given is not None and not (given / "dynamics.parquet").is_file():
            raise UserError(f"{where}: uncertainty.source dynamics: the given teacher {exp.teacher.path} recorded "
                            "no training dynamics (dynamics.parquet)")
        t = RunConfig.model_validate(read_yaml(given / "run_config.yaml")) if given is not None else resolve(
            teacher, teacher)
        if not t.max_steps and t.epochs < 2:
            raise UserError(f"{where}: uncertainty.source dynamics needs the teacher to see each example at least "
                            f"twice (teacher epochs {t.epochs} < 2)")
    have = available_eval_splits(task, exp.defaults.data_dir, exp.defaults.source or "local")
    for name, b in exp.named_bias_models().items():
        if b.easy_hard_split not in have:
            key = "bias_model" if exp.bias_model is not None else f"bias_models.{name}"
            raise UserError(f"{where}: {key}.easy_hard_split {b.easy_hard_split!r} is not an eval split available "
                            f"for task {task.name!r} (have {have})")
    # the task's resolved spec (a custom task file's alpha, ood_combine, label sets, ...) is an input
    # of every stage: the name alone would not change when the file does
    # (non-default fields only: a field added to the spec later, at its default, keeps every key)
    task_key = digest(task.model_dump(mode="json", exclude_defaults=True))
    for s in stages:
        if s.kind == "teacher" and s.meta.get("given"):
            s.external = {"model": model_input(s.meta["given"])}
            continue
        cfg = resolve(s, teacher)
        if s.kind == "speed":
            passes = 1 + len(s.params.get("runtimes") or [])
            s.work = {"infer": (s.params["repeats"] + 1) * s.params["examples"] * len(s.deps) * passes}
            s.external = {"task": task_key}
            continue
        method = METHODS[cfg.compression.method] if cfg.compression is not None else None
        trains = method is None or method.trains
        reads = method is None or method.reads_training_data()
        data, n_train, n_eval = data_input(cfg, needs_train=reads or s.kind == "uncertainty")
        ext = {"data": data, "task": task_key}
        if s.kind == "uncertainty":
            n_models = {"runs": len(s.deps), "dynamics": 0}.get(s.params["source"], len(s.params.get("sparsities", [])))
            s.work = {"infer": n_train * n_models}
        else:
            steps = cfg.max_steps * cfg.batch_size if cfg.max_steps else n_train * cfg.epochs
            s.work = {"train": steps if trains else 0, "infer": n_eval}
            if method is not None:  # what a method processes itself (Fisher's gradients and rescaling)
                arch_layers = getattr(teacher_arch, family_of(teacher_arch).n_layers_key, 12)
                for k, v in method(cfg.compression).extra_work(n_train, arch_layers).items():
                    s.work[k] = s.work.get(k, 0) + v
        start = _root_model(s)
        if not is_teacher_ref(start) and not is_stage_ref(s.config["model"]):
            ext["model"] = model_input(start)  # a stacked stage's start is a stage: its key is in the deps
        arch = teacher_arch if is_teacher_ref(start) else load_arch(resolve_model_dir(start))
        try:
            check_max_length(arch, cfg.max_length, f"stage {s.name}")
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        if cfg.compression is not None:
            try:
                METHODS[cfg.compression.method](cfg.compression).check(arch)
            except UserError as e:
                raise UserError(f"{where}: stage {s.name}: {e}") from None
        s.external = ext
