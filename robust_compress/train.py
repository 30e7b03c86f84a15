"""The one training loop (accelerate): fine-tuning and every compression run go through it.

Compression methods plug in as `Hook`s (mask updates after an optimizer step, finalization
before saving); objectives plug in as a loss(logits, batch). Checkpoints hold the model
(safetensors), optimizer, scheduler, step and RNG state, so a killed run resumes exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .batching import Collator, EncodedSplit, LengthGroupedSampler
from .config import RunConfig
from .io import atomic_dir, write_json
from .losses import LossFn


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


def make_accelerator(cfg: RunConfig) -> Accelerator:
    from accelerate import DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState

    # One process may run several stages with different precision / accumulation (a study, a
    # benchmark); accelerate keeps these in singletons, so start each run from a clean state.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    # split_batches: cfg.batch_size is the global batch, so results do not depend on the process count.
    acc = Accelerator(mixed_precision="bf16" if cfg.bf16 else "no", gradient_accumulation_steps=cfg.grad_accum,
                      dataloader_config=DataLoaderConfiguration(split_batches=True),
                      cpu=not torch.cuda.is_available(), log_with=list(cfg.trackers) or None,
                      project_dir=str(Path(cfg.output_dir).with_name(Path(cfg.output_dir).name + ".logs")))
    if cfg.trackers:
        acc.init_trackers(Path(cfg.output_dir).name, config=cfg.model_dump(mode="json", exclude={"compression", "loss"}))
    return acc


def _optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def _save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, accelerator: Accelerator) -> None:
    if not accelerator.is_main_process:
        return
    state = {k: v.detach().contiguous().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    with atomic_dir(folder) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                    "rng": torch.get_rng_state()}, tmp / "trainer_state.pt")


def _load_checkpoint(folder: Path, model, optimizer, scheduler, accelerator: Accelerator) -> int:
    accelerator.unwrap_model(model).load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    state = torch.load(folder / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def train(model: torch.nn.Module, data: EncodedSplit, cfg: RunConfig, loss_fn: LossFn, work_dir: Path,
          hooks: list[Hook] | None = None, resume: bool = True,
          accelerator: Accelerator | None = None) -> TrainResult:
    """Train `model` in place. `work_dir/checkpoint` is written periodically and resumed from."""
    hooks = hooks or []
    accelerator = accelerator or make_accelerator(cfg)
    set_seed(cfg.seed)
    if cfg.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by {accelerator.num_processes} processes")

    sampler = LengthGroupedSampler(data.lengths, cfg.batch_size, seed=cfg.seed)
    # An own generator: creating a loader iterator must not draw from the global RNG (dropout),
    # or a resumed run would see different dropout masks than an uninterrupted one.
    loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, generator=torch.Generator(),
                        collate_fn=Collator(getattr(model.config, "pad_token_id", 0) or 0))
    batches_per_epoch = math.ceil(len(data) / cfg.batch_size)
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))

    for h in hooks:  # before the optimizer: a hook may re-parametrize weights (pruning masks)
        h.on_train_begin(model, total)
    optimizer = _optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    ckpt = Path(work_dir) / "checkpoint"
    step = 0
    if resume and (ckpt / "trainer_state.pt").is_file():
        step = _load_checkpoint(ckpt, model, optimizer, scheduler, accelerator)
        accelerator.print(f"resumed from {ckpt} at step {step}/{total}")

    model.train()
    losses: list[float] = []
    window: list[float] = []
    seen, t0 = 0, time.perf_counter()
    bar = tqdm(total=total, initial=step, disable=not accelerator.is_local_main_process, desc="train",
               unit="step", dynamic_ncols=True)
    while step < total:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        epoch_loader = loader
        if done_in_epoch:
            epoch_loader = accelerator.skip_first_batches(loader, done_in_epoch * cfg.grad_accum)
        micro = 0
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
                logits = model(**inputs).logits
                loss = loss_fn(logits, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(loss.detach().float().item())
            seen += batch["labels"].shape[0] * accelerator.num_processes
            micro += 1
            if micro % cfg.grad_accum:
                continue
            step += 1
            for h in hooks:
                h.on_step_end(accelerator.unwrap_model(model), step)
            if step % 10 == 0 or step == total:
                losses.append(sum(window) / len(window))
                window = []
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", ex_s=f"{rate:.1f}", epoch=epoch)
                if cfg.trackers:
                    accelerator.log({"train/loss": losses[-1], "train/examples_per_s": rate}, step=step)
            bar.update(1)
            if step % cfg.checkpoint_every == 0 and step < total:
                _save_checkpoint(ckpt, model, optimizer, scheduler, step, accelerator)
                accelerator.wait_for_everyone()
            if step >= total or micro // cfg.grad_accum >= steps_per_epoch:
                break
    bar.close()
    if cfg.trackers:
        accelerator.end_training()
    if window:
        losses.append(sum(window) / len(window))
    seconds = time.perf_counter() - t0
    unwrapped = accelerator.unwrap_model(model)
    for h in hooks:
        h.on_train_end(unwrapped)
    return TrainResult(steps=step, examples_per_s=seen / max(seconds, 1e-9), seconds=seconds, losses=losses)


def write_train_metrics(folder: Path, result: TrainResult, extra: dict[str, Any] | None = None) -> None:
    write_json(folder / "train_metrics.json", {"steps": result.steps, "examples_per_s": round(result.examples_per_s, 2),
                                               "seconds": round(result.seconds, 1), "loss_curve": result.losses,
                                               **(extra or {})})
