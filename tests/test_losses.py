import math

import torch
import torch.nn.functional as F

from robust_compress.train.losses import REGISTRY, difficulty, kd_loss, make_loss, smoothed_teacher


def LossConfig(name, **kw):
    return REGISTRY[name].Settings(name=name, **kw)


LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
LABELS = torch.tensor([0, 2])
TEACHER = torch.tensor([[3.0, 0.0, -1.0], [0.5, 0.2, 1.5]])


def _batch(**extra):
    return {"labels": LABELS, "teacher_logits": TEACHER, **extra}


def test_kd_with_lambda_zero_is_ce():
    loss = make_loss(LossConfig(name="kd", lam=0.0, temperature=3.0))(LOGITS, _batch())
    torch.testing.assert_close(loss, F.cross_entropy(LOGITS, LABELS))


def test_kd_equals_formula_by_hand():
    lam, T = 0.9, 2.0
    loss = make_loss(LossConfig(name="kd", lam=lam, temperature=T))(LOGITS, _batch())
    expected = 0.0
    for i in range(2):
        ps = [
            math.exp(z) / sum(math.exp(w) for w in LOGITS[i].tolist()) for z in LOGITS[i].tolist()
        ]
        ce = -math.log(ps[LABELS[i]])
        pt = [
            math.exp(z / T) / sum(math.exp(w / T) for w in TEACHER[i].tolist())
            for z in TEACHER[i].tolist()
        ]
        pst = [
            math.exp(z / T) / sum(math.exp(w / T) for w in LOGITS[i].tolist())
            for z in LOGITS[i].tolist()
        ]
        kl = sum(t * math.log(t / s) for t, s in zip(pt, pst, strict=True))
        expected += ((1 - lam) * ce + lam * T * T * kl) / 2
    assert abs(loss.item() - expected) < 1e-5


def test_smoothed_teacher_formula_and_d_one_identity():
    p = torch.softmax(TEACHER, -1)
    d = torch.tensor([0.5, 1.0])
    s = smoothed_teacher(TEACHER, d)
    by_hand = p ** d[:, None] / (p ** d[:, None]).sum(-1, keepdim=True)
    torch.testing.assert_close(s, by_hand)
    torch.testing.assert_close(s[1], p[1])  # d = 1 leaves the teacher unchanged
    assert s[0].max() < p[0].max()  # d < 1 lowers the max probability


def test_rmc_with_d_one_equals_distil():
    cfg = LossConfig(name="rmc")
    rmc = make_loss(cfg)(LOGITS, _batch(difficulty=torch.ones(2)))
    distil = make_loss(LossConfig(name="distil"))(LOGITS, _batch())
    torch.testing.assert_close(rmc, distil)
    # d != 1, a different d per example: the paper's formula (docs/paper.md, "RMC, exactly"),
    # s_ij = p^T_ij^{d_i} / sum_k p^T_ik^{d_i}, L = (1 - lam) CE(y_i, p^S_i) + lam KL(s_i || p^S_i),
    # computed here with plain torch ops and averaged over the batch
    lam, d = 0.7, torch.tensor([0.3, 0.8])
    got = make_loss(LossConfig(name="rmc", lam=lam))(LOGITS, _batch(difficulty=d))
    p_t = TEACHER.exp() / TEACHER.exp().sum(-1, keepdim=True)
    powered = p_t ** d.unsqueeze(1)
    s = powered / powered.sum(-1, keepdim=True)
    p_s = LOGITS.exp() / LOGITS.exp().sum(-1, keepdim=True)
    ce = -p_s[torch.arange(2), LABELS].log()
    kl = (s * (s.log() - p_s.log())).sum(-1)
    expected = ((1 - lam) * ce + lam * kl).mean()
    torch.testing.assert_close(got, expected)
    assert (got - rmc).abs() > 1e-3  # the check is not the d = 1 case again
    # each example's own d: swapping them changes the loss
    swapped = make_loss(LossConfig(name="rmc", lam=lam))(LOGITS, _batch(difficulty=d.flip(0)))
    assert (swapped - got).abs() > 1e-3


def test_difficulty_range_and_monotone():
    v = torch.tensor([0.3, 0.1, 0.9, 0.5])
    d = difficulty(v, alpha=0.5)
    assert d.min().item() == 0.5 and d.max().item() == 1.0
    order = torch.argsort(v)
    assert torch.all(d[order][1:] >= d[order][:-1])
    assert torch.all(difficulty(torch.full((3,), 0.2), 0.5) == 1)


def test_focal_weights_normalized_equals_formula():
    loss = make_loss(LossConfig(name="focal", gamma=2.0))(LOGITS, _batch())
    p = torch.softmax(LOGITS, -1)[torch.arange(2), LABELS]
    w = (1 - p) ** 2
    ce = F.cross_entropy(LOGITS, LABELS, reduction="none")
    torch.testing.assert_close(loss, (w / w.sum() * ce).sum())


def test_jtt_weights_exactly_upweight_errors():
    loss = make_loss(LossConfig(name="jtt"))(LOGITS, _batch(weight=torch.tensor([1.0, 2.0])))
    ce = F.cross_entropy(LOGITS, LABELS, reduction="none")
    torch.testing.assert_close(loss, (ce[0] + 2 * ce[1]) / 3)


