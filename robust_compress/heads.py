"""Structured pruning of BERT: attention heads (Michel et al. 2019), FFN neurons and whole layers.

Pruning here is physical: the weight matrices shrink, so a pruned model is smaller and faster,
not just masked. transformers 5 dropped `head_mask` and `prune_heads`, so importance is measured
with gates of our own (forward pre-hooks) and the surgery uses `prune_linear_layer`.

A pruned model records what it lost in its config (`pruned_heads`, `pruned_ffn_neurons`, indices
in the ORIGINAL numbering, str keys for JSON) and becomes a `PrunedBertForSequenceClassification`.
That class, registered with the Auto classes when this module is imported, rebuilds the dense
model and re-prunes it before the weights load, so `from_pretrained` needs no remote code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)
from transformers.pytorch_utils import prune_linear_layer

from .io import UserError

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


# ---------------------------------------------------------------- model type that survives a reload


@strict
class PrunedBertConfig(BertConfig):
    """BertConfig plus what was removed; `num_attention_heads`/`intermediate_size` stay the originals."""

    model_type = "pruned_bert"
    pruned_heads: dict[str, list[int]] | None = None
    pruned_ffn_neurons: dict[str, list[int]] | None = None


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    """Builds the dense model from the config, then removes the recorded heads and neurons,
    so the parameter shapes match the saved (pruned) weights."""

    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig):
        super().__init__(config)
        for layer, (heads, neurons) in enumerate(zip(_recorded(config, "pruned_heads"),
                                                     _recorded(config, "pruned_ffn_neurons"))):
            block = self.bert.encoder.layer[layer]
            if heads:
                _shrink_attention(block, heads)
            if neurons:
                _shrink_ffn(block, neurons)


AutoConfig.register(PrunedBertConfig.model_type, PrunedBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(PrunedBertConfig, PrunedBertForSequenceClassification, exist_ok=True)


def _recorded(config, field: str) -> list[list[int]]:
    """Per-layer list of removed original indices from a config field (empty lists if none)."""
    stored = getattr(config, field, None) or {}
    return [sorted(stored.get(str(i), [])) for i in range(config.num_hidden_layers)]


def _as_pruned(model: torch.nn.Module) -> PrunedBertForSequenceClassification:
    """Turn a BertForSequenceClassification (and its config) into the pruned type, in place,
    so that `save_pretrained` writes model_type "pruned_bert"."""
    if isinstance(model, PrunedBertForSequenceClassification):
        return model
    if type(model) is not BertForSequenceClassification:
        raise UserError(f"structured pruning supports BertForSequenceClassification, got {type(model).__name__}")
    if type(model.config) is not BertConfig:
        raise UserError(f"structured pruning needs a BertConfig, got {type(model.config).__name__}")
    # Swapping classes keeps the config object that every submodule shares (and its attention
    # implementation); the layouts are identical, PrunedBert* only add behaviour and two fields.
    model.config.__class__ = PrunedBertConfig
    model.config.pruned_heads = {}
    model.config.pruned_ffn_neurons = {}
    model.__class__ = PrunedBertForSequenceClassification
    return model


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.base_model.encoder.layer


# ---------------------------------------------------------------- surgery on one layer


def _keep_index(n: int, drop: Iterable[int]) -> torch.Tensor:
    drop = set(drop)
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _shrink_attention(block: torch.nn.Module, heads: list[int]) -> None:
    """Remove heads (current numbering) from one BertLayer: rows of Q/K/V, columns of the output."""
    attn = block.attention.self
    size = attn.attention_head_size
    keep_heads = _keep_index(attn.num_attention_heads, heads)
    keep = (keep_heads[:, None] * size + torch.arange(size)).reshape(-1)
    attn.query = prune_linear_layer(attn.query, keep, dim=0)
    attn.key = prune_linear_layer(attn.key, keep, dim=0)
    attn.value = prune_linear_layer(attn.value, keep, dim=0)
    block.attention.output.dense = prune_linear_layer(block.attention.output.dense, keep, dim=1)
    # forward reshapes with -1 heads, but keep the attributes truthful for anyone reading them
    attn.num_attention_heads = len(keep_heads)
    attn.all_head_size = len(keep_heads) * size


def _shrink_ffn(block: torch.nn.Module, neurons: list[int]) -> None:
    """Remove intermediate neurons (current numbering) of one BertLayer's feed-forward block."""
    keep = _keep_index(block.intermediate.dense.out_features, neurons)
    block.intermediate.dense = prune_linear_layer(block.intermediate.dense, keep, dim=0)
    block.output.dense = prune_linear_layer(block.output.dense, keep, dim=1)


def _checked(kind: str, requested: dict[int, list[int]], layers: torch.nn.ModuleList,
             count: Callable[[torch.nn.Module], int]) -> dict[int, list[int]]:
    """Validate a whole request before anything changes: {layer: sorted unique indices}."""
    out = {}
    for layer, indices in requested.items():
        layer = int(layer)
        if not 0 <= layer < len(layers):
            raise UserError(f"layer {layer} does not exist (the model has {len(layers)} layers)")
        have = count(layers[layer])
        indices = sorted(int(i) for i in indices)
        if len(set(indices)) != len(indices):
            raise UserError(f"layer {layer}: repeated {kind} indices {indices}")
        if indices and not (0 <= indices[0] and indices[-1] < have):
            raise UserError(f"layer {layer}: {kind} indices {indices} out of range (layer has {have})")
        if len(indices) >= have:
            raise UserError(f"layer {layer}: cannot remove all {have} {kind}s (keep at least one)")
        if indices:
            out[layer] = indices
    return out


