"""`structured`: attention heads and FFN neurons pruned together during fine-tuning until a target
is met: a fraction of the encoder's FLOPs, or a measured inference speed-up on this machine.

Criterion: gate-gradient importance (Michel et al. 2019) for heads and FFN neurons alike,
I_u = E_x |dL/d xi_u|, re-estimated on fresh training batches at every pruning round, normalized
per layer. Schedule: cubic in the FLOPs kept (Zhu & Gupta), from `prune_start` to `prune_end` of
training. Each round removes the same fraction of the remaining attention and FFN FLOPs (the least
important heads and neurons within each; every layer keeps at least one of each), so neither
kind is emptied first. During training, pruned units are masked (buffers in the model's state, so
checkpoints resume them exactly); at the end they are physically removed (`models.pruned`): the
result is a smaller dense model, uneven heads per layer, equal to its masked twin, reloadable with
`from_pretrained`, through the family adapter for every supported family.

A speed-up target is met one of two ways. With `target_runtime` (pytorch-fp32, pytorch-bf16,
onnxruntime-fp32, onnxruntime-int8), heads and neurons are priced by that runtime's per-layer
latency table measured on this machine (`compress.latency`, cached per machine, runtime and shape),
and the schedule, each round's equal shares and the target are all in latency instead of FLOPs
(pruning against the deployment's own costs, as ZipLM does). Without it (as before), the speed-up is
turned into a FLOPs target by calibration: copies pruned one-shot to a few FLOPs fractions are timed
against the dense model in PyTorch fp32 and the fraction reaching the target is interpolated.

`init: fisher` starts recovery from a retraining-free model instead (`compress.fisher`: Fisher mask
search to the target, mask rescaling), so all of training recovers; the default prunes gradually.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ..io import UserError
from ..models.families import (
    blocks,
    encoder_flops,
    family_of,
    ffn_width,
    get_path,
    head_size,
    n_heads,
)
from ..models.infer import throughput
from ..models.pruned import prune_ffn_neurons, prune_heads
from ..settings.methods import StructuredConfig
from ..train.loop import Hook
from .base import Method, Prepare
from .fisher import fisher_prune, fisher_work
from .latency import Costs, flops_costs, predicted_speedup, speed_target
from .structured import _gate_importance, train_batches


class _Masks:
    """Head and neuron masks as buffers of the attention-out / FFN-out projections, applied to their
    inputs by forward pre-hooks: in the state dict (checkpoints), out of the way at the end."""

    def __init__(self, model: torch.nn.Module):
        self.fam = family_of(model)
        self.handles = []
        for block in blocks(model):
            size = head_size(block, self.fam)
            for path, n, width in (
                (self.fam.attn_out, n_heads(block, self.fam), size),
                (self.fam.ffn_out, ffn_width(block, self.fam), 1),
            ):
                mod = get_path(block, path)
                if not hasattr(mod, "unit_mask"):
                    mod.register_buffer("unit_mask", torch.ones(n))
                mod.unit_width = width
                self.handles.append(mod.register_forward_pre_hook(self._hook))

    @staticmethod
    def _hook(module, args):
        x = args[0]
        m = module.unit_mask.to(x.dtype).repeat_interleave(module.unit_width)
        return (x * m, *args[1:])

    def sites(self, model) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
        bl = blocks(model)
        return [get_path(b, self.fam.attn_out) for b in bl], [
            get_path(b, self.fam.ffn_out) for b in bl
        ]

    def remove(self, model) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        """Drop hooks and buffers; return the masked heads and neurons per layer."""
        for h in self.handles:
            h.remove()
        heads, neurons = {}, {}
        attn, ffn = self.sites(model)
        for layer, (a, f) in enumerate(zip(attn, ffn, strict=True)):
            heads[layer] = (a.unit_mask == 0).nonzero().flatten().tolist()
            neurons[layer] = (f.unit_mask == 0).nonzero().flatten().tolist()
            for mod in (a, f):
                del mod._buffers["unit_mask"]
                del mod.unit_width
        return heads, neurons


def _least_important(
    importance: list[torch.Tensor], masks: list[torch.Tensor], k: int
) -> list[tuple[int, int]]:
    """(layer, unit) of the k least important live units, each layer keeping at least one."""
    scores = []
    for layer, (imp, m) in enumerate(zip(importance, masks, strict=True)):
        live = imp * m
        norm = live.norm()
        live = live / norm if norm > 0 else live
        scores += [(float(live[u]), layer, u) for u in range(len(m)) if m[u] > 0]
    left = [int(m.sum()) for m in masks]
    chosen = []
    for _, layer, u in sorted(scores):
        if len(chosen) == k:
            break
        if left[layer] > 1:
            left[layer] -= 1
            chosen.append((layer, u))
    return chosen


class StructuredPruning(Hook):
    """Masks heads and neurons on a schedule until `target` of the dense cost is left; `costs` price
    them (default: FLOPs at cfg.seq_len; a latency table's costs for a runtime target)."""

    def __init__(
        self, cfg: StructuredConfig, ctx: Prepare, target_flops: float, costs: Costs | None = None
    ):
        self.cfg, self.ctx, self.target = cfg, ctx, target_flops
        self.costs = costs
        self.total = 0
        self.masks: _Masks | None = None

    def on_train_begin(self, model, total_steps: int) -> None:
        self.total = total_steps
        self.masks = _Masks(model)
        c = self.costs or flops_costs(model, self.cfg.seq_len)
        self.head_cost, self.neuron_cost, self.fixed, self.dense = (
            c.head,
            c.neuron,
            c.fixed,
            c.dense,
        )

    def kept_at(self, step: int) -> float:
        """FLOPs fraction to keep after `step` (cubic, Zhu & Gupta)."""
        t0, t1 = (
            round(self.cfg.prune_start * self.total),
            max(1, round(self.cfg.prune_end * self.total)),
        )
        if step <= t0:
            return 1.0
        frac = min(1.0, (step - t0) / max(t1 - t0, 1))
        return 1 - (1 - self.target) * (1 - (1 - frac) ** 3)

    def flops(self, model) -> float:
        attn, ffn = self.masks.sites(model)
        return (
            self.fixed
            + sum(float(a.unit_mask.sum()) for a in attn) * self.head_cost
            + sum(float(f.unit_mask.sum()) for f in ffn) * self.neuron_cost
        )

    def on_step_end(self, model, step: int) -> None:
        end = max(1, round(self.cfg.prune_end * self.total))
        if step > end or (step % self.cfg.prune_every and step != end):
            return
        goal = self.kept_at(step) * self.dense
        now = self.flops(model)
        if now <= goal:
            return
        attn, ffn = self.masks.sites(model)
        batches = train_batches(
            self.ctx.data, 32, self.cfg.importance_batches, self.ctx.seed + step
        )
        sites = [(m, len(m.unit_mask)) for m in attn] + [(m, len(m.unit_mask)) for m in ffn]
        imp = _gate_importance(model, batches, sites, None, len(batches))
        head_imp, neuron_imp = imp[: len(attn)], imp[len(attn) :]
        live_a = sum(float(a.unit_mask.sum()) for a in attn) * self.head_cost
        live_f = sum(float(f.unit_mask.sum()) for f in ffn) * self.neuron_cost
        r = min(
            1.0, (now - goal) / max(live_a + live_f, 1e-9)
        )  # the same share of attention and FFN FLOPs
        with torch.no_grad():
            for mods, scores, live, cost in (
                (attn, head_imp, live_a, self.head_cost),
                (ffn, neuron_imp, live_f, self.neuron_cost),
            ):
                k = math.ceil(r * live / cost)
                for layer, u in _least_important(scores, [m.unit_mask for m in mods], k):
                    mods[layer].unit_mask[u] = 0

    def on_train_end(self, model) -> None:
        heads, neurons = self.masks.remove(model)
        prune_heads(model, {k: v for k, v in heads.items() if v})
        prune_ffn_neurons(model, {k: v for k, v in neurons.items() if v})


def calibrate(model, data, seed: int, speedup: float, fractions=(0.8, 0.6, 0.45, 0.3, 0.2)) -> dict:
    """The FLOPs fraction whose one-shot pruned copy runs `speedup` times faster than the dense
    model (the throughput harness on 128 training examples; interpolated in log speed between
    fractions)."""
    dense = encoder_flops(model)["flops_dense"]
    entries, kept = {"dense": model}, {}
    for f in fractions:
        m = copy.deepcopy(model).eval()
        hook = StructuredPruning(StructuredConfig(target_flops=f), Prepare(data=data, seed=seed), f)
        hook.on_train_begin(m, 1)
        hook.on_step_end(m, 1)  # one round: straight to the target
        hook.on_train_end(m)
        entries[f], kept[f] = (
            m,
            encoder_flops(m)["flops_dense"] / dense,
        )  # (whole units: a little under f)
    sample = data.subset(range(min(128, len(data))))
    rates = throughput({k: (m, sample) for k, m in entries.items()}, batch_size=32, repeats=2)
    speed = {f: rates[f] / rates["dense"] for f in fractions}
    if speedup > max(speed.values()):
        raise UserError(
            f"structured: a {speedup}x speed-up is beyond what pruning to {min(fractions)} of the "
            f"FLOPs reaches here ({max(speed.values()):.2f}x)"
        )
    xs = np.log([speed[f] for f in fractions])
    order = np.argsort(xs)
    target = float(
        np.interp(math.log(speedup), xs[order], np.array([kept[f] for f in fractions])[order])
    )
    return {
        "measured": {
            str(f): {"flops_kept": round(kept[f], 4), "speedup": round(speed[f], 3)}
            for f in fractions
        },
        "target_flops": target,
    }


class Structured(Method):
    """Heads and FFN neurons pruned during fine-tuning to a FLOPs or speed-up target (see module
    doc)."""

    name = "structured"
    Config = StructuredConfig

    def prepare(self, model, ctx: Prepare):
        c = self.cfg
        self.calibration = None
        self.costs = flops_costs(model, c.seq_len)
        target = c.target_flops
        if c.target_runtime is not None:
            self.costs, target, self.calibration = speed_target(
                model, c.target_speedup, c.target_runtime, c.seq_len, ctx.cache_dir
            )
        elif target is None:
            self.calibration = calibrate(model, ctx.data, ctx.seed, c.target_speedup)
            target = self.calibration["target_flops"]
        self.flops_before = encoder_flops(model, c.seq_len)["flops_dense"]
        self.target = target
        if c.init == "fisher":  # all of the pruning now, before training: every step recovers
            model, self.fisher = fisher_prune(
                model, ctx.data, ctx.seed, target, self.costs, c.fisher_samples, c.fisher_rescale
            )
            return model, []
        return model, [StructuredPruning(c, ctx, target, self.costs if c.target_runtime else None)]

    def extra_work(self, n_train, layers):
        if self.cfg.init != "fisher":
            return {}
        return fisher_work(self.cfg.fisher_samples, self.cfg.fisher_rescale, 512, n_train, layers)

    def record(self, model):
        after = encoder_flops(model, self.cfg.seq_len)["flops_dense"]
        cfg = model.config
        out = {
            "target_flops": self.target,
            "flops_kept": after / self.flops_before,
            "heads_removed": sum(
                len(v) for v in (getattr(cfg, "pruned_heads", None) or {}).values()
            ),
            "ffn_neurons_removed": sum(
                len(v) for v in (getattr(cfg, "pruned_ffn_neurons", None) or {}).values()
            ),
            "calibration": self.calibration,
        }
        if self.cfg.target_runtime is not None:  # the target is a latency fraction there, not FLOPs
            out |= {
                "target_latency": out.pop("target_flops"),
                "target_runtime": self.cfg.target_runtime,
                "predicted_speedup": predicted_speedup(self.costs, model),
            }
        if self.cfg.init == "fisher":
            out["fisher"] = self.fisher
        return out
