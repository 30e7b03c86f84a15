"""The one training loop (accelerate): fine-tuning and every compression run go through it.

Compression methods plug in as `Hook`s (mask updates after an optimizer step, finalization
before saving); objectives plug in as a `Loss` module, with live inputs (`train.extras.Live`, a
frozen teacher) computed on each batch before the loss sees it. Checkpoints are accelerate's
`save_state` (model, loss parameters, optimizer, scheduler, and every RNG: python, numpy, torch,
CUDA) plus the step, written atomically, so a killed run resumes exactly, on a GPU too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from ..data.batching import Collator, EncodedSplit, LengthGroupedSampler
from ..io import UserError, disk_errors, log, publish, read_json, write_json
from ..models.infer import model_inputs
from ..settings.train import TrainArgs
from .losses import Loss


class Hook:
    """Extension points of the loop; the default does nothing."""

    def on_train_begin(self, model: torch.nn.Module, total_steps: int) -> None: ...
    def on_step_end(self, model: torch.nn.Module, step: int) -> None: ...
    def on_train_end(self, model: torch.nn.Module) -> None: ...


@dataclass
class TrainResult:
    steps: int
    examples_per_s: float
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per logging window
    resumed_from: int = 0
    dynamics: np.ndarray | None = None  # [seen, 4]: row, epoch, loss, p(gold) (record_dynamics)


Progress = Callable[[dict[str, Any]], None]


def make_accelerator(args: TrainArgs, log_dir: Path | None = None) -> Accelerator:
    # One process may run several stages with different precision / accumulation (a study, a
    # benchmark); accelerate keeps these in singletons, so start each run from a clean state.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    # split_batches: batch_size is the global batch, so results do not depend on the process count.
    acc = Accelerator(
        mixed_precision="bf16" if args.bf16 else "no",
        gradient_accumulation_steps=args.grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        cpu=not torch.cuda.is_available(),
        log_with=list(args.trackers) or None,
        project_dir=str(log_dir) if log_dir else None,
    )
    if "mlflow" in args.trackers:
        _mlflow_store(Path(log_dir or "runs/run.logs").parent)
    if args.trackers:
        # TensorBoard's hparams take int/float/str/bool only (None and lists fail): the rest as text
        config = {
            k: v if isinstance(v, int | float | str | bool) else json.dumps(v)
            for k, v in args.model_dump(mode="json").items()
        }
        acc.init_trackers(Path(log_dir or "runs").name, config=config)
    return acc


def _mlflow_store(folder: Path) -> None:
    """$MLFLOW_TRACKING_URI, else a SQLite store beside the runs (MLflow's default is a database in
    the working directory; a study's runs share one). Set for every run: one process may run
    several."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)


def steps_per_epoch(n_examples: int, args: TrainArgs) -> int:
    return max(1, math.ceil(n_examples / args.batch_size) // args.grad_accum)


def total_steps(n_examples: int, args: TrainArgs) -> int:
    return args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch(n_examples, args)))


def _optimizer(
    params: list[tuple[str, torch.nn.Parameter]], args: TrainArgs
) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in params:
        if p.requires_grad:
            (
                no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay
            ).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
    )