def _record(config, field: str, layer: int, current: list[int], total: int) -> None:
    """Map current indices to the original numbering and merge them into config.<field>."""
    stored = dict(getattr(config, field) or {})
    removed = set(stored.get(str(layer), []))
    alive = [i for i in range(total) if i not in removed]
    stored[str(layer)] = sorted(removed | {alive[i] for i in current})
    setattr(config, field, stored)


# ---------------------------------------------------------------- public pruning API


def prune_heads(model: torch.nn.Module, heads: dict[int, list[int]]) -> torch.nn.Module:
    """Physically remove attention heads, given per layer in the model's CURRENT numbering
    (what `head_importance`/`select_heads` return), and record them in
    `model.config.pruned_heads` in the original numbering. Returns the same model, converted
    in place to `PrunedBertForSequenceClassification`."""
    model = _as_pruned(model)
    layers = _layers(model)
    for layer, idx in _checked("head", heads, layers, lambda b: b.attention.self.num_attention_heads).items():
        _record(model.config, "pruned_heads", layer, idx, model.config.num_attention_heads)
        _shrink_attention(layers[layer], idx)
    return model


def prune_ffn_neurons(model: torch.nn.Module, neurons: dict[int, list[int]]) -> torch.nn.Module:
    """Physically remove feed-forward intermediate neurons (current numbering, per layer);
    recorded in `model.config.pruned_ffn_neurons` in the original numbering."""
    model = _as_pruned(model)
    layers = _layers(model)
    for layer, idx in _checked("neuron", neurons, layers, lambda b: b.intermediate.dense.out_features).items():
        _record(model.config, "pruned_ffn_neurons", layer, idx, model.config.intermediate_size)
        _shrink_ffn(layers[layer], idx)
    return model


def drop_layers(model: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """Keep only the encoder layers `keep` (in that order). Records of earlier head/neuron
    pruning are renumbered so that a reload rebuilds the same shapes."""
    layers = _layers(model)
    keep = [int(i) for i in keep]
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < len(layers) for i in keep):
        raise UserError(f"cannot keep layers {keep} of a {len(layers)}-layer model (need distinct valid indices)")
    model.base_model.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])
    for new, block in enumerate(model.base_model.encoder.layer):
        block.attention.self.layer_idx = new
    config = model.config
    config.num_hidden_layers = len(keep)
    for field in ("pruned_heads", "pruned_ffn_neurons"):
        stored = getattr(config, field, None)
        if stored:
            setattr(config, field, {str(new): stored[str(old)] for new, old in enumerate(keep) if stored.get(str(old))})
    return model


# ---------------------------------------------------------------- importance by gates


@torch.enable_grad()  # gate gradients are needed even when the caller is under no_grad
def _gate_importance(model: torch.nn.Module, batches, sites: list[tuple[torch.nn.Module, int]],
                     loss_fn: Callable | None, n_batches: int) -> list[torch.Tensor]:
    """E_x |dL(x)/d xi_u| for units gated at the input of each module in `sites`.

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
            batch = {k: v.to(param.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            size = batch["input_ids"].shape[0]
            current[:] = [torch.ones(size, n, dtype=param.dtype, device=param.device, requires_grad=True)
                          for _, n in sites]
            logits = model(**{k: batch[k] for k in INPUT_KEYS if k in batch}).logits
            if loss_fn is None:
                loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
            else:  # a batch-mean loss: scale so each gate gradient is that example's own
                loss = loss_fn(logits, batch) * size
            grads = torch.autograd.grad(loss, current)
            for t, g in zip(totals, grads):
                t += g.detach().abs().sum(0).double().cpu()
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
        out[i, :len(r)] = r
    return out


def head_importance(model: torch.nn.Module, batches, loss_fn: Callable | None = None, n_batches: int = 32,
                    normalize: bool = True) -> torch.Tensor:
    """Michel et al. (2019) head importance I_h = E_x |dL/d xi_h|, shape [layers, heads].

    `batches`: a DataLoader or any iterable of dicts with input_ids, attention_mask,
    (token_type_ids,) labels. `loss_fn(logits, batch)` must return the batch MEAN loss; default
    cross-entropy on `labels`. Heads are in the model's current numbering; after an earlier
    pruning, layers with fewer heads are padded with NaN.
    """
    sites = [(blk.attention.output.dense, blk.attention.self.num_attention_heads) for blk in _layers(model)]
    return _stack(_gate_importance(model, batches, sites, loss_fn, n_batches), normalize)


def ffn_importance(model: torch.nn.Module, batches, loss_fn: Callable | None = None, n_batches: int = 32,
                   normalize: bool = True) -> torch.Tensor:
    """Same gate criterion for FFN intermediate neurons: shape [layers, neurons], NaN-padded."""
    sites = [(blk.output.dense, blk.output.dense.in_features) for blk in _layers(model)]
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
        raise UserError(f"cannot remove {count} of {total} heads: each layer keeps at least one, "
                        f"so at most {removable} can go")
    left = exists.sum(1).tolist()
    order = sorted((float(importance[layer, head]), layer, head) for layer, head in exists.nonzero().tolist())
    chosen: dict[int, list[int]] = {}
    for _, layer, head in order:
        if count == 0:
            break
        if left[layer] > 1:  # skipping a layer's last head: the next-least important goes instead
            left[layer] -= 1
            count -= 1
            chosen.setdefault(layer, []).append(head)
    return {layer: sorted(h) for layer, h in sorted(chosen.items())}
