"""Structured pruning (models.pruned surgery, compress.structured importance) on tiny random
BERTs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from robust_compress.compress.structured import ffn_importance, head_importance, select_heads
from robust_compress.io import UserError
from robust_compress.models.infer import INPUT_KEYS
from robust_compress.models.pruned import keep_layers, prune_ffn_neurons, prune_heads

HIDDEN, LAYERS, N_HEADS, FFN = 32, 2, 4, 37
HEAD_DIM = HIDDEN // N_HEADS


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=60,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=N_HEADS,
        intermediate_size=FFN,
        max_position_embeddings=32,
        num_labels=3,
    )
    return BertForSequenceClassification(cfg).eval()


def make_batch(seed: int = 1, size: int = 4, length: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(size, length, dtype=torch.long)
    mask[0, length // 2 :] = 0  # one padded example, so masking is exercised
    return {
        "input_ids": torch.randint(0, 60, (size, length), generator=g),
        "attention_mask": mask,
        "token_type_ids": torch.zeros(size, length, dtype=torch.long),
        "labels": torch.randint(0, 3, (size,), generator=g),
    }


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: batch[k] for k in INPUT_KEYS}).logits


def gate_heads(model, heads: dict[int, list[int]]) -> list:
    """Dense-model reference: zero the chosen heads' slices at the input of
    attention.output.dense."""
    handles = []
    for layer, idx in heads.items():

        def hook(module, args, idx=idx):
            x = args[0].unflatten(-1, (N_HEADS, HEAD_DIM)).clone()
            x[..., idx, :] = 0
            return (x.flatten(-2),)

        handles.append(
            model.bert.encoder.layer[layer].attention.output.dense.register_forward_pre_hook(hook)
        )
    return handles


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_pruned_model_matches_dense_twin_with_gated_heads():
    dense, batch = tiny_model(), make_batch()
    pruned = prune_heads(copy.deepcopy(dense), {0: [1, 3], 1: [0]})
    gate_heads(dense, {0: [1, 3], 1: [0]})
    assert not torch.allclose(
        logits(dense, batch), logits(tiny_model(), batch), atol=1e-4
    )  # gating matters
    torch.testing.assert_close(logits(pruned, batch), logits(dense, batch), atol=1e-5, rtol=0)
    assert [b.attention.self.num_attention_heads for b in pruned.bert.encoder.layer] == [2, 3]
    assert [b.attention.self.all_head_size for b in pruned.bert.encoder.layer] == [
        2 * HEAD_DIM,
        3 * HEAD_DIM,
    ]
    assert pruned.bert.encoder.layer[0].attention.self.query.weight.shape == (2 * HEAD_DIM, HIDDEN)
    assert pruned.bert.encoder.layer[0].attention.output.dense.weight.shape == (
        HIDDEN,
        2 * HEAD_DIM,
    )


def test_parameter_count_shrinks_exactly():
    model = tiny_model()
    before = n_params(model)
    prune_heads(model, {0: [0, 2], 1: [3]})
    # each head: Q, K, V lose HEAD_DIM rows (weights + bias); the output dense loses HEAD_DIM
    # columns
    per_head = 3 * (HEAD_DIM * HIDDEN + HEAD_DIM) + HIDDEN * HEAD_DIM
    assert before - n_params(model) == 3 * per_head
    before = n_params(model)
    prune_ffn_neurons(model, {1: [0, 5, 36]})
    per_neuron = (
        HIDDEN + 1
    ) + HIDDEN  # a row (+ bias) of intermediate.dense, a column of output.dense
    assert before - n_params(model) == 3 * per_neuron


def test_save_and_reload_reproduces_logits_and_structure(tmp_path):
    model, batch = tiny_model(), make_batch()
    prune_heads(model, {0: [2], 1: [0, 1, 3]})
    prune_ffn_neurons(model, {0: [4, 7]})
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "pruned_bert"
    assert saved["pruned_heads"] == {"0": [2], "1": [0, 1, 3]}
    assert saved["architectures"] == ["PrunedBertForSequenceClassification"]
    assert "auto_map" not in saved  # nothing to execute from the folder

    reloaded, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    reloaded.eval()
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert type(reloaded).__name__ == "PrunedBertForSequenceClassification"
    assert reloaded.config.model_type == "pruned_bert"
    assert reloaded.config.pruned_heads == {"0": [2], "1": [0, 1, 3]}
    assert reloaded.config.pruned_ffn_neurons == {"0": [4, 7]}
    assert [b.attention.self.num_attention_heads for b in reloaded.bert.encoder.layer] == [3, 1]
    assert n_params(reloaded) == n_params(model)
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_reload_through_project_loader(tmp_path):
    from robust_compress.models.load import load_model

    model, batch = tiny_model(), make_batch()
    prune_heads(model, {1: [2]})
    model.save_pretrained(tmp_path)
    reloaded = load_model(str(tmp_path), ["LABEL_0", "LABEL_1", "LABEL_2"]).eval()
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_iterative_pruning_records_original_indices(tmp_path):
    model, batch = tiny_model(), make_batch()
    prune_heads(model, {0: [1]})
    prune_heads(model, {0: [1], 1: [3]})  # current head 1 of layer 0 is original head 2
    prune_heads(model, {1: [0]})
    assert model.config.pruned_heads == {"0": [1, 2], "1": [0, 3]}

    once = prune_heads(tiny_model(), {0: [1, 2], 1: [0, 3]})
    assert torch.equal(logits(model, batch), logits(once, batch))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_prune_heads_rejects_bad_requests():
    model = tiny_model()
    with pytest.raises(UserError, match="all 4 heads"):
        prune_heads(model, {0: [0, 1, 2, 3]})
    with pytest.raises(UserError, match="out of range"):
        prune_heads(model, {0: [4]})
    with pytest.raises(UserError, match="does not exist"):
        prune_heads(model, {2: [0]})
    with pytest.raises(UserError, match="repeated"):
        prune_heads(model, {1: [1, 1]})
    assert n_params(model) == n_params(tiny_model())  # a rejected request changes nothing


def test_importance_shape_sign_and_zeroed_head():
    model = tiny_model()
    with torch.no_grad():  # head 2 of layer 1 no longer reaches the output
        model.bert.encoder.layer[1].attention.output.dense.weight[
            :, 2 * HEAD_DIM : 3 * HEAD_DIM
        ] = 0
    batches = [make_batch(seed=s) for s in range(3)]
    before = logits(model, batches[0])
    imp = head_importance(model, batches)
    assert imp.shape == (LAYERS, N_HEADS)
    assert (imp >= 0).all()
    assert imp[1, 2] == 0
    assert (imp[0] > 0).all() and (imp[1, [0, 1, 3]] > 0).all()
    torch.testing.assert_close(imp.norm(dim=1), torch.ones(LAYERS))  # per-layer L2 normalization
    # gates are removed again: the model computes what it did before
    assert not model.bert.encoder.layer[0].attention.output.dense._forward_pre_hooks
    assert torch.equal(logits(model, batches[0]), before)


def test_importance_is_mean_absolute_per_example_gradient():
    """Check I_h = mean_x |dL(x)/d xi_h| against central finite differences on a gate."""
    model = tiny_model().double()
    batch = make_batch(size=3)
    imp = head_importance(model, [batch], normalize=False)
    layer, head, eps = 1, 3, 1e-6

    def losses(scale: float) -> torch.Tensor:
        def hook(module, args):
            x = args[0].unflatten(-1, (N_HEADS, HEAD_DIM)).clone()
            x[..., head, :] *= scale
            return (x.flatten(-2),)

        h = model.bert.encoder.layer[layer].attention.output.dense.register_forward_pre_hook(hook)
        try:
            return F.cross_entropy(logits(model, batch), batch["labels"], reduction="none")
        finally:
            h.remove()

    per_example = (losses(1 + eps) - losses(1 - eps)) / (2 * eps)
    assert (
        per_example.abs().mean() != per_example.mean().abs()
    )  # signs differ: per-example abs matters
    torch.testing.assert_close(
        imp[layer, head].double(), per_example.abs().mean(), rtol=1e-4, atol=1e-7
    )


def test_importance_ignores_dropout_mode_grad_mode_and_mean_loss_scaling():
    model, batches = tiny_model(), [make_batch(seed=s) for s in range(2)]
    reference = head_importance(model, batches, normalize=False)
    model.train()
    with torch.no_grad():
        imp = head_importance(
            model, batches, normalize=False, loss_fn=lambda z, b: F.cross_entropy(z, b["labels"])
        )  # a batch-mean loss
    assert model.training  # the caller's mode is restored
    torch.testing.assert_close(imp, reference)  # measured without dropout, same per-example scale


def test_importance_after_pruning_is_nan_padded_and_selectable():
    model = prune_heads(tiny_model(), {0: [0, 1]})
    imp = head_importance(model, [make_batch()])
    assert imp.shape == (LAYERS, N_HEADS)
    assert torch.isnan(imp[0, 2:]).all() and not torch.isnan(imp[0, :2]).any()
    sel = select_heads(imp, 4)  # 6 heads exist, one per layer must stay: 4 is the most
    assert sum(map(len, sel.values())) == 4 and all(h < 2 for h in sel.get(0, []))
    with pytest.raises(UserError, match="at most 4"):
        select_heads(imp, 5)


def test_select_heads_least_important_globally_and_keeps_one_per_layer():
    imp = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.9, 0.05, 0.8, 0.7]])
    assert select_heads(imp, 2) == {0: [0], 1: [1]}
    assert select_heads(imp, 0.25) == {0: [0], 1: [1]}  # a fraction of all 8 heads
    # the 5 lowest include all of layer 0: its last head stays and the next lowest, (1, 3), goes
    assert select_heads(imp, 5) == {0: [0, 1, 2], 1: [1, 3]}
    chosen = select_heads(imp, 6)
    assert all(N_HEADS - len(chosen.get(layer, [])) >= 1 for layer in range(2))


@pytest.mark.parametrize(
    "amount, message",
    [
        (9, "only 8"),
        (7, "at most 6"),
        (0, "positive"),
        (-1, "positive"),
        (-0.5, "positive"),
        (2.5, "whole"),
        (0.01, "rounds to 0"),
    ],
)
def test_select_heads_errors(amount, message):
    with pytest.raises(UserError, match=message):
        select_heads(torch.rand(2, 4), amount)


def test_ffn_pruning_matches_zeroed_neurons_and_importance():
    dense, batch = tiny_model(), make_batch()
    pruned = prune_ffn_neurons(copy.deepcopy(dense), {0: [3, 10], 1: [0]})
    with torch.no_grad():  # dense reference: the neurons' outgoing columns set to zero
        dense.bert.encoder.layer[0].output.dense.weight[:, [3, 10]] = 0
        dense.bert.encoder.layer[1].output.dense.weight[:, [0]] = 0
    torch.testing.assert_close(logits(pruned, batch), logits(dense, batch), atol=1e-5, rtol=0)
    imp = ffn_importance(dense, [batch])
    assert imp.shape == (LAYERS, FFN)
    assert imp[0, 3] == 0 and imp[0, 10] == 0 and imp[1, 0] == 0 and (imp >= 0).all()


def test_drop_layers_renumbers_records_and_reloads(tmp_path):
    model, batch = tiny_model(), make_batch()
    prune_heads(model, {0: [1], 1: [0, 2]})
    keep_layers(model, [1])
    assert model.config.num_hidden_layers == 1
    assert model.config.pruned_heads == {"0": [0, 2]}
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded, batch), logits(model, batch))
    with pytest.raises(UserError, match=r"cannot keep layers \[0, 0\] of a 1-layer model"):
        keep_layers(model, [0, 0])
    with pytest.raises(UserError, match=r"cannot keep layers \[\]"):
        keep_layers(model, [])
