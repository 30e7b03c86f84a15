"""Issue 19: recovery to a speed target. Layer distillation (a loss with a live teacher), the
retraining-free Fisher start (mask search to a budget, rescaling), latency tables per runtime, every
runtime timed by the speed stage and reported, int8 stacked on structured runs in a study."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification

from robust_compress.compress.fisher import fisher_prune, search
from robust_compress.compress.latency import Costs, flops_costs, latency_table, speed_target
from robust_compress.compress.structured import train_batches
from robust_compress.compress.structured_target import StructuredConfig
from robust_compress.data.batching import EncodedSplit
from robust_compress.io import UserError
from robust_compress.models.families import (
    blocks,
    encoder_flops,
    family_of,
    ffn_width,
    get_path,
    n_heads,
)
from robust_compress.models.infer import model_inputs
from robust_compress.models.load import load_model, load_tokenizer
from robust_compress.models.runtimes import RUNTIMES
from robust_compress.report import build_report
from robust_compress.stages import compress, finetune, measure_speed
from robust_compress.study.run import prepare
from robust_compress.train.losses import REGISTRY, make_loss
from robust_compress.train.losses.distil_layers import layer_map

from .conftest import LABELS, make_examples, tiny_run_config
from .test_families import FAMILIES, _batch, _gate, _logits, _make


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    """A tiny random classifier of every family (test_families' recipe), and a BERT with another
    vocabulary."""
    root = tmp_path_factory.mktemp("families")
    return {f: _make(root, f) for f in FAMILIES} | {
        "bert-shuffled": _make(root, "bert", shuffle_vocab=True)
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, shared_tiny_task):
    root = tmp_path_factory.mktemp("recovery")
    return finetune(
        tiny_run_config(_make(root, "bert"), shared_tiny_task, root / "teacher", max_steps=6)
    )


# ---------------------------------------------------------------- layer distillation


def _mse(a, b, mask):
    """Masked mean squared error by hand: over unmasked tokens and the hidden units."""
    tot = n = 0.0
    for i in range(len(a)):
        for t in range(len(a[i])):
            if mask[i][t]:
                tot += sum((x - y) ** 2 for x, y in zip(a[i][t], b[i][t], strict=True))
                n += len(a[i][t])
    return tot / n


def test_layer_distillation_equals_its_formula_by_hand():
    """L = (1 - lam) CE + lam KL(p_T || p_S) + mu sum_i MSE(W h_S^i, h_T^t(i)); padding excluded."""
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
    labels = torch.tensor([0, 2])
    t_logits = torch.tensor([[3.0, 0.0, -1.0], [0.5, 0.2, 1.5]])
    mask = [[1, 1], [1, 0]]
    g = torch.Generator().manual_seed(0)
    s_layers = [
        torch.randn(2, 2, 2, generator=g) for _ in range(3)
    ]  # embeddings + 2 student layers, d_S = 2
    w, b = (
        torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]]),
        torch.tensor([0.0, 0.5, 0.0]),
    )  # d_T = 3
    mapped = [h @ w.T + b for h in s_layers]

    def near(h):
        return h + 0.01 * torch.randn(h.shape, generator=g)

    # teacher layer 1 resembles student layer 1, teacher layer 3 student layer 2, teacher layer 2
    # nothing
    t_layers = [
        torch.randn(2, 2, 3, generator=g),
        near(mapped[1]),
        5 + torch.randn(2, 2, 3, generator=g),
        near(mapped[2]),
    ]
    batch = {
        "labels": labels,
        "teacher_logits": t_logits,
        "attention_mask": torch.tensor(mask),
        "teacher_hidden": tuple(t_layers),
    }
    lam, mu = 0.9, 0.7

    def distil_by_hand():
        total = 0.0
        for i in range(2):
            z, zt = logits[i].tolist(), t_logits[i].tolist()
            ps = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
            pt = [math.exp(v) / sum(math.exp(u) for u in zt) for v in zt]
            kl = sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))
            total += ((1 - lam) * -math.log(ps[labels[i]]) + lam * kl) / 2
        return total

    def L(i, j):
        return _mse(mapped[i + 1].tolist(), t_layers[j + 1].tolist(), mask)

    for how, chosen in (("search", None), ("uniform", [1, 2])):
        loss_fn = make_loss(
            REGISTRY["distil_layers"].Settings(name="distil_layers", lam=lam, mu=mu, layer_map=how),
            hidden_size=2,
            teacher_hidden_size=3,
        )
        with torch.no_grad():
            loss_fn.map.weight.copy_(w)
            loss_fn.map.bias.copy_(b)
        if (
            chosen is None
        ):  # each student layer: the lowest MSE at or after the previous layer's match
            first = min(range(3), key=lambda j: L(0, j))
            chosen = [first, min(range(first, 3), key=lambda j: L(1, j))]
            assert chosen == [0, 2]
        got = loss_fn(logits, batch, tuple(s_layers))
        expected = distil_by_hand() + mu * (L(0, chosen[0]) + L(1, chosen[1]))
        assert abs(got.item() - expected) < 1e-5, how
    got.backward()
    assert (
        loss_fn.map.weight.grad.abs().sum() > 0
    )  # the map is this loss's own parameters: it learns

    distil = make_loss(REGISTRY["distil"].Settings(name="distil", lam=lam))(logits, batch)
    no_layers = make_loss(
        REGISTRY["distil_layers"].Settings(name="distil_layers", lam=lam, mu=0.0),
        hidden_size=2,
        teacher_hidden_size=3,
    )(logits, batch, tuple(s_layers))
    torch.testing.assert_close(no_layers, distil)
    # equal sizes: the map starts as the identity (a pruned student lives in its teacher's hidden
    # space)
    same = make_loss(REGISTRY["distil_layers"].Settings(name="distil_layers"), hidden_size=3)
    torch.testing.assert_close(same.map.weight, torch.eye(3))
    assert layer_map(torch.zeros(3, 6), "uniform") == [1, 3, 5]


def test_layer_distillation_refuses_a_teacher_with_another_tokenizer(
    family_models, shared_tiny_task, tmp_path
):
    other = finetune(
        tiny_run_config(
            family_models["bert-shuffled"], shared_tiny_task, tmp_path / "t", max_steps=1
        )
    )
    cfg = tiny_run_config(
        family_models["bert"],
        shared_tiny_task,
        tmp_path / "s",
        max_steps=2,
        loss={"name": "distil_layers"},
        inputs={"teacher": str(other)},
        compression={"method": "distill"},
    )
    with pytest.raises(UserError, match="another vocabulary"):
        compress(cfg)
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- the Fisher start


@pytest.mark.parametrize("fraction", [0.4, 0.6, 0.8])
@pytest.mark.parametrize(
    "costs",
    [
        Costs(head=7.0, neuron=1.3, fixed=5.0, dense=0.0),
        Costs(head=2.5e-5, neuron=3e-7, fixed=5e-5, dense=0.0),
    ],
    ids=["flops", "latency"],
)
def test_the_mask_search_keeps_the_budget_exactly_and_the_most_importance(fraction, costs):
    g = torch.Generator().manual_seed(1)
    heads = [torch.rand(4, generator=g) for _ in range(3)]
    neurons = [torch.rand(10, generator=g) * 0.3 for _ in range(3)]
    costs = Costs(costs.head, costs.neuron, costs.fixed, costs.total(12, 30))
    budget = fraction * costs.dense
    drop_h, drop_n = search(heads, neurons, costs, budget)
    kept_h = [[u for u in range(4) if u not in drop_h.get(i, [])] for i in range(3)]
    kept_n = [[u for u in range(10) if u not in drop_n.get(i, [])] for i in range(3)]
    nh, nn_ = sum(map(len, kept_h)), sum(map(len, kept_n))
    total = costs.total(nh, nn_)
    assert total <= budget * (1 + 1e-12)
    assert all(kept_h) and all(kept_n)  # every layer keeps a head and a neuron
    assert (nh == 12 or total + costs.head > budget) and (
        nn_ == 30 or total + costs.neuron > budget
    )  # nothing fits
    # no other feasible choice (each layer's best unit kept, any k heads, any f neurons) keeps more
    # importance
    best_h = sorted(
        (float(t[u]) for t in heads for u in range(4) if u != int(t.argmax())), reverse=True
    )
    best_n = sorted(
        (float(t[u]) for t in neurons for u in range(10) if u != int(t.argmax())), reverse=True
    )
    brute = max(
        sum(best_h[:k]) + sum(best_n[:f])
        for k in range(10)
        for f in range(28)
        if costs.total(3 + k, 3 + f) <= budget
    )
    kept = sum(
        float(heads[i][u]) for i in range(3) for u in kept_h[i] if u != int(heads[i].argmax())
    ) + sum(
        float(neurons[i][u]) for i in range(3) for u in kept_n[i] if u != int(neurons[i].argmax())
    )
    assert kept == pytest.approx(brute)
    with pytest.raises(UserError, match="below what one head and one neuron per layer cost"):
        search(heads, neurons, costs, 0.9 * costs.total(3, 3))


def _norm_inputs(model, batches):
    """The input of layer 0's attention LayerNorm (output + residual of the first pruned
    sub-layer)."""
    fam = family_of(model)
    got = []
    handle = get_path(blocks(model)[0], fam.attn_norm).register_forward_pre_hook(
        lambda m, a: got.append(a[0].detach())
    )
    with torch.no_grad():
        for b in batches:
            model(**model_inputs(model, b))
    handle.remove()
    return got


@pytest.mark.parametrize("family", FAMILIES)
def test_fisher_pruning_meets_flops_budget_equals_masked_twin_and_rescaling_lowers_error(
    family, family_models
):
    model = load_model(str(family_models[family]), LABELS).eval()
    data = EncodedSplit(make_examples(64), load_tokenizer(str(family_models[family])), 32)
    costs = flops_costs(model)
    plain, rec = fisher_prune(
        copy.deepcopy(model), data, 0, 0.5, costs, samples=64, rescale_on=False
    )
    kept = encoder_flops(plain)["flops_dense"] / costs.dense
    fam = family_of(plain)
    heads, neurons = (
        sum(n_heads(b, fam) for b in blocks(plain)),
        sum(ffn_width(b, fam) for b in blocks(plain)),
    )
    assert kept <= 0.5 + 1e-12 and rec["cost_kept"] == pytest.approx(kept)
    assert (kept + costs.neuron / costs.dense > 0.5) or neurons == sum(
        ffn_width(b, fam) for b in blocks(model)
    )
    assert heads < sum(n_heads(b, fam) for b in blocks(model))
    twin = copy.deepcopy(model)  # the dense model with the removed units' inputs zeroed
    _gate(
        twin,
        {int(k): v for k, v in plain.config.pruned_heads.items()},
        {int(k): v for k, v in plain.config.pruned_ffn_neurons.items()},
    )
    torch.testing.assert_close(
        _logits(plain.eval(), _batch()), _logits(twin, _batch()), atol=1e-5, rtol=1e-5
    )

    scaled, rec = fisher_prune(
        copy.deepcopy(model), data, 0, 0.5, costs, samples=64, rescale_on=True
    )
    assert (
        scaled.config.pruned_heads == plain.config.pruned_heads
    )  # rescaling changes weights, not the mask
    r = rec["rescale"]
    assert r["sublayers"] == 2 * len(blocks(model)) and r["error_after"] < r["error_before"]
    batches = train_batches(data, 32, 2, 0)  # what the fit saw
    dense, before, after = (_norm_inputs(m, batches) for m in (model, plain.eval(), scaled.eval()))

    def err(got):
        return sum(float(((g - d) ** 2).sum()) for g, d in zip(got, dense, strict=True))

    assert err(after) <= err(before) * (
        1 + 1e-6
    )  # least squares on the first sub-layer: never worse
    torch.testing.assert_close(
        _logits(
            AutoModelForSequenceClassification.from_pretrained(
                _saved(scaled, family_models, family)
            ).eval(),
            _batch(),
        ),
        _logits(scaled, _batch()),
        atol=1e-5,
        rtol=1e-5,
    )


def _saved(model, family_models, family):
    folder = family_models[family].parent / f"{family}-fisher"
    model.save_pretrained(folder)
    return folder


def test_fisher_method_and_a_structured_fisher_start_recovering_with_layer_distillation(
    teacher, shared_tiny_task, tmp_path
):
    out = compress(
        tiny_run_config(
            teacher,
            shared_tiny_task,
            tmp_path / "f",
            compression={
                "method": "fisher",
                "target_flops": 0.5,
                "samples": 64,
                "rescale_examples": 32,
            },
        )
    )
    rec = json.loads((out / "compression.json").read_text())
    assert rec["flops_kept"] <= 0.5 + 1e-9 and rec["heads_removed"] > 0 and rec["loss"] is None
    assert rec["fisher"]["rescale"]["sublayers"] == 4 and rec["train_examples"] == 192
    assert not (out / "train_metrics.json").exists()  # no training
    assert (
        encoder_flops(AutoModelForSequenceClassification.from_pretrained(out))["flops_dense"]
        == rec["flops_dense"]
    )

    st = compress(
        tiny_run_config(
            teacher,
            shared_tiny_task,
            tmp_path / "s",
            max_steps=4,
            loss={"name": "distil_layers"},
            inputs={"teacher": str(teacher)},
            compression={
                "method": "structured",
                "target_flops": 0.5,
                "init": "fisher",
                "fisher_samples": 64,
            },
        )
    )
    rec = json.loads((st / "compression.json").read_text())
    assert rec["flops_kept"] <= 0.5 + 1e-9 and rec["fisher"]["samples"] == 64
    metrics = json.loads((st / "train_metrics.json").read_text())
    assert metrics["steps"] == 4 and all(np.isfinite(metrics["loss_curve"]))


# ---------------------------------------------------------------- latency tables


def test_the_latency_table_is_keyed_by_machine_and_runtime_and_a_changed_runtime_recalibrates(
    family_models, tmp_path, monkeypatch
):
    """The timer is replaced by a machine whose seconds/example are exactly linear in heads and
    neurons (a test must not depend on this machine's load): the fit recovers the costs."""
    calls = []
    factor = {"pytorch-fp32": 1.0, "onnxruntime-int8": 0.5}

    def fake_time_on(entries, runtime, batch_size=64, repeats=3, workdir=None):
        calls.append(runtime)
        out = {}
        for name, (m, _) in entries.items():
            fam = family_of(m)
            h, f = (
                sum(n_heads(b, fam) for b in blocks(m)),
                sum(ffn_width(b, fam) for b in blocks(m)),
            )
            out[name] = 1.0 / (factor[runtime] * (1e-4 + 2e-6 * h + 1e-7 * f))
        return out, {}

    monkeypatch.setattr("robust_compress.compress.latency.time_on", fake_time_on)
    model = load_model(str(family_models["bert"]), LABELS).eval()
    table = latency_table(model, "pytorch-fp32", cache_dir=tmp_path)
    assert calls == ["pytorch-fp32"]
    assert table["fit"]["head"] == pytest.approx(2e-6) and table["fit"]["neuron"] == pytest.approx(
        1e-7
    )
    assert table["fit"]["fixed"] == pytest.approx(1e-4) and {"machine", "runtime", "shape"} <= set(
        table
    )
    assert (
        latency_table(model, "pytorch-fp32", cache_dir=tmp_path) == table and len(calls) == 1
    )  # cached
    other = latency_table(
        model, "onnxruntime-int8", cache_dir=tmp_path
    )  # another runtime: measured anew
    assert calls == ["pytorch-fp32", "onnxruntime-int8"] and other["key"] != table["key"]
    assert other["fit"]["head"] == pytest.approx(1e-6)
    costs, target, record = speed_target(model, 1.1, "onnxruntime-int8", 128, tmp_path)  # cached
    assert target == pytest.approx(1 / 1.1) and costs.dense == pytest.approx(
        0.5 * (1e-4 + 2e-6 * 8 + 1e-7 * 74)
    )
    assert record["runtime"] == "onnxruntime-int8" and len(calls) == 2
    with pytest.raises(UserError, match="beyond pruning heads and FFN neurons"):
        speed_target(model, 1.5, "onnxruntime-int8", 128, tmp_path)  # the fixed part alone is 81 %
    monkeypatch.setattr(
        "robust_compress.compress.latency.machine", lambda: {"cpu": "another machine"}
    )
    latency_table(model, "pytorch-fp32", cache_dir=tmp_path)
    assert len(calls) == 3 and len(list((tmp_path / "latency").glob("*.json"))) == 3


def test_a_runtime_speed_target_prunes_against_that_runtimes_table(
    teacher, shared_tiny_task, tmp_path, monkeypatch
):
    def fake_time_on(entries, runtime, batch_size=64, repeats=3, workdir=None):
        out = {}
        for name, (m, _) in entries.items():
            fam = family_of(m)
            h, f = (
                sum(n_heads(b, fam) for b in blocks(m)),
                sum(ffn_width(b, fam) for b in blocks(m)),
            )
            out[name] = 1.0 / (1e-5 + 4e-6 * h + 1e-7 * f)
        return out, {}

    monkeypatch.setattr("robust_compress.compress.latency.time_on", fake_time_on)
    for init in ("dense", "fisher"):
        out = compress(
            tiny_run_config(
                teacher,
                shared_tiny_task,
                tmp_path / init,
                max_steps=4,
                cache_dir=str(tmp_path),
                compression={
                    "method": "structured",
                    "target_speedup": 1.5,
                    "target_runtime": "onnxruntime-fp32",
                    "init": init,
                    "prune_every": 2,
                    "importance_batches": 1,
                    "fisher_samples": 64,
                },
            )
        )
        rec = json.loads((out / "compression.json").read_text())
        assert rec["target_runtime"] == "onnxruntime-fp32" and rec[
            "target_latency"
        ] == pytest.approx(1 / 1.5)
        assert 1.5 <= rec["predicted_speedup"] < 1.8, (
            init
        )  # the target, within a unit's granularity
    with pytest.raises(ValueError, match="target_runtime goes with target_speedup"):
        StructuredConfig(target_flops=0.5, target_runtime="pytorch-fp32")


# ------------------------------------------------------------ every runtime: speed stage and report


def test_the_speed_stage_times_every_runtime_and_records_what_one_cannot_run(
    teacher, shared_tiny_task, tmp_path
):
    q = compress(
        tiny_run_config(
            teacher, shared_tiny_task, tmp_path / "q", compression={"method": "quantize"}
        )
    )
    cfg = tiny_run_config(teacher, shared_tiny_task, tmp_path / "x")
    res = measure_speed(
        {"teacher": teacher, "int8": q},
        cfg,
        tmp_path / "speed.json",
        n=32,
        repeats=1,
        runtimes=list(RUNTIMES),
    )
    assert set(res["examples_per_s"]) == {"teacher", "int8"}  # the study's own precision, as before
    assert list(res["runtimes"]) == list(RUNTIMES)
    for rt, r in res["runtimes"].items():
        assert r["examples_per_s"]["teacher"] > 0, rt
    assert (
        res["runtimes"]["pytorch-fp32"]["examples_per_s"]["int8"] > 0
    )  # int8 kernels run in PyTorch
    for rt in (
        "pytorch-bf16",
        "onnxruntime-fp32",
        "onnxruntime-int8",
    ):  # recorded as missing, with why
        assert (
            "int8" not in res["runtimes"][rt]["examples_per_s"]
            and res["runtimes"][rt]["missing"]["int8"]
        )
    assert json.loads((tmp_path / "speed.json").read_text()) == res


def test_the_report_has_a_speed_up_column_and_a_pareto_figure_per_runtime(tmp_path):
    from .test_report import _write_run

    rng = np.random.default_rng(0)
    easy = rng.random(240) < 0.55
    entries = [
        {
            "name": "teacher",
            "path": "artifacts/teacher",
            "group": "teacher",
            "method": "teacher",
            "loss": "ce",
            "seed": 1,
            "is_teacher": True,
        }
    ]
    for group, method in (("st-2x", "structured"), ("st-3x", "structured"), ("int8", "quantize")):
        entries.append(
            {
                "name": f"{group}/ce/seed1",
                "path": f"artifacts/{group}",
                "group": group,
                "method": method,
                "loss": "ce",
                "seed": 1,
                "is_teacher": False,
            }
        )
    for e, acc in zip(entries, (0.8, 0.78, 0.74, 0.79), strict=True):
        _write_run(tmp_path, e, rng, easy, acc)
    rates = {
        "pytorch-fp32": [100, 200, 300, 130],
        "pytorch-bf16": [250, 400, 520, None],
        "onnxruntime-fp32": [160, 330, 480, None],
        "onnxruntime-int8": [260, 500, 700, None],
    }
    runtimes = {
        rt: {
            "examples_per_s": {e["name"]: v for e, v in zip(entries, vals, strict=True) if v},
            "missing": {"int8/ce/seed1": "a torchao int8 model has no ONNX form"},
        }
        for rt, vals in rates.items()
    }
    (tmp_path / "index.json").write_text(json.dumps(entries))
    (tmp_path / "speed.json").write_text(
        json.dumps(
            {
                "examples_per_s": {e["name"]: 100.0 * (i + 1) for i, e in enumerate(entries)},
                "runtimes": runtimes,
            }
        )
    )
    out = build_report(tmp_path)
    md = (out / "report.md").read_text()
    table = md.split("## Table 2b: Speed-up per runtime")[1].split("## ")[0]
    assert "| Group | Seeds | ID acc (%) | FLOPs ÷ | " + " | ".join(RUNTIMES) + " |" in table
    assert "| st-2x | 1 |" in table and "| 2.00× | 1.60× | 2.06× | 1.92× |" in table
    assert "| int8 | 1 |" in table and "| 1.30× | – * | – * | – * |" in table
    assert "* not run on this runtime: a torchao int8 model has no ONNX form." in table
    figures = sorted(p.name for p in (out / "figures").glob("speed_robustness*.png"))
    assert figures == ["speed_robustness.png"] + sorted(
        f"speed_robustness_{rt}.png" for rt in RUNTIMES
    )
    speed, metrics = (out / "speed.csv").read_text(), (out / "metrics.csv").read_text()
    assert (
        "speedup.onnxruntime-int8" in speed.splitlines()[0]
        and "speedup" not in metrics.splitlines()[0]
    )


# -------------------------------------------------------- the study: stacking, one Fisher row, keys


def test_int8_stacks_on_every_structured_run_and_the_fisher_start_is_one_row(
    tmp_path, tiny_dir, tiny_task
):
    exp = {
        "name": "recovery",
        "task": str(tiny_task),
        "output_dir": str(tmp_path / "s"),
        "seeds": [0, 1],
        "defaults": {"batch_size": 16, "max_length": 32, "cache_dir": str(tmp_path / "c")},
        "teacher": {"model": str(tiny_dir)},
        "losses": ["distil", "distil_layers"],
        "compressions": [
            {"name": "fisher-2x", "method": "fisher", "settings": {"target_flops": 0.5}},
            {
                "name": "st-2x",
                "method": "structured",
                "settings": {"target_flops": 0.5, "init": "fisher"},
            },
            {"name": "st-2x-int8", "method": "quantize", "start": "st-2x"},
        ],
        "speed": {"examples": 16, "repeats": 1, "runtimes": ["pytorch-fp32", "onnxruntime-int8"]},
    }
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    _, stages = prepare(tmp_path / "e.yaml")
    by = {s.name: s for s in stages}
    assert [n for n in by if n.startswith("fisher")] == [
        "fisher-2x/ce/seed0"
    ]  # no training: one row
    assert (
        by["fisher-2x/ce/seed0"].work["train"] > 0
    )  # it reads training data (and its key holds them)
    stacked = [n for n in by if n.startswith("st-2x-int8")]
    assert sorted(stacked) == sorted(
        f"st-2x-int8/{loss}/seed{s}" for loss in ("distil", "distil_layers") for s in (0, 1)
    )
    int8 = by["st-2x-int8/distil_layers/seed1"]
    assert int8.deps[0] is by["st-2x/distil_layers/seed1"] and int8.config.loss is None
    assert int8.config.key_data()["model"] == "<model:st-2x/distil_layers/seed1>"
    cfg = int8.resolve()
    assert (
        cfg.model == str(by["st-2x/distil_layers/seed1"].path)
        and cfg.inputs.reference_model is None
    )
    assert by["speed"].params == {
        "examples": 16,
        "repeats": 1,
        "runtimes": ["pytorch-fp32", "onnxruntime-int8"],
    }
    assert {d.name for d in by["speed"].deps} >= {int8.name, "fisher-2x/ce/seed0"}

    exp["speed"] = {
        "examples": 16,
        "repeats": 1,
    }  # a study that does not time runtimes keeps its keys
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    _, stages = prepare(tmp_path / "e.yaml")
    assert stages[-1].params == {"examples": 16, "repeats": 1}
    assert (
        "init" not in StructuredConfig(target_flops=0.5).model_dump()
    )  # new settings, unset: not in any key
    assert StructuredConfig(target_flops=0.5, init="fisher").model_dump()["init"] == "fisher"

    exp["compressions"][2]["start"] = "st-3x"
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    with pytest.raises(UserError, match="start 'st-3x' must name an earlier compression"):
        prepare(tmp_path / "e.yaml")