def test_poe_and_conf_reg_by_hand():
    bias = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]])
    poe = make_loss(LossConfig(name="poe"))(LOGITS, _batch(bias_probs=bias))
    combined = torch.log_softmax(torch.log_softmax(LOGITS, -1) + bias.log(), -1)
    torch.testing.assert_close(poe, -combined[torch.arange(2), LABELS].mean())
    cr = make_loss(LossConfig(name="conf_reg"))(LOGITS, _batch(bias_probs=bias))
    s = smoothed_teacher(TEACHER, 1 - bias[torch.arange(2), LABELS])
    torch.testing.assert_close(cr, -(s * torch.log_softmax(LOGITS, -1)).sum(-1).mean())


def test_kd_loss_zero_when_student_matches_teacher_and_lam_one():
    target = torch.softmax(TEACHER, -1)
    assert kd_loss(TEACHER, LABELS, target, lam=1.0).abs().item() < 1e-6


def test_learned_mixin_plus_h_equals_formula_by_hand():
    """Clark et al. (2019): g = softplus(w.h + b);
    L = CE(y, softmax(log p_S + g log p_b)) + w_H H(softmax(g log p_b))."""
    bias = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]])
    hidden = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -0.5, 0.3]])
    loss_fn = make_loss(LossConfig(name="learned_mixin", entropy_weight=0.3), hidden_size=4)
    with torch.no_grad():
        loss_fn.gate.weight.copy_(torch.tensor([[0.2, -0.1, 0.4, 0.5]]))
        loss_fn.gate.bias.fill_(0.1)
    got = loss_fn(LOGITS, _batch(bias_probs=bias), hidden)
    expected = 0.0
    for i in range(2):
        z = sum(w * h for w, h in zip([0.2, -0.1, 0.4, 0.5], hidden[i].tolist(), strict=True)) + 0.1
        g = math.log1p(math.exp(z))
        ls = [
            x - math.log(sum(math.exp(y) for y in LOGITS[i].tolist())) for x in LOGITS[i].tolist()
        ]
        comb = [a + g * math.log(b) for a, b in zip(ls, bias[i].tolist(), strict=True)]
        ce = -(comb[LABELS[i]] - math.log(sum(math.exp(c) for c in comb)))
        sb = [g * math.log(b) for b in bias[i].tolist()]
        p = [math.exp(x) / sum(math.exp(y) for y in sb) for x in sb]
        entropy = -sum(q * math.log(q) for q in p)
        expected += (ce + 0.3 * entropy) / 2
    assert abs(got.item() - expected) < 1e-5
    got.backward()
    assert (
        loss_fn.gate.weight.grad is not None and loss_fn.gate.weight.grad.abs().sum() > 0
    )  # its own parameters learn


def test_every_loss_declares_settings_inputs_and_formula():
    from robust_compress.train.extras import EXTRAS

    for name, cls in REGISTRY.items():
        assert cls.Settings(name=name).name == name
        assert set(cls.needs) <= set(EXTRAS), (name, cls.needs)
        assert "L =" in (cls.__doc__ or ""), f"{name}: its docstring states its formula"


def test_train_names_no_study_stage_and_each_loss_prepares_its_own_inputs():
    """The loss-input table says where each input is read from (an `Inputs` field), not which study
    stage makes it; RMC and JTT turn the raw values into their inputs themselves."""
    import dataclasses

    from robust_compress.train.extras import EXTRAS, Extra, Inputs

    assert "stage" not in {f.name for f in dataclasses.fields(Extra)}
    for name, loss in REGISTRY.items():
        for need in loss.needs:
            assert EXTRAS[need].source in Inputs.model_fields, (name, need)
    v = [torch.tensor(x) for x in (0.0, 0.5, 1.0)]
    rmc = REGISTRY["rmc"]
    got = rmc.prepare("difficulty", v, [], rmc.Settings(name="rmc"), 0.2)
    assert torch.allclose(torch.stack(got), torch.tensor([0.2, 0.6, 1.0]))
    jtt = REGISTRY["jtt"]
    probs = [torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])]
    got = jtt.prepare(
        "weight", probs, [{"label": 0}, {"label": 0}], jtt.Settings(name="jtt", upweight=3.0), 0.5
    )
    assert torch.stack(got).tolist() == [1.0, 3.0]


def test_jtt_reads_the_first_models_errors_at_full_precision(monkeypatch):
    """A training error decided in float64, as the first model's probabilities are computed: two
    classes 2e-12 apart round to a tie in float32, where argmax would call the example right."""
    import numpy as np

    from robust_compress.train import extras

    monkeypatch.setattr(extras, "_probs", lambda *a: np.array([[0.5 - 1e-12, 0.5 + 1e-12]]))
    raw = extras._reference_probs("first-model", [{"label": 0}], None, None)
    jtt = REGISTRY["jtt"]
    got = jtt.prepare("weight", raw, [{"label": 0}], jtt.Settings(name="jtt", upweight=3.0), 0.5)
    assert torch.stack(got).tolist() == [3.0]
