"""Structured pruning by importance: attention heads (Michel et al. 2019) and FFN neurons.

Importance I_u = E_x |dL(x)/d xi_u| is measured with gates of our own (forward pre-hooks scaling
each unit's slice of the input of the attention output / FFN output projection; transformers 5
dropped `head_mask`), then the least important units are physically removed
(`models.pruned`), so the pruned model is smaller and faster, not just masked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batching import Collator, EncodedSplit
from ..io import UserError
from ..models.families import blocks, family_of, ffn_width, get_path, n_heads
from ..models.infer import model_inputs
from ..models.pruned import prune_ffn_neurons, prune_heads
from ..settings.methods import HeadsConfig
from .base import Method, Prepare

# ---------------------------------------------------------------- importance by gates


@torch.enable_grad()  # gate gradients are needed even when the caller is under no_grad
def _gate_importance(
    model: torch.nn.Module,
    batches,
    sites: list[tuple[torch.nn.Module, int]],
    loss_fn: Callable | None,
    n_batches: int,
    power: int = 1,
) -> list[torch.Tensor]:
    """E_x |dL(x)/d xi_u| (power 2: E_x (dL(x)/d xi_u)^2, the diagonal empirical Fisher of the
    gates) for units gated at the input of each module in `sites`.

    Each (module, n_units) gets a gate xi (value 1, so the forward is unchanged) that scales
    equal slices of the module's input. Gates are per example ([batch, n_units]) so one backward
    gives every example's own gradient, and the absolute value is taken per example as in
    Michel et al.'s definition (not per batch, which lets opposite signs cancel).
    """
    param = next(model.parameters())
    current: list[torch.Tensor] = []

    def make_hook(i: int, n: int):
        def hook(module, args):
            x = args[0]
            g = current[i].view(x.shape[0], *([1] * (x.dim() - 2)), n, 1)
            return ((x.unflatten(-1, (n, -1)) * g).flatten(-2), *args[1:])

        return hook

    handles = [m.register_forward_pre_hook(make_hook(i, n)) for i, (m, n) in enumerate(sites)]
    totals = [torch.zeros(n, dtype=torch.float64) for _, n in sites]
    seen, was_training = 0, model.training
    model.eval()  # no dropout: importance of the model as it will be used
    try:
        for b, batch in enumerate(batches):
            if b >= n_batches:
                break
            batch = {
                k: v.to(param.device) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            size = batch["input_ids"].shape[0]
            current[:] = [
                torch.ones(size, n, dtype=param.dtype, device=param.device, requires_grad=True)
                for _, n in sites
            ]
            logits = model(**model_inputs(model, batch)).logits
            if loss_fn is None:
                loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
            else:  # a batch-mean loss: scale so each gate gradient is that example's own
                loss = loss_fn(logits, batch) * size
            grads = torch.autograd.grad(loss, current)
            for t, g in zip(totals, grads, strict=True):
                g = g.detach().abs() if power == 1 else g.detach().double().square()
                t += g.sum(0).double().cpu()
            seen += size
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not seen:
        raise UserError("importance needs at least one batch of data")
    return [(t / seen).float() for t in totals]


def _stack(rows: list[torch.Tensor], normalize: bool) -> torch.Tensor:
    """[layers, max units]; NaN pads layers that have fewer units left (they do not exist)."""
    out = torch.full((len(rows), max(len(r) for r in rows)), float("nan"))
    for i, r in enumerate(rows):
        if normalize:  # Michel et al.: per-layer L2 normalization makes layers comparable
            norm = r.norm()
            r = r / norm if norm > 0 else r
        out[i, : len(r)] = r
    return out


def head_importance(
    model: torch.nn.Module,
    batches,
    loss_fn: Callable | None = None,
    n_batches: int = 32,
    normalize: bool = True,
) -> torch.Tensor:
    """Michel et al. (2019) head importance I_h = E_x |dL/d xi_h|, shape [layers, heads].

    `batches`: a DataLoader or any iterable of dicts with input_ids, attention_mask,
    (token_type_ids,) labels. `loss_fn(logits, batch)` must return the batch MEAN loss; default
    cross-entropy on `labels`. Heads are in the model's current numbering; after an earlier
    pruning, layers with fewer heads are padded with NaN.
    """
    fam = family_of(model)
    sites = [(get_path(blk, fam.attn_out), n_heads(blk, fam)) for blk in blocks(model)]
    return _stack(_gate_importance(model, batches, sites, loss_fn, n_batches), normalize)


def ffn_importance(
    model: torch.nn.Module,
    batches,
    loss_fn: Callable | None = None,
    n_batches: int = 32,
    normalize: bool = True,
) -> torch.Tensor:
    """Same gate criterion for FFN intermediate neurons: shape [layers, neurons], NaN-padded."""
    fam = family_of(model)
    sites = [(get_path(blk, fam.ffn_out), ffn_width(blk, fam)) for blk in blocks(model)]
    return _stack(_gate_importance(model, batches, sites, loss_fn, n_batches), normalize)


def select_heads(importance: torch.Tensor, amount: float) -> dict[int, list[int]]:
    """The globally least important heads to remove, never all heads of a layer.

    amount >= 1: a count of heads; 0 < amount < 1: a fraction of the existing heads (NaN entries
    of `importance` are heads that no longer exist). Works for FFN neurons too.
    """
    exists = ~torch.isnan(importance)
    total = int(exists.sum())
    if amount <= 0:
        raise UserError(f"amount to prune must be positive, got {amount}")
    if amount < 1:
        count = round(amount * total)
        if count == 0:
            raise UserError(f"fraction {amount} of {total} heads rounds to 0 heads")
    else:
        if amount != int(amount):
            raise UserError(f"a head count must be a whole number, got {amount}")
        count = int(amount)
    removable = total - int(exists.any(1).sum())
    if count > total:
        raise UserError(f"cannot remove {count} heads: the model has only {total}")
    if count > removable:
        raise UserError(
            f"cannot remove {count} of {total} heads: each layer keeps at least one, "
            f"so at most {removable} can go"
        )
    left = exists.sum(1).tolist()
    order = sorted(
        (float(importance[layer, head]), layer, head) for layer, head in exists.nonzero().tolist()
    )
    chosen: dict[int, list[int]] = {}
    for _, layer, head in order:
        if count == 0:
            break
        if left[layer] > 1:  # skipping a layer's last head: the next-least important goes instead
            left[layer] -= 1
            count -= 1
            chosen.setdefault(layer, []).append(head)
    return {layer: sorted(h) for layer, h in sorted(chosen.items())}


def _count(amount: float, total: int) -> int:
    return int(amount) if amount >= 1 else round(amount * total)


def train_batches(
    data: EncodedSplit, batch_size: int, n: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """n seeded random batches of training examples (importance estimation)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data))[: n * batch_size]
    collate = Collator(0)
    return [
        collate([data[int(i)] for i in idx[j : j + batch_size]])
        for j in range(0, len(idx), batch_size)
    ]