def _save_checkpoint(
    ckpt: Path,
    accelerator: Accelerator,
    step: int,
    dynamics: list[np.ndarray],
    run: dict[str, Any] | None,
) -> None:
    """accelerate's save_state into a temporary folder (every process writes its RNG state there),
    then one rename: a checkpoint is complete or absent. It records which run wrote it (`run`), so a
    resume never continues another run's steps."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        with disk_errors(tmp):
            accelerator.save_state(output_dir=str(tmp), safe_serialization=True)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                write_json(tmp / "loop_state.json", {"step": step})
                write_json(tmp / RUN_FILE, run or {})
                if dynamics:
                    save_file(
                        {"dynamics": torch.from_numpy(np.concatenate(dynamics))},
                        str(tmp / "dynamics.safetensors"),
                    )
                write_json(tmp / DONE_FILE, {"files": _files_of(tmp)})  # last: the whole of it
                publish(tmp, is_dir=True)  # the umask's permissions, like every artifact (not 0600)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        old = ckpt.with_name(ckpt.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ckpt.exists():
            os.replace(ckpt, old)
        os.replace(tmp, ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


RUN_FILE = "run.json"
DONE_FILE = "complete.json"  # a checkpoint's completion record: each file and its size, last
RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def _files_of(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checkpoint_debris(ckpt: Path) -> str | None:
    """Why the folder `ckpt` is not a whole checkpoint; None when it is one (or there is none).
    The rename makes a checkpoint whole or absent, so a part of one is what a removal cut short
    left behind (a kill during the cleanup after the artifact's rename, or during the removal of an
    unreadable checkpoint): its completion record, or a file the record lists, is gone. (A file
    there but damaged is `_load_checkpoint`'s to refuse.) A checkpoint from before completion
    records counts as whole while it holds its step and run."""
    if not ckpt.is_dir():
        return None
    if not (ckpt / DONE_FILE).is_file():
        if (ckpt / "loop_state.json").is_file() and (ckpt / RUN_FILE).is_file():
            return None
        return f"no completion record ({DONE_FILE})"
    try:
        files, have = read_json(ckpt / DONE_FILE)["files"], _files_of(ckpt)
        gone = [n for n in files if n not in have]
    except Exception as e:  # noqa: BLE001 -- a record cut short or foreign: the same answer
        return f"unreadable {DONE_FILE} ({type(e).__name__})"
    return f"{gone[0]} is missing" if gone else None


def clear_debris(ckpt: Path) -> bool:
    """Remove a part of a checkpoint (`checkpoint_debris`): the run starts over instead of being
    refused on every rerun. True if there was one."""
    why = checkpoint_debris(ckpt)
    if why is None:
        return False
    shutil.rmtree(ckpt, ignore_errors=True)
    log.warning(f"{ckpt}: removed, not a whole checkpoint ({why}): the run starts over")
    return True


def _differences(mine: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(mine) | set(theirs)):
        a, b = theirs.get(k), mine.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(b, a, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} there, {b!r} here")
    return out


def check_checkpoint(ckpt: Path, run: dict[str, Any] | None, main_process: bool = True) -> None:
    """Refuse, before loading anything, a checkpoint of another run (kept: the user decides), and
    one whose RNG states do not load (accelerate would skip them and resume with other dropout
    masks). No checkpoint: nothing to check; a part of one (`checkpoint_debris`) is removed."""
    if main_process and clear_debris(ckpt):
        return
    if not (ckpt / "loop_state.json").is_file():
        return
    if run is not None:
        theirs = read_json(ckpt / RUN_FILE) if (ckpt / RUN_FILE).is_file() else {}
        diff = (
            _differences(run, theirs)
            if theirs
            else ["it records no run settings (an older version)"]
        )
        if diff:
            raise UserError(
                f"{ckpt}: this checkpoint was written by another run ({'; '.join(diff[:3])}"
                f"{'; ...' if len(diff) > 3 else ''}): rerun with that run's settings to resume "
                "it, or pass --no-resume to start over (the checkpoint is kept until then)"
            )
    for rng in sorted(ckpt.glob("random_states_*.pkl")) or [ckpt / "random_states_0.pkl"]:
        _check_rng(rng, ckpt, main_process)


def _check_rng(rng: Path, ckpt: Path, main_process: bool) -> None:
    from accelerate.utils import load

    try:
        states = load(rng)  # weights_only: nothing in it runs
        if not isinstance(states, dict) or any(k not in states for k in RNG_KEYS):
            raise ValueError(f"missing {[k for k in RNG_KEYS if k not in (states or {})]}")
    except Exception as e:  # noqa: BLE001 -- missing, truncated or foreign: the same answer
        if main_process:
            shutil.rmtree(ckpt, ignore_errors=True)
        raise UserError(
            f"{rng}: unreadable RNG state ({type(e).__name__}: {str(e).splitlines()[0][:120]}): "
            "the run cannot resume exactly; the checkpoint was removed: run again to start over"
        ) from None


def _load_checkpoint(
    ckpt: Path,
    accelerator: Accelerator,
    dynamics: list[np.ndarray],
    run: dict[str, Any] | None = None,
) -> int:
    """Restore everything save_state wrote; a checkpoint that cannot be read is removed (a rerun
    then starts this run over) and reported in one line; another run's checkpoint is refused and
    kept."""
    check_checkpoint(ckpt, run, accelerator.is_main_process)
    try:
        step = int(read_json(ckpt / "loop_state.json")["step"])
        accelerator.load_state(str(ckpt))
        if (ckpt / "dynamics.safetensors").is_file():
            dynamics.append(load_file(str(ckpt / "dynamics.safetensors"))["dynamics"].numpy())
    except Exception as e:  # noqa: BLE001 -- any unreadable part: the run cannot continue from it
        if accelerator.is_main_process:
            shutil.rmtree(ckpt, ignore_errors=True)
        raise UserError(
            f"{ckpt}: unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "it was removed: run again to start over"
        ) from None
    return step


def loss_on_batch(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    batch: dict[str, Any],
    live: dict[str, Callable[[dict], Any]] | None = None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[Any, torch.Tensor]:
    """The model's output and the loss on one batch: the student's hidden states the loss declares
    (`needs_hidden`: False, "cls" or "layers") and its live inputs (put into the batch)."""
    wants = getattr(
        getattr(loss_fn, "module", loss_fn), "needs_hidden", False
    )  # accelerate may wrap it
    out = model(**model_inputs(model, batch), output_hidden_states=bool(wants))
    hidden = (
        None
        if not wants
        else out.hidden_states
        if wants == "layers"
        else out.hidden_states[-1][:, 0]
    )
    if live:
        with autocast():
            batch.update({name: fn(batch) for name, fn in live.items()})
    return out, loss_fn(out.logits, batch, hidden)


def train(
    model: torch.nn.Module,
    data: EncodedSplit,
    args: TrainArgs,
    loss_fn: Loss,
    work_dir: Path,
    hooks: list[Hook] | None = None,
    resume: bool = True,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    run: dict[str, Any] | None = None,
    live: dict[str, Callable[[dict], Any]] | None = None,
) -> TrainResult:
    """Train `model` in place. `live`: name -> function of a batch, put into the batch before the
    loss (a frozen teacher's hidden states), under the run's autocast. `work_dir/checkpoint` is
    written periodically and resumed from, only by the run it records (`run`: everything that makes
    this run this run, JSON-able). `progress(event)` receives {"step", "total", "loss",
    "examples_per_s", "epoch"} every 10 steps. A non-finite loss stops the run (UserError): nothing
    of it is worth saving."""
    hooks = hooks or []
    accelerator = accelerator or make_accelerator(args)
    set_seed(args.seed)
    if args.batch_size % accelerator.num_processes:
        raise UserError(
            f"batch_size {args.batch_size} must be divisible by {accelerator.num_processes} "
            "processes"
        )
    model, loss_fn, optimizer, loader, scheduler, loss_params, per_epoch, total = _setup(
        model, data, args, loss_fn, hooks, accelerator
    )

    ckpt = Path(work_dir) / "checkpoint"
    step = start = 0
    dynamics: list[np.ndarray] = []
    if resume and accelerator.is_main_process:
        clear_debris(ckpt)
    accelerator.wait_for_everyone()
    if resume and (ckpt / "loop_state.json").is_file():
        step = start = _load_checkpoint(ckpt, accelerator, dynamics, run)
        log.info(f"resumed from {ckpt} at step {step}/{total}")

    model.train()
    loss_fn.train()
    loop = _Loop(
        args=args,
        accelerator=accelerator,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        loss_params=loss_params,
        hooks=hooks,
        live=live or {},
        progress=progress,
        run=run,
        ckpt=ckpt,
        total=total,
        per_epoch=per_epoch,
        step=step,
        dynamics=dynamics,
        t0=time.perf_counter(),
    )
    while loop.step < total:
        loop.epoch()
    return loop.finish(start)


def _setup(
    model: torch.nn.Module,
    data: EncodedSplit,
    args: TrainArgs,
    loss_fn: Loss,
    hooks: list[Hook],
    accelerator: Accelerator,
) -> tuple[Any, Any, Any, Any, Any, list, int, int]:
    """The loader, optimizer and scheduler, prepared by accelerate (with the loss when it has
    parameters), and the steps per epoch and in all: apart from `train` so the loop reads as one."""
    sampler = LengthGroupedSampler(data.lengths, args.batch_size, seed=args.seed)
    # An own generator: creating a loader iterator must not draw from the global RNG (dropout),
    # or a resumed run would see different dropout masks than an uninterrupted one.
    loader = DataLoader(
        data,
        batch_size=args.batch_size,
        sampler=sampler,
        generator=torch.Generator(),
        collate_fn=Collator(getattr(model.config, "pad_token_id", 0) or 0),
    )
    per_epoch = steps_per_epoch(len(data), args)
    total = total_steps(len(data), args)

    for h in hooks:  # before the optimizer: a hook may re-parametrize weights (pruning masks)
        h.on_train_begin(model, total)
    loss_params = list(loss_fn.named_parameters())
    optimizer = _optimizer(
        list(model.named_parameters()) + [(f"loss.{n}", p) for n, p in loss_params], args
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    if (
        loss_params
    ):  # a loss with parameters of its own (learned-mixin) is trained and checkpointed too
        model, loss_fn, optimizer, loader, scheduler = accelerator.prepare(
            model, loss_fn, optimizer, loader, scheduler
        )
    else:
        model, optimizer, loader, scheduler = accelerator.prepare(
            model, optimizer, loader, scheduler
        )
    return model, loss_fn, optimizer, loader, scheduler, loss_params, per_epoch, total


@dataclass
class _Loop:
    """A training run between its steps: what the loop works with and what it has counted, in one
    object, so an epoch, a micro-batch and an optimizer step's bookkeeping are each a short
    method (called in the very order the one loop ran them)."""

    args: TrainArgs
    accelerator: Accelerator
    model: Any
    loss_fn: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    loss_params: list
    hooks: list[Hook]
    live: dict[str, Callable[[dict], Any]]
    progress: Progress | None
    run: dict[str, Any] | None
    ckpt: Path
    total: int
    per_epoch: int
    step: int
    dynamics: list[np.ndarray]
    t0: float
    losses: list[float] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    seen: int = 0

    def epoch(self) -> None:
        """The rest of the current epoch (a resumed run skips the batches it already did)."""
        args, accelerator = self.args, self.accelerator
        epoch, done_in_epoch = divmod(self.step, self.per_epoch)
        self.loader.set_epoch(
            epoch
        )  # accelerate's loader owns the sampler's epoch: set it, or every epoch repeats
        epoch_loader = self.loader
        if done_in_epoch:
            epoch_loader = accelerator.skip_first_batches(
                self.loader, done_in_epoch * args.grad_accum
            )
            epoch_loader.set_epoch(epoch)
        micro = 0
        for batch in epoch_loader:
            self.micro_step(batch, epoch)
            micro += 1
            if micro % args.grad_accum:
                continue
            self.step += 1
            self.step_end(epoch)
            if self.step >= self.total or micro // args.grad_accum >= self.per_epoch:
                break

    def micro_step(self, batch: dict[str, Any], epoch: int) -> None:
        """Forward, backward and (when the accumulation is complete) the optimizer step on one
        micro-batch; a non-finite loss stops the run."""
        accelerator = self.accelerator
        with accelerator.accumulate(self.model):
            out, loss = loss_on_batch(
                self.model, self.loss_fn, batch, self.live, accelerator.autocast
            )
            if self.args.record_dynamics:
                self.dynamics.append(_dynamics(out.logits, batch, epoch, accelerator))
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(
                    list(self.model.parameters()) + [p for _, p in self.loss_params], 1.0
                )
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        value = loss.detach().float().item()
        if not math.isfinite(value):
            raise UserError(
                f"step {self.step + 1}: the training loss is not finite ({value}) with lr "
                f"{self.args.lr}: the run diverged and is stopped; nothing was saved (lower lr, or "
                "check the data)"
            )
        self.window.append(value)
        self.seen += batch["labels"].shape[0] * accelerator.num_processes

    def step_end(self, epoch: int) -> None:
        """After an optimizer step: the hooks, the logging window every 10 steps, a checkpoint
        every `checkpoint_every`."""
        for h in self.hooks:
            h.on_step_end(self.accelerator.unwrap_model(self.model), self.step)
        if self.step % 10 == 0 or self.step == self.total:
            self.log_window(epoch)
        if self.step % self.args.checkpoint_every == 0 and self.step < self.total:
            _save_checkpoint(self.ckpt, self.accelerator, self.step, self.dynamics, self.run)

    def log_window(self, epoch: int) -> None:
        """The mean loss of the steps since the last report, to `progress` and the trackers."""
        self.losses.append(sum(self.window) / len(self.window))
        self.window = []
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        if self.progress is not None and self.accelerator.is_local_main_process:
            self.progress(
                {
                    "step": self.step,
                    "total": self.total,
                    "loss": self.losses[-1],
                    "examples_per_s": rate,
                    "epoch": epoch,
                }
            )
        if self.args.trackers:
            self.accelerator.log(
                {"train/loss": self.losses[-1], "train/examples_per_s": rate}, step=self.step
            )

    def finish(self, start: int) -> TrainResult:
        """End the trackers, close the last logging window and let the hooks finalize the model."""
        if self.args.trackers:
            self.accelerator.end_training()
        if self.window:
            self.losses.append(sum(self.window) / len(self.window))
        seconds = time.perf_counter() - self.t0
        unwrapped = self.accelerator.unwrap_model(self.model)
        for h in self.hooks:
            h.on_train_end(unwrapped)
        return TrainResult(
            steps=self.step,
            examples_per_s=self.seen / max(seconds, 1e-9),
            seconds=seconds,
            losses=self.losses,
            resumed_from=start,
            dynamics=np.concatenate(self.dynamics) if self.dynamics else None,
        )


@torch.no_grad()
def _dynamics(
    logits: torch.Tensor, batch: dict, epoch: int, accelerator: Accelerator
) -> np.ndarray:
    """[batch, 4]: row, epoch, CE loss and p(gold) of each example, from the logits the step
    computed anyway (training mode, as cartography records them); gathered from every process."""
    labels = batch["labels"]
    log_p = F.log_softmax(logits.detach().float(), -1).gather(1, labels[:, None]).squeeze(1)
    rows = torch.stack(
        [
            batch["row"].double(),
            torch.full_like(log_p, epoch, dtype=torch.float64),
            -log_p.double(),
            log_p.exp().double(),
        ],
        1,
    )
    return accelerator.gather(rows).cpu().numpy()
