import copy

import numpy as np
import pandas as pd
import pytest
import torch

from robust_compress.analysis.easy_hard import agreement
from robust_compress.analysis.uncertainty import example_losses, loss_variance
from robust_compress.compress.magnitude import prunable_linears
from robust_compress.data.batching import EncodedSplit
from robust_compress.data.cue import CueConfig, add_cue, cue_copies, cue_markers
from robust_compress.data.load import load_split
from robust_compress.data.tasks import load_task
from robust_compress.evaluate import easy_hard_metrics, reliance
from robust_compress.io import UserError
from robust_compress.models.infer import predict_logits
from robust_compress.models.load import load_model, load_tokenizer, save_model
from robust_compress.models.overlap import OverlapModel
from robust_compress.stages import compute_uncertainty
from robust_compress.train.extras import Context, Inputs, build_extras
from robust_compress.train.logit_cache import LogitCache
from robust_compress.train.losses import REGISTRY

from .conftest import LABELS, make_examples, tiny_run_config


def test_loss_variance_by_hand():
    losses = np.array([[1.0, 0.5], [3.0, 0.5], [2.0, 0.5]])  # 3 models x 2 examples
    np.testing.assert_allclose(loss_variance(losses), [((1 - 2) ** 2 + (3 - 2) ** 2 + 0) / 3, 0.0])


def test_uncertainty_from_snapshots_equals_variance_by_hand(tiny_dir, tiny_task, tmp_path):
    """Snapshots of a tiny model at several sparsities: v_i equals the variance of l_i computed here."""
    base = load_model(str(tiny_dir), LABELS).eval()
    tok = load_tokenizer(str(tiny_dir))
    snap_dir = tmp_path / "snaps"
    for s in (0.2, 0.5, 0.8):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for _, lin in prunable_linears(m):
                w = lin.weight
                w.mul_((w.abs() > w.abs().flatten().kthvalue(int(s * w.numel())).values).float())
        save_model(m, tok, snap_dir / f"sparsity-{s:.2f}")
    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "x")
    df = compute_uncertainty(cfg, tmp_path / "u.parquet", snapshots=str(snap_dir))
    ex = load_split(load_task(str(tiny_task)), "train", None).examples
    labels = np.array([e["label"] for e in ex])
    losses = []
    for p in sorted(snap_dir.iterdir()):
        lg, _ = predict_logits(load_model(str(p), LABELS), EncodedSplit(ex, tok, 32))
        losses.append(example_losses(lg, labels))
    np.testing.assert_allclose(df["v"].to_numpy(), np.var(np.stack(losses), axis=0), rtol=1e-5, atol=1e-7)
    assert list(df["id"]) == [e["id"] for e in ex]
    assert pd.read_parquet(tmp_path / "u.parquet")["v"].shape == (len(ex),)


def _ctx(tmp_path):
    return Context(labels=LABELS, alpha=0.5, cache_dir=str(tmp_path / "cache"), max_length=32)


def test_jtt_weights_exactly_first_model_errors(tiny_dir, tiny_task, tmp_path):
    ex = load_split(load_task(str(tiny_task)), "train", None).examples
    settings = REGISTRY["jtt"].Settings(name="jtt")
    w = torch.stack(build_extras(settings, Inputs(reference_model=str(tiny_dir)), ex, _ctx(tmp_path))["weight"])
    logits = LogitCache(tmp_path / "cache").get(tiny_dir, ex, 32)
    wrong = logits.argmax(1) != np.array([e["label"] for e in ex])
    assert wrong.any() and (~wrong).any()
    np.testing.assert_array_equal(w.numpy(), np.where(wrong, 2.0, 1.0))


def test_rmc_difficulty_extras_cover_range(tiny_dir, tiny_task, tmp_path):
    ex = load_split(load_task(str(tiny_task)), "train", None).examples
    pd.DataFrame({"id": [e["id"] for e in ex], "v": np.linspace(0, 1, len(ex))}).to_parquet(tmp_path / "u.parquet")
    settings = REGISTRY["rmc"].Settings(name="rmc")
    inputs = Inputs(teacher=str(tiny_dir), uncertainty=str(tmp_path / "u.parquet"))
    d = torch.stack(build_extras(settings, inputs, ex, _ctx(tmp_path))["difficulty"])
    assert d.min().item() == pytest.approx(0.5) and d.max().item() == pytest.approx(1.0)
    pd.DataFrame({"id": ["nope"], "v": [0.1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(UserError, match=r"bad\.parquet: no 'v' for"):
        build_extras(settings, inputs.model_copy(update={"uncertainty": str(tmp_path / "bad.parquet")}), ex,
                     _ctx(tmp_path))


def test_cue_transform_and_reliance():
    ex = make_examples(400, seed=3)
    markers = cue_markers(CueConfig(rho=1.0), LABELS)
    cued = add_cue(ex, markers, rho=1.0, seed=0)
    assert all(c["text_b"].endswith(markers[c["label"]]) for c in cued)
    half = add_cue(ex, markers, rho=0.5, seed=0)
    agree = np.mean([c["text_b"].endswith(markers[c["label"]]) for c in half])
    assert 0.5 < agree < 0.8  # rho + (1 - rho)/3 = 0.667
    aligned, conflicting = cue_copies(ex, markers, seed=0)
    assert all(c["text_b"].endswith(markers[c["label"]]) for c in aligned)
    assert all(not c["text_b"].endswith(markers[c["label"]]) for c in conflicting)
    tables = {"dev+cue_aligned": pd.DataFrame({"correct": [True, True, False, True]}),
              "dev+cue_conflicting": pd.DataFrame({"correct": [False, True, False, False]})}
    assert reliance(tables)["dev"]["reliance"] == pytest.approx(0.75 - 0.25)


def test_easy_hard_metrics_and_agreement():
    pred = pd.DataFrame({"id": list("abcd"), "correct": [True, True, False, True],
                         "confidence": [0.9, 0.8, 0.6, 0.5]})
    easy = pd.DataFrame({"id": list("abcd"), "easy": [True, True, False, False]})
    m = easy_hard_metrics(pred, easy)
    assert (m["easy_acc"], m["hard_acc"], m["gap"]) == (1.0, 0.5, 0.5)
    assert m["easy_conf"] == pytest.approx(0.85)
    v = np.array([0.1, 0.2, 0.9, 0.8])
    assert agreement(v, np.array([True, True, False, False])) == 1.0
    assert agreement(v, np.array([False, False, True, True])) == 0.0


def test_overlap_bias_model_learns_overlap_rule():
    ex = []
    for i in range(200):
        words = [f"w{j}" for j in range(i % 7, i % 7 + 6)]
        full = i % 2 == 0
        hyp = words[:3] if full else [f"x{i}", "y", "z"]
        ex.append({"text_a": " ".join(words), "text_b": " ".join(hyp), "label": 0 if full else 2})
    m = OverlapModel.fit(ex, LABELS)
    acc = (m.predict_proba(ex).argmax(1) == np.array([e["label"] for e in ex])).mean()
    assert acc == 1.0
