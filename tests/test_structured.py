"""`structured`: heads and FFN neurons pruned during training to a FLOPs or speed-up target."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from robust_compress.compress.base import Prepare
from robust_compress.compress.structured_target import StructuredConfig, StructuredPruning
from robust_compress.data.batching import EncodedSplit
from robust_compress.models.families import encoder_flops
from robust_compress.models.load import load_model
from robust_compress.stages import compress, finetune
from robust_compress.train.loop import Hook, TrainArgs, train
from robust_compress.train.losses import REGISTRY, make_loss

from .conftest import LABELS, make_examples, tiny_run_config
from .test_families import _batch, _logits, _make


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, shared_tiny_task):
    root = tmp_path_factory.mktemp("structured")
    return finetune(
        tiny_run_config(_make(root, "bert"), shared_tiny_task, root / "teacher", max_steps=6)
    )


def test_target_is_met_kept_after_reload_and_equals_the_masked_twin(
    teacher, tiny_tokenizer, tmp_path
):
    model = load_model(str(teacher), LABELS)
    data = EncodedSplit(make_examples(96), tiny_tokenizer, 32)
    cfg = StructuredConfig(target_flops=0.5, prune_every=2, importance_batches=1)
    hook = StructuredPruning(cfg, Prepare(data=data, seed=0), 0.5)
    dense = encoder_flops(model)["flops_dense"]

    class Twin(Hook):  # the masked model's logits just before the masks become surgery
        def on_train_end(self, m):
            m.eval()
            self.masked = _logits(m, _batch())

    twin = Twin()
    train(
        model,
        data,
        TrainArgs(batch_size=16, max_steps=12, lr=1e-3),
        make_loss(REGISTRY["ce"].Settings()),
        tmp_path / "w",
        hooks=[twin, hook],
    )
    model.eval()
    kept = encoder_flops(model)["flops_dense"] / dense
    assert 0.40 < kept <= 0.5 + 1e-9  # the target, within one unit of granularity below
    assert not any("unit_mask" in k for k in model.state_dict())
    torch.testing.assert_close(_logits(model, _batch()), twin.masked, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert encoder_flops(reloaded)["flops_dense"] == encoder_flops(model)["flops_dense"]
    torch.testing.assert_close(_logits(reloaded, _batch()), twin.masked, atol=1e-5, rtol=1e-5)


def test_a_resumed_structured_run_equals_an_uninterrupted_one(teacher, tiny_tokenizer, tmp_path):
    data = EncodedSplit(make_examples(96), tiny_tokenizer, 32)
    cfg = StructuredConfig(target_flops=0.6, prune_every=2, importance_batches=1)
    args = TrainArgs(batch_size=16, max_steps=12, lr=1e-3, checkpoint_every=3)
    ce = make_loss(REGISTRY["ce"].Settings())

    def run(work, hooks=()):
        m = load_model(str(teacher), LABELS)
        train(
            m,
            data,
            args,
            ce,
            work,
            hooks=[*hooks, StructuredPruning(cfg, Prepare(data=data, seed=0), 0.6)],
        )
        return m

    a = run(tmp_path / "a")

    class Kill(Hook):
        def on_step_end(self, m, step):
            if step == 8:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", [Kill()])
    b = run(tmp_path / "b")
    assert a.config.pruned_heads == b.config.pruned_heads
    assert a.config.pruned_ffn_neurons == b.config.pruned_ffn_neurons
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_structured_compress_with_distillation_records_what_it_removed(
    teacher, shared_tiny_task, tmp_path
):
    out = compress(
        tiny_run_config(
            teacher,
            shared_tiny_task,
            tmp_path / "s",
            max_steps=10,
            loss={"name": "distil"},
            inputs={"teacher": str(teacher)},
            compression={
                "method": "structured",
                "target_flops": 0.5,
                "prune_every": 2,
                "importance_batches": 1,
            },
        )
    )
    rec = json.loads((out / "compression.json").read_text())
    # what was kept, read from the saved files alone (config.json and the safetensors shapes), not
    # from the method's own bookkeeping
    before, after = _kept_units(teacher), _kept_units(out)
    head_size = before["hidden"] // before["heads_per_layer"]
    heads_kept = sum(w // head_size for w in after["attn_width"])
    assert rec["heads_removed"] == before["layers"] * before["heads_per_layer"] - heads_kept > 0
    assert rec["ffn_neurons_removed"] == sum(before["ffn"]) - sum(after["ffn"]) > 0
    assert before["attn_width"] == [before["hidden"]] * before["layers"]  # the teacher is dense
    # FLOPs at the method's sequence length (StructuredConfig.seq_len, 128), counted by hand: per
    # layer, Q, K, V and the attention output (width a = heads kept x head size), the two FFN
    # matrices (f neurons), 2 multiply-adds per weight per token, plus QK^T and AV (2 * 2 * S^2 * a)
    flops_kept = _flops(after, 128) / _flops(before, 128)
    assert rec["flops_kept"] == pytest.approx(flops_kept, rel=1e-9)
    assert 0.3 < flops_kept <= 0.5 + 1e-9  # the target, not far below it
    assert rec["parameters"] == after["parameters"] < rec["parameters_before"]
    assert rec["parameters_before"] == before["parameters"]


def _kept_units(folder) -> dict:
    """Per layer, the attention width (rows of the query matrix) and the FFN width (rows of the
    intermediate matrix) of a saved BERT classifier, from its safetensors shapes; its parameters."""
    from safetensors import safe_open

    cfg = json.loads((folder / "config.json").read_text())
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        names = f.keys()
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
    n = cfg["num_hidden_layers"]
    layer = "bert.encoder.layer.{}.".format
    parts = ("attention.self.query", "attention.self.key", "attention.self.value")
    parts += ("attention.output.dense", "intermediate.dense", "output.dense")
    out = {
        "layers": n,
        "hidden": cfg["hidden_size"],
        "heads_per_layer": cfg["num_attention_heads"],
        "attn_width": [shapes[layer(i) + "attention.self.query.weight"][0] for i in range(n)],
        "ffn": [shapes[layer(i) + "intermediate.dense.weight"][0] for i in range(n)],
        "linears": [[shapes[f"{layer(i)}{p}.weight"] for p in parts] for i in range(n)],
        "parameters": sum(math.prod(s) for s in shapes.values()),
    }
    assert all(shapes[layer(i) + "output.dense.weight"][1] == out["ffn"][i] for i in range(n))
    return out


def _flops(units: dict, seq: int) -> float:
    linear = sum(2 * o * i * seq for mats in units["linears"] for o, i in mats)
    attention = sum(2 * 2 * seq * seq * a for a in units["attn_width"])
    return linear + attention


def test_speedup_target_is_calibrated_by_measurement(
    teacher, shared_tiny_task, tmp_path, monkeypatch
):
    """The calibration times pruned copies with the speed harness; here the harness is replaced by a
    machine whose speed is exactly 1 / FLOPs (a test must not depend on this machine's load), so the
    interpolated target must be 1 / 1.3 of the FLOPs."""

    def fake_throughput(entries, **kw):
        return {k: 1e12 / encoder_flops(m)["flops_dense"] for k, (m, _) in entries.items()}

    monkeypatch.setattr("robust_compress.compress.structured_target.throughput", fake_throughput)
    out = compress(
        tiny_run_config(
            teacher,
            shared_tiny_task,
            tmp_path / "s",
            max_steps=4,
            compression={
                "method": "structured",
                "target_speedup": 1.3,
                "prune_every": 2,
                "importance_batches": 1,
            },
        )
    )
    rec = json.loads((out / "compression.json").read_text())
    cal = rec["calibration"]
    assert set(cal["measured"]) == {"0.8", "0.6", "0.45", "0.3", "0.2"}
    assert cal["target_flops"] == pytest.approx(
        1 / 1.3, abs=0.03
    )  # between measured points, in log speed
    assert rec["flops_kept"] <= cal["target_flops"] + 1e-9


def test_one_target_exactly():
    with pytest.raises(ValueError, match="exactly one of"):
        StructuredConfig()
    with pytest.raises(ValueError, match="exactly one of"):
        StructuredConfig(target_flops=0.5, target_speedup=2.0)
