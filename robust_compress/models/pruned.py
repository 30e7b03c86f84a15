"""Model types whose attention heads or FFN neurons were physically removed, for every family.

transformers 5 dropped `prune_heads`, so the surgery is ours (`prune_linear_layer` does the
slicing). A pruned model records what it lost in its config (`pruned_heads`,
`pruned_ffn_neurons`: indices in the ORIGINAL numbering, str keys for JSON) and becomes a
`pruned_<model_type>` model. Those types, registered with the Auto classes when
`robust_compress` is imported, rebuild the dense model and re-prune it before the weights
load, so `AutoModelForSequenceClassification.from_pretrained` needs no remote code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
from transformers.pytorch_utils import prune_linear_layer

from ..io import UserError
from .families import (
    FAMILIES,
    Family,
    attention,
    blocks,
    family_of,
    get_path,
    n_heads,
    set_blocks,
    set_path,
)

PREFIX = "pruned_"


@functools.cache
def pruned_classes(model_type: str) -> tuple[type, type]:
    """(config class, sequence-classification class) of `pruned_<model_type>`, made and registered
    once."""
    base_cfg = CONFIG_MAPPING[model_type]
    base_model = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[base_cfg]
    ns = {
        "model_type": PREFIX + model_type,
        "__module__": __name__,
        "__annotations__": {
            "pruned_heads": dict[str, list[int]] | None,
            "pruned_ffn_neurons": dict[str, list[int]] | None,
            "base_model_type": str | None,
        },
        "pruned_heads": None,
        "pruned_ffn_neurons": None,
        "base_model_type": model_type,
    }
    cfg_cls = strict(type(f"Pruned{base_cfg.__name__}", (base_cfg,), ns))

    def __init__(self, config):
        base_model.__init__(self, config)
        fam = family_of(config)
        for layer, block in enumerate(blocks(self)):
            heads = _recorded(config, "pruned_heads", layer)
            neurons = _recorded(config, "pruned_ffn_neurons", layer)
            if heads:
                _shrink_attention(block, fam, heads)
            if neurons:
                _shrink_ffn(block, fam, neurons)

    model_cls = type(
        f"Pruned{base_model.__name__}",
        (base_model,),
        {"config_class": cfg_cls, "__init__": __init__, "__module__": __name__},
    )
    AutoConfig.register(cfg_cls.model_type, cfg_cls, exist_ok=True)
    AutoModelForSequenceClassification.register(cfg_cls, model_cls, exist_ok=True)
    return cfg_cls, model_cls


def register_all() -> None:
    """Register `pruned_<type>` for every type of every family (before any from_pretrained)."""
    for fam in FAMILIES.values():
        for t in fam.model_types:
            if t in CONFIG_MAPPING:
                pruned_classes(t)


def _recorded(config, field: str, layer: int) -> list[int]:
    return sorted((getattr(config, field, None) or {}).get(str(layer), []))


def as_pruned(model: torch.nn.Module) -> torch.nn.Module:
    """Turn a model of a supported family (and its config) into its pruned type, in place, so that
    `save_pretrained` writes model_type `pruned_<type>`. The layouts are identical: the pruned
    types only add the re-pruning on construction and three config fields."""
    if model.config.model_type.startswith(PREFIX):
        return model
    family_of(model)  # refuses unsupported families
    model_type = model.config.model_type
    cfg_cls, model_cls = pruned_classes(model_type)
    if type(model).__name__ != model_cls.__mro__[1].__name__:
        raise UserError(
            f"structured pruning needs a {model_cls.__mro__[1].__name__}, got "
            f"{type(model).__name__}"
        )
    # Swapping classes keeps the config object that every submodule shares (and its attention
    # implementation).
    model.config.__class__ = cfg_cls
    model.config.model_type = cfg_cls.model_type  # a loaded config holds its own copy of the type
    model.config.pruned_heads, model.config.pruned_ffn_neurons = {}, {}
    model.config.base_model_type = model_type
    model.__class__ = model_cls
    return model


# ---------------------------------------------------------------- surgery on one block


def _keep_index(n: int, drop: Iterable[int]) -> torch.Tensor:
    drop = set(drop)
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _slice_position_bias(fam: Family):
    """Forward pre-hook: pass this layer's kept heads' slice of a shared per-head position bias."""

    def hook(module, args):
        kept = module.kept_heads  # a plain list: survives transformers' meta-device construction
        bias = args[fam.position_bias_arg] if len(args) > fam.position_bias_arg else None
        if bias is None or bias.shape[1] == len(kept):
            return None
        index = torch.tensor(kept, device=bias.device)
        return (
            *args[: fam.position_bias_arg],
            bias.index_select(1, index),
            *args[fam.position_bias_arg + 1 :],
        )

    return hook


def _shrink_attention(block: torch.nn.Module, fam: Family, heads: list[int]) -> None:
    """Remove heads (current numbering) from one block: rows of Q/K/V, columns of the output."""
    attn = attention(block, fam)
    size = int(getattr(attn, fam.head_size_attr))
    keep_heads = _keep_index(n_heads(block, fam), heads)
    keep = (keep_heads[:, None] * size + torch.arange(size)).reshape(-1)
    for name in (fam.query, fam.key, fam.value) + tuple(
        n for n in fam.extra_qk if hasattr(attn, n)
    ):
        setattr(attn, name, prune_linear_layer(getattr(attn, name), keep, dim=0))
    if fam.position_bias_arg is not None:
        before = getattr(attn, "kept_heads", list(range(n_heads(block, fam))))
        attn.kept_heads = [
            h for i, h in enumerate(before) if i not in set(heads)
        ]  # no tensor: may be on meta
        if not getattr(attn, "_bias_hook", False):
            attn.register_forward_pre_hook(_slice_position_bias(fam))
            attn._bias_hook = True
    set_path(block, fam.attn_out, prune_linear_layer(get_path(block, fam.attn_out), keep, dim=1))
    setattr(attn, fam.heads_attr, len(keep_heads))
    if fam.all_head_size_attr:
        setattr(attn, fam.all_head_size_attr, len(keep_heads) * size)


def _shrink_ffn(block: torch.nn.Module, fam: Family, neurons: list[int]) -> None:
    """Remove intermediate neurons (current numbering) of one block's feed-forward pair."""
    keep = _keep_index(get_path(block, fam.ffn_in).out_features, neurons)
    set_path(block, fam.ffn_in, prune_linear_layer(get_path(block, fam.ffn_in), keep, dim=0))
    set_path(block, fam.ffn_out, prune_linear_layer(get_path(block, fam.ffn_out), keep, dim=1))


