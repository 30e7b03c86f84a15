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

from transformers import AutoConfig

from ..compress import METHODS
from ..config import RunConfig, error_lines
from ..data.load import DataArgs, available_eval_splits, load_eval_splits, load_train_split
from ..data.tasks import load_task
from ..io import UserError, check_writable, digest, read_yaml
from ..models.families import family_of
from ..models.load import check_model_dir, label_order, model_digest, resolve_model_dir
from ..train.extras import EXTRAS
from ..train.losses import REGISTRY
from .spec import Experiment

TEACHER = "<teacher>"
KEY_VERSION = 2  # bump when a stage's artifact changes meaning for the same inputs


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
        if self.kind == "teacher" and self.meta.get("given"):
            return Path(self.meta["given"])
        suffix = {"uncertainty": ".parquet", "speed": ".json"}.get(self.kind, "")
        return self.root / "artifacts" / f"{self.kind}-{self.key}{suffix}"

    @property
    def snapshot_dir(self) -> Path:
        return self.path.with_name(self.path.name + "-snapshots")

    @property
    def record(self) -> Path:
        """stage.json: provenance (code version, device, seconds) of a finished stage."""
        if self.kind in ("uncertainty", "speed"):
            return self.path.with_name(self.path.stem + ".stage.json")
        return self.path / "stage.json"

    def done(self) -> bool:
        if self.kind in ("uncertainty", "speed"):
            return self.path.is_file()
        if self.kind == "uncertainty-run" and self.config.get("compression", {}).get("snapshots"):
            return (self.path / "summary.json").is_file() and self.snapshot_dir.is_dir()
        return (self.path / "summary.json").is_file()


def _base(exp: Experiment) -> dict[str, Any]:
    return {"task": exp.task} | _overrides(exp.defaults) | ({"trackers": exp.trackers} if exp.trackers else {})


def _overrides(o) -> dict[str, Any]:
    """The fields an override sets, an explicit null included (`train_limit: null`: the whole split)."""
    return o.model_dump(exclude_unset=True)


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
                          "seed": exp.seeds[0]})
    stages.append(teacher)

    bias = None
    if exp.bias_model is not None:
        b = exp.bias_model
        bcfg = base | {"model": b.model or exp.teacher.model, "seed": exp.seeds[0]} | _overrides(b.train)
        bias = Stage("bias", f"bias-{b.kind}", bcfg, root=root, params={"split": b.easy_hard_split, "kind": b.kind})
        stages.append(bias)

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

    # Seed-major, and within a seed every compression's vanilla (ce) run first: a study stopped
    # early still has whole tables for the seeds it reached.
    order = ["ce"] + [loss for loss in exp.all_losses() if loss != "ce"]
    models = [teacher]
    for seed in exp.seeds:
        vanilla: dict[str, Stage] = {}
        for loss in order:
            for c in exp.compressions:
                method = METHODS[c.method]
                losses = (c.losses or exp.losses) if method.trains else ["ce"]  # no training: one row...
                if loss not in losses or (not method.trains and seed != exp.seeds[0]):  # ...and one seed
                    continue
                provider = {"teacher": teacher, "uncertainty": unc, "bias": bias, "vanilla": vanilla.get(c.name)}
                deps = [teacher] + [provider[EXTRAS[n].stage] for n in REGISTRY[loss].needs
                                    if EXTRAS[n].stage != "teacher"] if method.trains else [teacher]
                settings = c.method_config().model_dump(mode="json")
                cfg = base | {"model": c.model or TEACHER, "seed": seed} | _overrides(c.train) | {
                    "compression": settings, "inputs": {"teacher": TEACHER}}
                if method.trains:
                    cfg["loss"] = {"name": loss} | exp.loss_settings.get(loss, {})
                s = Stage("compress", f"{c.name}/{loss}/seed{seed}", cfg, deps=deps, root=root,
                          meta={"group": c.name, "method": c.method, "loss": loss, "seed": seed,
                                "sparsity": settings.get("sparsity")})
                stages.append(s)
                models.append(s)
                if loss == "ce":
                    vanilla[c.name] = s
    if exp.speed is not None:
        stages.append(Stage("speed", "speed", base | {"model": TEACHER}, deps=models, root=root,
                            params=exp.speed.model_dump()))
    return stages


