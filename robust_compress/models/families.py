"""Encoder families: the only place that knows module names.

Each family is one `Family` entry: where its encoder blocks are, and inside a block the attention
projections (q/k/v/o), the feed-forward pair (in/out), the LayerNorm each sub-layer ends in, the
embeddings, and the config keys for sizes and dropout. FLOP counting, truncation, head/FFN pruning,
Fisher rescaling and magnitude pruning all go through these accessors, so supporting a new family
is one entry in `FAMILIES`.

A model whose family is not listed gets one clear error naming its type and the supported
list, before any training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..io import UserError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    layers: str  # from the base model to the ModuleList of blocks
    attention: str  # from a block to the module holding q/k/v (and its head-count attributes)
    query: str  # from the attention module
    key: str
    value: str
    attn_out: str  # from a block to the attention output projection
    ffn_in: str  # from a block
    ffn_out: str
    # from a block: the LayerNorm each sub-layer ends in (post-LN: its input is the sub-layer's
    # output plus the residual), where pruned sub-layers are matched to the dense ones (Fisher
    # rescaling)
    attn_norm: str = "attention.output.LayerNorm"
    ffn_norm: str = "output.LayerNorm"
    embeddings: str = "embeddings"  # from the base model
    heads_attr: str = "num_attention_heads"  # on the attention module (kept truthful after pruning)
    head_size_attr: str = "attention_head_size"
    all_head_size_attr: str | None = "all_head_size"
    n_layers_key: str = "num_hidden_layers"  # config keys
    n_heads_key: str = "num_attention_heads"
    ffn_size_key: str = "intermediate_size"
    dropout_keys: tuple[str, ...] = ("hidden_dropout_prob", "attention_probs_dropout_prob")
    layer_idx_attr: str | None = (
        "layer_idx"  # on the attention module, renumbered when layers are dropped
    )
    extra_qk: tuple[
        str, ...
    ] = ()  # more projections (on the attention module) sliced like q/k when present
    position_bias_arg: int | None = (
        None  # positional arg of the attention module holding a per-head bias
    )
    classifier_out: str = (
        "classifier"  # from the classifier model: the final Linear (one row per label)
    )
    classifier_out_of: tuple[
        tuple[str, str], ...
    ] = ()  # (model type, path) where a type of the family differs


_BERT_LAYOUT = {
    "layers": "encoder.layer",
    "attention": "attention.self",
    "query": "query",
    "key": "key",
    "value": "value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}

FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert",
        ("bert", "roberta", "xlm-roberta", "electra", "camembert"),
        **_BERT_LAYOUT,
        classifier_out_of=tuple(
            (t, "classifier.out_proj") for t in ("roberta", "xlm-roberta", "electra", "camembert")
        ),
    ),
    "distilbert": Family(
        "distilbert",
        ("distilbert",),
        layers="transformer.layer",
        attention="attention",
        query="q_lin",
        key="k_lin",
        value="v_lin",
        attn_out="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        attn_norm="sa_layer_norm",
        ffn_norm="output_layer_norm",
        heads_attr="n_heads",
        all_head_size_attr=None,
        n_layers_key="n_layers",
        n_heads_key="n_heads",
        ffn_size_key="hidden_dim",
        dropout_keys=("dropout", "attention_dropout"),
    ),
    # DeBERTa-v2/v3: relative-position projections follow q/k unless share_att_key (v3) reuses q/k
    "deberta-v2": Family(
        "deberta-v2",
        ("deberta-v2",),
        **(_BERT_LAYOUT | {"query": "query_proj", "key": "key_proj", "value": "value_proj"}),
        extra_qk=("pos_query_proj", "pos_key_proj"),
    ),
    # MPNet: one relative-position bias [batch, heads, q, k] is computed for all layers and passed
    # to each layer's attention; after head pruning each layer keeps its own heads' slice of it
    "mpnet": Family(
        "mpnet",
        ("mpnet",),
        layers="encoder.layer",
        attention="attention.attn",
        query="q",
        key="k",
        value="v",
        attn_out="attention.attn.o",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        attn_norm="attention.LayerNorm",
        position_bias_arg=2,
        classifier_out="classifier.out_proj",
    ),
}


def supported_types() -> list[str]:
    return sorted({t for f in FAMILIES.values() for t in f.model_types})


def family_of(model_or_config) -> Family:
    """The adapter for a model (or its config); a clear error for a type no family covers."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    base_type = (
        getattr(config, "base_model_type", None) or model_type
    )  # pruned_<type> records its parent
    for fam in FAMILIES.values():
        if base_type in fam.model_types:
            return fam
    raise UserError(
        f"model type {model_type!r} is not supported; supported encoder families: "
        f"{', '.join(supported_types())}"
    )


