"""Magnitude pruning: schedule, exact sparsity, frozen embeddings, snapshots, rewind, and the real
loop."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.nn.utils import prune
from transformers import BertConfig, BertForSequenceClassification

from robust_compress.compress.magnitude import (
    MagnitudeConfig,
    MagnitudePruning,
    check_sparsity,
    measured_sparsity,
    prunable_linears,
    sparsity_at,
)
from robust_compress.config import RunConfig
from robust_compress.io import UserError
from robust_compress.train.loop import Hook, train
from robust_compress.train.losses import make_loss

N_PRUNABLE = 2 * (
    4 * 32 * 32 + 2 * 32 * 64
)  # 2 layers: q, k, v, attn-out (32x32); FFN in/out (32x64)


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def comp(**kw) -> MagnitudeConfig:
    return MagnitudeConfig(**({"method": "magnitude", "sparsity": 0.6} | kw))


def effective(m: torch.nn.Linear) -> torch.Tensor:
    return (
        (m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight).detach().clone()
    )


def zero_masks(model) -> dict[str, torch.Tensor]:
    return {name: effective(m) == 0 for name, m in prunable_linears(model)}


def zeros(model) -> int:
    return sum(int(z.sum()) for z in zero_masks(model).values())


def make_optimizer(model) -> torch.optim.Optimizer:
    """Built after on_train_begin, as the loop does (weight_orig replaces weight)."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1
    )


