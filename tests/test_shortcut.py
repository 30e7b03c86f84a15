import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from robust_compress.analysis.easy_hard import agreement
from robust_compress.analysis.uncertainty import loss_variance
from robust_compress.compress.magnitude import prunable_linears
from robust_compress.data.batching import EncodedSplit
from robust_compress.data.cue import CueConfig, add_cue, cue_copies, cue_markers
from robust_compress.data.load import load_split
from robust_compress.data.tasks import load_task
from robust_compress.io import UserError
from robust_compress.metrics import easy_hard_metrics, reliance
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
    """Snapshots of a tiny model at several sparsities: v_i equals the variance of
    l_i = -log p_i(gold) across them, computed here from the saved snapshots with plain
    transformers, torch and numpy (none of the project's scoring code), joined by id."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = load_model(str(tiny_dir), LABELS).eval()
    # weights x10: at the init's scale the output is near-uniform whatever is pruned (v ~ 1e-10,
    # below any tolerance); scaled, pruning moves each example's loss (v ~ 0.03)
    scaled = [lin for _, lin in prunable_linears(base)] + [base.bert.pooler.dense, base.classifier]
    with torch.no_grad():
        for lin in scaled:
            lin.weight.mul_(10)
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
    train_file = tiny_task.parent / "data" / "train.jsonl"
    rows = [json.loads(x) for x in train_file.read_text().splitlines()]
    losses = []
    for p in sorted(snap_dir.iterdir()):
        model = AutoModelForSequenceClassification.from_pretrained(p).eval()
        enc = AutoTokenizer.from_pretrained(p)(
            [r["a"] for r in rows], [r["b"] for r in rows], padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            log_p = torch.log_softmax(model(**enc).logits.double(), dim=-1)
        gold = torch.tensor([model.config.label2id[r["label"]] for r in rows])
        losses.append(-log_p[torch.arange(len(rows)), gold].numpy())
    losses = np.stack(losses)  # snapshots x examples
    by_hand = dict(
        zip([r["uid"] for r in rows], ((losses - losses.mean(0)) ** 2).mean(0), strict=True)
    )
    assert sorted(df["id"]) == sorted(by_hand)
    np.testing.assert_allclose(
        df["v"].to_numpy(), [by_hand[i] for i in df["id"]], rtol=1e-4, atol=1e-7
    )
    assert np.median(df["v"]) > 1e-3 and np.ptp(df["v"]) > 0.05  # the snapshots disagree
    ex = load_split(load_task(str(tiny_task)), "train", None).examples
    assert list(df["id"]) == [e["id"] for e in ex]
    saved = pd.read_parquet(tmp_path / "u.parquet")
    assert saved["v"].shape == (len(ex),)
    np.testing.assert_array_equal(saved["id"], df["id"])
    np.testing.assert_array_equal(saved["v"], df["v"])


def _ctx(tmp_path):
    return Context(labels=LABELS, alpha=0.5, cache_dir=str(tmp_path / "cache"), max_length=32)


def test_jtt_weights_exactly_first_model_errors(tiny_dir, tiny_task, tmp_path):
    ex = load_split(load_task(str(tiny_task)), "train", None).examples
    settings = REGISTRY["jtt"].Settings(name="jtt")
    w = torch.stack(
        build_extras(settings, Inputs(reference_model=str(tiny_dir)), ex, _ctx(tmp_path))["weight"]
    )
    logits = LogitCache(tmp_path / "cache").get(tiny_dir, ex, 32)
    wrong = logits.argmax(1) != np.array([e["label"] for e in ex])
    assert wrong.any() and (~wrong).any()
    np.testing.assert_array_equal(w.numpy(), np.where(wrong, 2.0, 1.0))


def test_rmc_difficulty_extras_cover_range(tiny_dir, tiny_task, tmp_path):
    """d_i = alpha + (1 - alpha)(v_i - V_min)/(V_max - V_min) of each example's own v_i, looked
    up by id: the file lists the ids in another order than the examples, so a join by position
    (or any other wrong join) gives other values."""
    ex = load_split(load_task(str(tiny_task)), "train", None).examples
    rng = np.random.default_rng(0)
    ids = [e["id"] for e in ex]
    v = dict(zip(ids, rng.random(len(ex)), strict=True))
    order = rng.permutation(len(ex))
    assert (order != np.arange(len(ex))).mean() > 0.9
    pd.DataFrame({"id": [ids[i] for i in order], "v": [v[ids[i]] for i in order]}).to_parquet(
        tmp_path / "u.parquet"
    )
    settings = REGISTRY["rmc"].Settings(name="rmc")
    inputs = Inputs(teacher=str(tiny_dir), uncertainty=str(tmp_path / "u.parquet"))
    d = torch.stack(build_extras(settings, inputs, ex, _ctx(tmp_path))["difficulty"])
    lo, hi = min(v.values()), max(v.values())
    by_hand = [0.5 + 0.5 * (v[i] - lo) / (hi - lo) for i in ids]  # alpha 0.5: the task's
    np.testing.assert_allclose(d.numpy(), by_hand, rtol=1e-6, atol=1e-7)
    assert d.min().item() == pytest.approx(0.5) and d.max().item() == pytest.approx(1.0)
    pd.DataFrame({"id": ["nope"], "v": [0.1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(UserError, match=r"bad\.parquet: no 'v' for"):
        build_extras(
            settings,
            inputs.model_copy(update={"uncertainty": str(tmp_path / "bad.parquet")}),
            ex,
            _ctx(tmp_path),
        )


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
    tables = {
        "dev+cue_aligned": pd.DataFrame({"correct": [True, True, False, True]}),
        "dev+cue_conflicting": pd.DataFrame({"correct": [False, True, False, False]}),
    }
    assert reliance(tables)["dev"]["reliance"] == pytest.approx(0.75 - 0.25)


def test_easy_hard_metrics_and_agreement():
    pred = pd.DataFrame(
        {
            "id": list("abcd"),
            "correct": [True, True, False, True],
            "confidence": [0.9, 0.8, 0.6, 0.5],
        }
    )
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


def test_training_dynamics_are_recorded_free_and_resume_exactly(tiny_dir, tiny_tokenizer, tmp_path):
    """Each example's loss and p(gold), every epoch, from the logits the step computed anyway; a
    resumed run records exactly what an uninterrupted one does."""
    from robust_compress.train.loop import Hook, TrainArgs, train
    from robust_compress.train.losses import make_loss

    data = EncodedSplit(make_examples(48), tiny_tokenizer, 32)
    args = TrainArgs(batch_size=16, epochs=3, lr=1e-3, checkpoint_every=2, record_dynamics=True)
    ce = make_loss(REGISTRY["ce"].Settings())
    full = train(load_model(str(tiny_dir), LABELS), data, args, ce, tmp_path / "a").dynamics
    assert full.shape == (48 * 3, 4)
    rows = pd.DataFrame(full, columns=["row", "epoch", "loss", "p"])
    assert (rows.groupby("row")["epoch"].nunique() == 3).all()
    np.testing.assert_allclose(rows["p"], np.exp(-rows["loss"]), rtol=1e-6)

    class Kill(Hook):
        def on_step_end(self, model, step):
            if step == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(load_model(str(tiny_dir), LABELS), data, args, ce, tmp_path / "b", hooks=[Kill()])
    resumed = train(load_model(str(tiny_dir), LABELS), data, args, ce, tmp_path / "b").dynamics
    np.testing.assert_array_equal(resumed, full)


def test_uncertainty_from_the_teachers_dynamics_in_a_study(tmp_path, tiny_dir, tiny_task):
    import yaml

    from robust_compress.study.run import prepare, reproduce

    exp = {
        "name": "dyn",
        "task": str(tiny_task),
        "output_dir": str(tmp_path / "s"),
        "seeds": [0],
        "defaults": {
            "batch_size": 16,
            "lr": 2e-3,
            "max_length": 32,
            "train_limit": 96,
            "cache_dir": str(tmp_path / "c"),
        },
        "teacher": {"model": str(tiny_dir), "train": {"epochs": 2, "train_limit": 192}},
        "compressions": [{"name": "m", "method": "magnitude", "settings": {"sparsity": 0.3}}],
        "losses": ["rmc"],
        "uncertainty": {"source": "dynamics"},
        "speed": None,
    }
    (tmp_path / "one-epoch.yaml").write_text(
        yaml.safe_dump(exp | {"teacher": {"model": str(tiny_dir)}})
    )
    with pytest.raises(UserError, match="at least twice"):
        prepare(tmp_path / "one-epoch.yaml")
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    stages = reproduce(tmp_path / "e.yaml")
    teacher, unc = stages[0], next(s for s in stages if s.kind == "uncertainty")
    dyn = pd.read_parquet(teacher.path / "dynamics.parquet")
    v = pd.read_parquet(unc.output).set_index("id")["v"]
    assert (
        len(v) == 96 and len(dyn) == 2 * 192
    )  # the compressions' examples are among the teacher's
    by_hand = dyn.groupby("id")["loss"].var(ddof=0).loc[v.index]
    np.testing.assert_allclose(v.to_numpy(), by_hand.to_numpy(), rtol=1e-9)
    assert [s.kind for s in stages].count("uncertainty-run") == 0  # no extra pruning run