# families whose position ids start after the padding index (RoBERTa's convention): they lose
# padding_idx + 1 of their position embeddings
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet"}


def max_positions(config) -> int | None:
    """The longest input (tokens) the model's absolute position embeddings cover; None when it has
    none (DeBERTa-v2/v3 with relative positions only)."""
    n = getattr(config, "max_position_embeddings", None)
    base_type = getattr(config, "base_model_type", None) or getattr(config, "model_type", None)
    if n is None or (
        base_type == "deberta-v2" and not getattr(config, "position_biased_input", True)
    ):
        return None
    if base_type in OFFSET_POSITIONS:
        n -= (getattr(config, "pad_token_id", None) or 1) + 1
    return int(n)


def classifier_out(model: nn.Module) -> nn.Linear:
    """The classification head's final Linear, whose output rows are the labels (pruned types
    too)."""
    fam = family_of(model)
    base_type = getattr(model.config, "base_model_type", None) or model.config.model_type
    path = dict(fam.classifier_out_of).get(base_type, fam.classifier_out)
    layer = get_path(model, path)
    rows = layer.weight.shape[0]
    if rows != model.config.num_labels:
        raise UserError(
            f"{path} has {rows} output rows, the config {model.config.num_labels} labels"
        )
    return layer


def get_path(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def set_path(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, last = path.split(".")
    for part in parents:
        root = getattr(root, part)
    setattr(root, last, module)


def blocks(model: nn.Module) -> nn.ModuleList:
    return get_path(model.base_model, family_of(model).layers)


def set_blocks(model: nn.Module, new: list[nn.Module]) -> None:
    fam = family_of(model)
    set_path(model.base_model, fam.layers, nn.ModuleList(new))
    setattr(model.config, fam.n_layers_key, len(new))
    if fam.layer_idx_attr:
        for i, block in enumerate(new):
            attn = get_path(block, fam.attention)
            if hasattr(attn, fam.layer_idx_attr):
                setattr(attn, fam.layer_idx_attr, i)


def encoder(model: nn.Module) -> nn.Module:
    """The module that holds every block (what magnitude pruning prunes inside)."""
    fam = family_of(model)
    path = fam.layers.rsplit(".", 1)[0] if "." in fam.layers else fam.layers
    return get_path(model.base_model, path)


def embeddings(model: nn.Module) -> nn.Module:
    return get_path(model.base_model, family_of(model).embeddings)


def attention(block: nn.Module, fam: Family) -> nn.Module:
    return get_path(block, fam.attention)


def n_heads(block: nn.Module, fam: Family) -> int:
    return int(getattr(attention(block, fam), fam.heads_attr))


def head_size(block: nn.Module, fam: Family) -> int:
    return int(getattr(attention(block, fam), fam.head_size_attr))


def ffn_width(block: nn.Module, fam: Family) -> int:
    return get_path(block, fam.ffn_in).out_features


def per_head_projections(block: nn.Module, fam: Family) -> int:
    """Linear layers that lose rows or columns with each removed head: q, k, v, the output, and the
    extra position projections some DeBERTa configs have."""
    attn = attention(block, fam)
    return 4 + sum(isinstance(getattr(attn, n, None), nn.Linear) for n in fam.extra_qk)


def dropout_overrides(config, value: float) -> dict[str, float]:
    """Config keys that set the model's dropout, for `from_pretrained(**overrides)`."""
    return {k: value for k in family_of(config).dropout_keys}


def encoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every Linear inside the encoder blocks, named as in `model.named_modules()`."""
    inside = {id(m) for m in encoder(model).modules()}
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and id(m) in inside
    ]


def encoder_flops(model: nn.Module, seq_len: int = 128) -> dict[str, float]:
    """Multiply-adds x2 of the encoder per example at `seq_len` tokens: dense, and counting only
    non-zero weights (what a sparse kernel could at best reach; dense kernels do not gain).
    Attention scores and mixing (QK^T, AV) count 2 * 2 * seq_len^2 * width per layer, width being
    the heads left times their size."""
    fam = family_of(model)
    dense = sparse = 0.0
    for _, mod in encoder_linears(model):
        dense += 2 * mod.in_features * mod.out_features * seq_len
        sparse += 2 * int(torch.count_nonzero(mod.weight)) * seq_len
    attn = sum(
        2 * 2 * seq_len * seq_len * n_heads(b, fam) * head_size(b, fam) for b in blocks(model)
    )
    return {"seq_len": seq_len, "flops_dense": dense + attn, "flops_nonzero": sparse + attn}