def _checked(kind: str, requested: dict[int, list[int]], have: list[int]) -> dict[int, list[int]]:
    """Validate a whole request before anything changes: {layer: sorted unique indices}."""
    out = {}
    for layer, indices in requested.items():
        layer = int(layer)
        if not 0 <= layer < len(have):
            raise UserError(f"layer {layer} does not exist (the model has {len(have)} layers)")
        indices = sorted(int(i) for i in indices)
        if len(set(indices)) != len(indices):
            raise UserError(f"layer {layer}: repeated {kind} indices {indices}")
        if indices and not (indices[0] >= 0 and indices[-1] < have[layer]):
            raise UserError(
                f"layer {layer}: {kind} indices {indices} out of range (layer has {have[layer]})"
            )
        if len(indices) >= have[layer]:
            raise UserError(
                f"layer {layer}: cannot remove all {have[layer]} {kind}s (keep at least one)"
            )
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


def prune_heads(model: torch.nn.Module, heads: dict[int, list[int]]) -> torch.nn.Module:
    """Physically remove attention heads, given per layer in the model's CURRENT numbering, and
    record them in `config.pruned_heads` in the original numbering. Returns the same model,
    converted in place to its pruned type."""
    model = as_pruned(model)
    fam = family_of(model)
    layers = blocks(model)
    total = getattr(model.config, fam.n_heads_key)
    for layer, idx in _checked("head", heads, [n_heads(b, fam) for b in layers]).items():
        _record(model.config, "pruned_heads", layer, idx, total)
        _shrink_attention(layers[layer], fam, idx)
    return model


def prune_ffn_neurons(model: torch.nn.Module, neurons: dict[int, list[int]]) -> torch.nn.Module:
    """Physically remove feed-forward neurons (current numbering, per layer); recorded in
    `config.pruned_ffn_neurons` in the original numbering."""
    model = as_pruned(model)
    fam = family_of(model)
    layers = blocks(model)
    total = getattr(model.config, fam.ffn_size_key)
    widths = [get_path(b, fam.ffn_in).out_features for b in layers]
    for layer, idx in _checked("neuron", neurons, widths).items():
        _record(model.config, "pruned_ffn_neurons", layer, idx, total)
        _shrink_ffn(layers[layer], fam, idx)
    return model


def keep_layers(model: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """Keep only the encoder blocks `keep` (in that order): the truncated-k student is
    keep=[0..k-1]. Records of earlier head/neuron pruning are renumbered so that a reload rebuilds
    the same shapes."""
    layers = blocks(model)
    keep = [int(i) for i in keep]
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < len(layers) for i in keep):
        raise UserError(
            f"cannot keep layers {keep} of a {len(layers)}-layer model (need distinct valid "
            "indices)"
        )
    set_blocks(model, [layers[i] for i in keep])
    for field in ("pruned_heads", "pruned_ffn_neurons"):
        stored = getattr(model.config, field, None)
        if stored:
            setattr(
                model.config,
                field,
                {
                    str(new): stored[str(old)]
                    for new, old in enumerate(keep)
                    if stored.get(str(old))
                },
            )
    return model