def resolve(stage: Stage, teacher: Stage) -> RunConfig:
    """Fill placeholders with upstream artifact paths and validate as a RunConfig."""
    data = json.loads(json.dumps(stage.config).replace(json.dumps(TEACHER), json.dumps(str(teacher.path))))
    source = {"teacher": "teacher", "uncertainty": "uncertainty", "bias": "bias_model", "compress": "reference_model"}
    if stage.kind == "compress":
        for d in stage.deps:
            data.setdefault("inputs", {})[source[d.kind]] = str(d.path)
    data["output_dir"] = str(stage.path)
    try:
        return RunConfig.model_validate(data)
    except Exception as e:  # noqa: BLE001 -- pydantic's error, one line naming the stage
        msg = error_lines(e) if hasattr(e, "errors") else str(e)
        raise UserError(f"stage {stage.name}: {msg}") from None


# ---------------------------------------------------------------- checks and external digests


def _data_key(cfg: RunConfig) -> str:
    return digest(cfg.data_args().model_dump(mode="json"))


def check_plan(exp: Experiment, stages: list[Stage], where: str | Path) -> None:
    """Validate every stage before any work and fill each stage's external digests (data, models)."""
    teacher = stages[0]
    check_writable(Path(exp.output_dir))
    task = load_task(exp.task)
    model_cache: dict[str, str] = {}

    def model_input(name: str, label_map: dict[str, str] | None) -> str:
        if name not in model_cache:
            folder = resolve_model_dir(name)
            check_model_dir(folder)
            family_of(AutoConfig.from_pretrained(folder))
            try:  # a classifier's labels, matched by name or the label_map setting
                label_order(folder, task.labels, label_map)
            except UserError as e:
                raise UserError(f"{where}: {e} (task {task.name!r})") from None
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
    teacher_arch = AutoConfig.from_pretrained(resolve_model_dir(exp.teacher.path or exp.teacher.model))
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
    if exp.bias_model is not None and exp.bias_model.easy_hard_split not in available_eval_splits(
            task, exp.defaults.data_dir, exp.defaults.source or "local"):
        raise UserError(f"{where}: bias_model.easy_hard_split {exp.bias_model.easy_hard_split!r} is not an eval "
                        f"split available for task {task.name!r}")
    for s in stages:
        if s.kind == "teacher" and s.meta.get("given"):
            s.external = {"model": model_input(s.meta["given"], resolve(s, teacher).label_map)}
            continue
        cfg = resolve(s, teacher)
        if s.kind == "speed":
            s.work = {"infer": (s.params["repeats"] + 1) * s.params["examples"] * len(s.deps)}
            continue
        trains = cfg.compression is None or METHODS[cfg.compression.method].trains
        data, n_train, n_eval = data_input(cfg, needs_train=trains or s.kind == "uncertainty")
        ext = {"data": data}
        if s.kind == "uncertainty":
            n_models = {"runs": len(s.deps), "dynamics": 0}.get(s.params["source"], len(s.params.get("sparsities", [])))
            s.work = {"infer": n_train * n_models}
        else:
            steps = cfg.max_steps * cfg.batch_size if cfg.max_steps else n_train * cfg.epochs
            s.work = {"train": steps if trains else 0, "infer": n_eval}
        start = s.config["model"]
        if start != TEACHER:
            ext["model"] = model_input(start, cfg.label_map)
        if cfg.compression is not None:
            arch = teacher_arch if start == TEACHER else AutoConfig.from_pretrained(resolve_model_dir(start))
            try:
                METHODS[cfg.compression.method](cfg.compression).check(arch)
            except UserError as e:
                raise UserError(f"{where}: stage {s.name}: {e}") from None
        s.external = ext
