"""Properties that must hold for every input, checked with hypothesis: head selection, pruning
counts, override merging and the mapping of a 3-way model onto a 2-way set."""

from __future__ import annotations

import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robust_compress.compress.magnitude import _prune_mask
from robust_compress.compress.structured import select_heads
from robust_compress.config import apply_overrides
from robust_compress.metrics import collapse_probs

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.integers(1, 6), st.integers(1, 8), st.data())
def test_select_heads_removes_exactly_the_budget_and_keeps_one_per_layer(layers, heads, data):
    imp = torch.tensor(
        data.draw(arrays(np.float32, (layers, heads), elements=st.floats(0, 1, width=32)))
    )
    gone = data.draw(
        st.lists(st.tuples(st.integers(0, layers - 1), st.integers(0, heads - 1)), max_size=3)
    )
    for layer, head in gone:  # heads already removed (NaN), never a layer's last one
        if int((~torch.isnan(imp[layer])).sum()) > 1:
            imp[layer, head] = float("nan")
    exists = ~torch.isnan(imp)
    removable = int(exists.sum()) - layers
    if removable < 1:
        return
    count = data.draw(st.integers(1, removable))
    chosen = select_heads(imp, count)
    picked = [(layer, h) for layer, hs in chosen.items() for h in hs]
    assert len(picked) == count and len(set(picked)) == count
    assert all(exists[layer, h] for layer, h in picked)  # only heads that exist
    for layer in range(layers):  # every layer keeps at least one head
        assert int(exists[layer].sum()) - len(chosen.get(layer, [])) >= 1
    # least important first: a kept head that could have gone is never less important than a removed
    # one
    kept = [(layer, h) for layer, h in exists.nonzero().tolist() if (layer, h) not in picked]
    left = {layer: int(exists[layer].sum()) - len(chosen.get(layer, [])) for layer in range(layers)}
    for kl, kh in kept:
        if left[kl] > 1:
            assert all(float(imp[kl, kh]) >= float(imp[pl, ph]) for pl, ph in picked)


@FAST
@given(arrays(np.float32, st.integers(1, 300), elements=st.floats(0, 10, width=32)), st.data())
def test_a_prune_mask_zeroes_exactly_k_of_the_smallest(scores, data):
    k = data.draw(st.integers(0, len(scores)))
    mask = _prune_mask(torch.tensor(scores), k).numpy()
    assert int((mask == 0).sum()) == k
    if 0 < k < len(scores):  # no kept score is smaller than a pruned one
        assert scores[mask == 1].min() >= scores[mask == 0].max()


@FAST
@given(
    arrays(np.float64, st.tuples(st.integers(1, 20), st.just(3)), elements=st.floats(0.01, 1)),
    st.lists(st.sampled_from(["entailment", "non-entailment"]), min_size=3, max_size=3),
)
def test_collapsing_a_three_way_model_sums_probabilities(raw, targets):
    probs = raw / raw.sum(1, keepdims=True)
    labels = ["entailment", "neutral", "contradiction"]
    out = collapse_probs(
        probs, labels, dict(zip(labels, targets, strict=True)), ["entailment", "non-entailment"]
    )
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-12)
    for j, t in enumerate(["entailment", "non-entailment"]):
        np.testing.assert_allclose(
            out[:, j],
            probs[:, [i for i, x in enumerate(targets) if x == t]].sum(1) if t in targets else 0.0,
            atol=1e-12,
        )


KEYS = st.sampled_from(
    ["lr", "epochs", "seed", "loss.name", "compression.sparsity", "inputs.teacher"]
)
VALUES = st.one_of(
    st.integers(0, 1000), st.floats(0.001, 10, allow_nan=False), st.sampled_from(["ce", "x/y"])
)


@FAST
@given(st.dictionaries(KEYS, VALUES, max_size=4), st.dictionaries(KEYS, VALUES, max_size=4))
def test_the_last_override_of_a_key_wins_and_nothing_else_moves(base, sets):
    nested: dict = {}
    apply_overrides(nested, [f"{k}={yaml.safe_dump(v).splitlines()[0]}" for k, v in base.items()])
    before = {k: _get(nested, k) for k in base}
    apply_overrides(nested, [f"{k}={yaml.safe_dump(v).splitlines()[0]}" for k, v in sets.items()])
    for k, v in sets.items():
        assert _get(nested, k) == v
    for k, v in before.items():
        if k not in sets:
            assert _get(nested, k) == v


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(file_lr=st.floats(1e-5, 1e-2), set_seed=st.integers(0, 999))
def test_flags_beat_the_file_and_set_beats_both(tmp_path_factory, file_lr, set_seed):
    from robust_compress.cli import _cfg

    run = tmp_path_factory.mktemp("cfg") / "run.yaml"
    run.write_text(yaml.safe_dump({"model": "from-file", "lr": file_lr, "seed": 1, "task": "mnli"}))
    cfg = _cfg(run, None, model="from-flag", loss="focal")
    assert (cfg.model, cfg.loss.name, cfg.lr, cfg.seed) == (
        "from-flag",
        "focal",
        file_lr,
        1,
    )  # flag > file
    cfg = _cfg(
        run, ["model=from-set", f"seed={set_seed}", "loss.name=ce"], model="from-flag", loss="focal"
    )
    assert (cfg.model, cfg.loss.name, cfg.lr, cfg.seed) == (
        "from-set",
        "ce",
        file_lr,
        set_seed,
    )  # -s > both
    assert _cfg(None, None, model="m").model == "m"  # no file: the flags alone