class Heads(Method):
    """Remove the least important attention heads and/or FFN neurons before fine-tuning."""

    name = "heads"
    Config = HeadsConfig

    def check(self, model_config) -> None:
        fam = family_of(model_config)
        layers = getattr(model_config, fam.n_layers_key)
        if self.cfg.heads is not None:
            total = layers * getattr(model_config, fam.n_heads_key)
            count, removable = _count(self.cfg.heads, total), total - layers
            if count == 0:
                raise UserError(f"heads: {self.cfg.heads} of {total} heads rounds to 0 heads")
            if count > removable:
                raise UserError(
                    f"heads: cannot remove {count} of {total} heads: each layer keeps at least "
                    f"one, so at most {removable} can go"
                )

    def prepare(self, model, ctx: Prepare):
        c = self.cfg
        fam = family_of(model)
        for kind, amount in (("heads", c.heads), ("ffn", c.ffn)):
            if amount is None:
                continue
            sizes = [
                n_heads(b, fam) if kind == "heads" else ffn_width(b, fam) for b in blocks(model)
            ]
            count = _count(amount, sum(sizes))
            rounds = [
                count // c.iterative_steps + (1 if r < count % c.iterative_steps else 0)
                for r in range(c.iterative_steps)
            ]
            for r, k in enumerate(rounds):
                if k == 0:
                    continue
                batches = train_batches(ctx.data, 32, c.importance_batches, ctx.seed + r)
                if kind == "heads":
                    prune_heads(
                        model,
                        select_heads(head_importance(model, batches, n_batches=len(batches)), k),
                    )
                else:
                    prune_ffn_neurons(
                        model,
                        select_heads(ffn_importance(model, batches, n_batches=len(batches)), k),
                    )
        return model, []

    def record(self, model):
        cfg = model.config
        return {
            "heads_removed": sum(
                len(v) for v in (getattr(cfg, "pruned_heads", None) or {}).values()
            ),
            "ffn_neurons_removed": sum(
                len(v) for v in (getattr(cfg, "pruned_ffn_neurons", None) or {}).values()
            ),
            "pruned_heads": getattr(cfg, "pruned_heads", None) or {},
        }
