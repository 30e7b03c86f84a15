"""`shrink`: a user's fine-tuned model to one `speedup`x faster on a named runtime that is no less
robust, written as an ordinary study so that it is cached, resumable, sharded and reproducible
(`robust-compress reproduce OUT/shrink.yaml` reruns it; a user may edit the file and rerun).

The recipe: bias models (`auto`: the task's known biases, else a `shallow` one that needs none);
structured pruning of heads and FFN neurons priced by the runtime's measured latency, from the
retraining-free Fisher start (`init: fisher`); recovery on the training pairs with a loss that
reads the first bias model (default `conf_reg`: distillation from the user's model, its targets
scaled down where the bias model is confident); then every set, each bias model's easy/hard split
and speed on the runtime, for the verdict (`report/shrink.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..data.tasks import BUILTIN, load_task
from ..io import UserError, check_apart, claim_output, own_dir, owned, write_yaml
from ..settings.losses import LOSS_SETTINGS
from ..settings.methods import RUNTIMES

# which bias-only models a built-in task's known biases have (docs/paper.md): NLI's hypothesis-only
# and lexical-overlap biases, FEVER's claim-only bias, QQP/PAWS's word overlap
KNOWN_BIASES: dict[str, tuple[str, ...]] = {
    "mnli": ("partial", "overlap"),
    "fever": ("partial",),
    "qqp": ("overlap",),
}
STUDY_FILE = "shrink.yaml"


class ShrinkOptions(BaseModel):
    """What `shrink` was asked for; every field lands in the study file it writes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str
    task: str = "mnli"
    speedup: float = Field(2.0, gt=1, le=20)
    runtime: str = "onnxruntime-fp32"
    bias: list[str] = Field(default_factory=lambda: ["auto"])
    loss: str = "conf_reg"
    seeds: list[int] = Field(default_factory=lambda: [42, 43, 44], min_length=1)
    epochs: float = Field(1.0, gt=0)
    train_limit: int | None = Field(None, ge=1)
    eval_limit: int | None = Field(None, ge=1)
    bias_encoder: str | None = None
    debias_teacher: bool = Field(
        False,
        description="first fine-tune the model further with conf_reg on the first bias model "
        "(self-distillation, Utama et al. 2020), then shrink that debiased teacher",
    )
    data_dir: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str) -> str:
        if v not in RUNTIMES:
            raise ValueError(f"runtime {v!r} is not one of {list(RUNTIMES)}")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        if v not in LOSS_SETTINGS:
            raise ValueError(f"loss {v!r} is not one of {sorted(LOSS_SETTINGS)}")
        return v


def bias_kinds(opts: ShrinkOptions) -> list[str]:
    """The bias models' kinds: `auto` is the task's known biases, or `shallow` for a task without
    any (a user's YAML task)."""
    if opts.bias == ["auto"]:
        task = load_task(opts.task)
        return list(KNOWN_BIASES.get(task.name, ())) if opts.task in BUILTIN else ["shallow"]
    unknown = [b for b in opts.bias if b not in ("partial", "overlap", "shallow")]
    if unknown or not opts.bias or len(set(opts.bias)) < len(opts.bias):
        raise UserError(
            f"--bias {','.join(opts.bias)}: give `auto` or distinct kinds among partial, overlap, "
            "shallow"
        )
    return list(opts.bias)


def study_spec(opts: ShrinkOptions, out: Path, teacher: Path | None = None) -> dict[str, Any]:
    """The study a shrink runs, as the data of an experiment file (absolute paths: the file works
    from any directory). `teacher`: the user's model evaluated on the study's sets (default: the
    model itself)."""
    model = str(Path(opts.model).expanduser().resolve())
    task = opts.task if opts.task in BUILTIN else str(Path(opts.task).resolve())
    id_split = next(n for n, s in load_task(opts.task).splits.items() if s.role == "id")
    encoder = str(Path(opts.bias_encoder).resolve()) if opts.bias_encoder else model
    biases: dict[str, Any] = {}
    for kind in bias_kinds(opts):
        spec: dict[str, Any] = {"kind": kind, "easy_hard_split": id_split}
        if kind != "overlap":
            spec["model"] = encoder
        if kind == "overlap":
            spec["features"] = "literature"
        biases[kind] = spec
    first = next(iter(biases))
    needs_bias = "bias_probs" in LOSS_SETTINGS[opts.loss].needs
    defaults: dict[str, Any] = {
        "epochs": opts.epochs,
        "train_limit": opts.train_limit,
        "eval_limit": opts.eval_limit,
    }
    if opts.data_dir:
        defaults["data_dir"] = str(Path(opts.data_dir).resolve())
    name = f"shrunk-{opts.speedup:g}x"
    return {
        "name": f"shrink-{Path(model).name}",
        "task": task,
        "output_dir": str((out / "study").resolve()),
        "seeds": list(opts.seeds),
        "defaults": defaults | opts.settings,
        "teacher": {"model": model, "path": str(Path(teacher).resolve()) if teacher else model},
        "bias_models": biases,
        "compressions": [
            {
                "name": name,
                "method": "structured",
                "settings": {
                    "target_speedup": opts.speedup,
                    "target_runtime": opts.runtime,
                    "init": "fisher",
                },
            }
            | ({"bias_models": [first]} if needs_bias else {})
            | ({"teacher": "debiased"} if opts.debias_teacher else {})
        ],
        "losses": [opts.loss],
        **(
            {"teachers": {"debiased": {"loss": "conf_reg", "bias": first}}}
            if opts.debias_teacher
            else {}
        ),
        "speed": {"runtimes": sorted({opts.runtime, "pytorch-fp32"})},
    }


def write_study(
    opts: ShrinkOptions, out: Path, inputs: list[tuple[Path, str]], teacher: Path | None = None
) -> Path:
    """Claim `out` and write the study file into it; returns its path. A folder a shrink wrote
    before is resumed (the same options give the same stages, which are reused); any other
    non-empty folder, an input or a folder inside one is refused."""
    check_apart(out, inputs)
    if not (owned(out) and (out / STUDY_FILE).is_file()):
        claim_output(out, inputs, overwrite=False, folder=True)
    own_dir(out)
    path = out / STUDY_FILE
    write_yaml(path, study_spec(opts, out, teacher))
    return path