def run_steps(model, hook, opt, steps, gen: torch.Generator) -> None:
    """Optimizer steps on random data; the hook sees each step as in train.train."""
    model.train()
    for step in steps:
        ids = torch.randint(0, 100, (4, 8), generator=gen)
        labels = torch.randint(0, 3, (4,), generator=gen)
        F.cross_entropy(model(input_ids=ids).logits, labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        hook.on_step_end(model, step)


def test_prunable_linears_are_the_encoder_linears():
    names = [n for n, _ in prunable_linears(tiny_model())]
    assert len(names) == 2 * 6
    assert all(".encoder.layer." in n for n in names)
    assert not any(k in n for n in names for k in ("embeddings", "pooler", "classifier"))
    assert sum(m.weight.numel() for _, m in prunable_linears(tiny_model())) == N_PRUNABLE


def test_cubic_schedule():
    cfg = comp(sparsity=0.6, prune_start=0.1, prune_end=0.7)
    values = [sparsity_at(t, 100, cfg) for t in range(101)]
    assert values[0] == 0 and values[10] == 0
    assert values[70] == 0.6 and values[100] == 0.6
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert values[40] == pytest.approx(0.6 * (1 - 0.5**3))  # halfway: cubic is ahead of linear
    assert sparsity_at(
        40, 100, comp(sparsity=0.6, prune_start=0.1, prune_end=0.7, schedule="linear")
    ) == pytest.approx(0.3)
    assert sparsity_at(0, 100, comp(schedule="oneshot")) == 0.6


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exact_sparsity_survives_training_and_reload(scope, tmp_path):
    model = tiny_model()
    hook = MagnitudePruning(comp(sparsity=0.6, prune_end=0.5, prune_every=2, scope=scope))
    hook.on_train_begin(model, 10)
    # Masks exist from the start even at sparsity 0: a resumed run loads weight_orig/weight_mask.
    assert all(hasattr(m, "weight_mask") for _, m in prunable_linears(model)) and zeros(model) == 0
    opt = make_optimizer(model)
    gen = torch.Generator().manual_seed(0)
    run_steps(model, hook, opt, range(1, 6), gen)  # step 5 = prune_end: target reached

    def check():
        if scope == "global":
            assert zeros(model) == round(0.6 * N_PRUNABLE)
        else:
            for name, z in zero_masks(model).items():
                assert int(z.sum()) == round(0.6 * z.numel()), name

    check()
    at_end = zero_masks(model)
    run_steps(
        model, hook, opt, range(6, 11), gen
    )  # weight decay and momentum must not revive anything
    check()
    assert all(torch.equal(at_end[n], z) for n, z in zero_masks(model).items())
    assert all(
        len(m._forward_pre_hooks) == 1 for _, m in prunable_linears(model)
    )  # no stacked methods

    hook.on_train_end(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert not any(prune.is_pruned(m) for _, m in prunable_linears(model))
    check()
    model.save_pretrained(tmp_path)
    loaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert all(torch.equal(at_end[n], z) for n, z in zero_masks(loaded).items())
    assert measured_sparsity(loaded) == measured_sparsity(model)
    ids = torch.randint(0, 100, (2, 8), generator=gen)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_embeddings_frozen_and_dense_but_head_trains():
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    hook = MagnitudePruning(comp(schedule="oneshot"))
    hook.on_train_begin(model, 5)
    run_steps(model, hook, make_optimizer(model), range(1, 6), torch.Generator().manual_seed(0))
    for name, value in model.bert.embeddings.state_dict().items():
        assert torch.equal(value, before[f"bert.embeddings.{name}"]), name
    assert not any(hasattr(m, "weight_mask") for m in model.bert.embeddings.modules())
    assert not torch.equal(model.classifier.weight, before["classifier.weight"])
    assert int((model.classifier.weight == 0).sum()) == 0


def test_masks_nested_for_same_weights_and_recomputed_from_originals():
    model = tiny_model()
    low, high = copy.deepcopy(model), copy.deepcopy(model)
    MagnitudePruning(comp(sparsity=0.3, schedule="oneshot")).on_train_begin(low, 10)
    MagnitudePruning(comp(sparsity=0.6, schedule="oneshot")).on_train_begin(high, 10)
    assert zeros(low) == round(0.3 * N_PRUNABLE) and zeros(high) == round(0.6 * N_PRUNABLE)
    for (name, z_low), z_high in zip(
        zero_masks(low).items(), zero_masks(high).values(), strict=True
    ):
        assert torch.all(z_high[z_low]), name  # every weight pruned at 0.3 is pruned at 0.6

    # Masks are recomputed from |weight_orig|, not stacked: a pruned weight that becomes large
    # again comes back at the next update, and the count stays exact.
    hook = MagnitudePruning(comp(sparsity=0.6, prune_end=1.0, prune_every=1, schedule="linear"))
    hook.on_train_begin(model, 10)
    hook.on_step_end(model, 5)
    query = model.bert.encoder.layer[0].attention.self.query
    row, col = (query.weight_mask == 0).nonzero()[0].tolist()
    with torch.no_grad():
        query.weight_orig[row, col] = 10.0
    hook.on_step_end(model, 6)
    assert query.weight_mask[row, col] == 1
    assert zeros(model) == round(sparsity_at(6, 10, hook.cfg) * N_PRUNABLE)


def test_snapshots_fire_once_at_each_sparsity():
    model = tiny_model()
    seen: list[tuple[float, float]] = []

    def on_snapshot(sparsity, snap):
        assert snap is not model
        assert not any(prune.is_pruned(m) for _, m in prunable_linears(snap))
        seen.append((sparsity, measured_sparsity(snap)))

    hook = MagnitudePruning(
        comp(sparsity=0.6, prune_end=0.8, prune_every=3, snapshots=[0.6, 0.2, 0.45]),
        on_snapshot=on_snapshot,
    )
    hook.on_train_begin(model, 10)
    run_steps(model, hook, make_optimizer(model), range(1, 11), torch.Generator().manual_seed(0))
    assert [s for s, _ in seen] == [0.2, 0.45, 0.6]
    for wanted, got in seen:
        assert abs(got - wanted) <= 1 / N_PRUNABLE
    assert prunable_linears(model)[0][1].weight_mask is not None  # the live model is still masked


def test_rewind_resets_survivors_to_start_at_prune_end():
    model = tiny_model()
    start = copy.deepcopy(model.state_dict())
    hook = MagnitudePruning(comp(sparsity=0.5, prune_end=0.5, prune_every=1, rewind=True))
    hook.on_train_begin(model, 10)
    opt = make_optimizer(model)
    gen = torch.Generator().manual_seed(0)
    run_steps(model, hook, opt, range(1, 5), gen)
    assert not torch.equal(model.classifier.weight, start["classifier.weight"])  # it did train
    run_steps(model, hook, opt, range(5, 6), gen)  # step 5 = prune_end: rewind
    for name, m in prunable_linears(model):
        assert torch.equal(effective(m), start[f"{name}.weight"] * m.weight_mask), name
    assert torch.equal(model.classifier.weight, start["classifier.weight"])
    assert zeros(model) == round(0.5 * N_PRUNABLE)


@pytest.mark.parametrize("value", [1.0, -0.1, math.nan])
def test_invalid_sparsity_raises_user_error(value):
    with pytest.raises(UserError, match=r"sparsity .* must be in \[0, 1\)"):
        check_sparsity(value)
    with pytest.raises(UserError, match=r"sparsity .* must be in \[0, 1\)"):
        MagnitudePruning(
            MagnitudeConfig.model_construct(method="magnitude", sparsity=value, snapshots=[])
        )


def test_check_sparsity_accepts_range_and_snapshots_must_be_reachable():
    assert check_sparsity(0.0) == 0.0 and check_sparsity(0.95) == 0.95
    with pytest.raises(ValidationError, match="never reached"):  # found when the config is read
        comp(sparsity=0.5, snapshots=[0.7])
    with pytest.raises(
        UserError, match="never reached"
    ):  # and by the hook, for a config built unchecked
        MagnitudePruning(
            MagnitudeConfig.model_construct(method="magnitude", sparsity=0.5, snapshots=[0.7]),
            on_snapshot=lambda s, m: None,
        )


class ToySplit(torch.utils.data.Dataset):
    """EncodedSplit-shaped examples: the label is a function of the first token, so it is
    learnable."""

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.features = []
        for row in range(n):
            length = int(torch.randint(4, 12, (1,), generator=gen))
            ids = [2] + torch.randint(5, 100, (length - 2,), generator=gen).tolist() + [3]
            self.features.append(
                {
                    "input_ids": ids,
                    "attention_mask": [1] * length,
                    "token_type_ids": [0] * length,
                    "labels": ids[1] % 3,
                    "row": row,
                }
            )
        self.lengths = [len(f["input_ids"]) for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int):
        return self.features[i]


class CrashAt(Hook):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, model, step):
        if step == self.step:
            raise RuntimeError("simulated crash")


def test_real_train_loop_resumes_from_masked_checkpoint(tmp_path):
    """A run killed mid-pruning resumes (weight_orig/weight_mask keys) and ends like an
    uninterrupted one."""
    compression = comp(sparsity=0.7, prune_end=0.5, prune_every=2)
    cfg = RunConfig(
        model="tiny",
        batch_size=4,
        max_steps=12,
        lr=1e-3,
        checkpoint_every=4,
        seed=0,
        warmup_ratio=0.0,
        compression=compression,
    )
    data = ToySplit(24)
    loss = make_loss(cfg.loss)

    whole = tiny_model()
    train(whole, data, cfg, loss, tmp_path / "whole", hooks=[MagnitudePruning(compression)])
    assert not any(k.endswith(("_orig", "_mask")) for k in whole.state_dict())
    assert zeros(whole) == round(0.7 * N_PRUNABLE)

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            tiny_model(),
            data,
            cfg,
            loss,
            tmp_path / "killed",
            hooks=[MagnitudePruning(compression), CrashAt(6)],
        )
    resumed = tiny_model()
    train(resumed, data, cfg, loss, tmp_path / "killed", hooks=[MagnitudePruning(compression)])
    assert zeros(resumed) == round(0.7 * N_PRUNABLE)
    expected = whole.state_dict()
    for name, value in resumed.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
