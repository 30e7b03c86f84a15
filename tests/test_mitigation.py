"""Issue 18's machinery: bias models that are cached stages (cross-fitted by default), several of
them in one study, debiased teachers compressed in the same study, and known-bias losses that read
their bias probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from robust_compress.data.batching import EncodedSplit
from robust_compress.data.load import folds_of
from robust_compress.io import read_json, read_yaml
from robust_compress.models.load import load_model
from robust_compress.study.run import prepare, reproduce
from robust_compress.train.loop import TrainArgs, train
from robust_compress.train.losses import REGISTRY, make_loss

from .conftest import LABELS, make_examples
from .test_experiment import _exp

STUDY = {
    "losses": ["ce", "poe"],
    "speed": None,
    "bias_models": {
        "hyp": {"kind": "partial", "folds": 3, "train": {"epochs": 2}, "easy_hard_split": "dev"},
        "ov": {"kind": "overlap", "features": "literature", "easy_hard_split": "dev"},
    },
    "teachers": {"poe-hyp": {"loss": "poe", "bias": "hyp"}},
    "teacher": None,
}


def _study(tmp_path, tiny_dir, task, **over):
    kw = (
        dict(STUDY)
        | {
            "teacher": {"model": str(tiny_dir), "train": {"epochs": 2}},
            "compressions": [
                {"name": "mag", "method": "magnitude", "settings": {"sparsity": 0.5}},
                {
                    "name": "mag@poe-hyp",
                    "method": "magnitude",
                    "settings": {"sparsity": 0.5},
                    "teacher": "poe-hyp",
                    "losses": ["ce"],
                    "seeds": [0],
                },
            ],
        }
        | over
    )
    return _exp(tmp_path, tiny_dir, task, seeds=[0, 1], **kw)


def test_an_unavailable_easy_hard_split_of_any_bias_model_is_refused(tmp_path, tiny_dir, tiny_task):
    from robust_compress.io import UserError

    bad = dict(STUDY["bias_models"]) | {"ov": {"kind": "overlap", "easy_hard_split": "dev_matched"}}
    with pytest.raises(UserError, match="bias_models.ov.easy_hard_split"):
        prepare(_study(tmp_path, tiny_dir, tiny_task, bias_models=bad))


def test_the_plan_of_a_mitigation_study(tmp_path, tiny_dir, tiny_task):
    _, stages = prepare(_study(tmp_path, tiny_dir, tiny_task))
    by = {s.name: s for s in stages}
    assert [n for n in by if n.startswith("bias-hyp-fold")] == [
        "bias-hyp-fold0",
        "bias-hyp-fold1",
        "bias-hyp-fold2",
    ]
    assert [d.name for d in by["bias-hyp"].deps] == [
        "bias-hyp-fold0",
        "bias-hyp-fold1",
        "bias-hyp-fold2",
    ]
    assert by["bias-ov"].deps == []  # a logistic regression cross-fits inside its stage
    # each known-bias loss once per bias model, each with its own bias stage
    assert (
        by["mag/poe-hyp/seed0"].deps[-1] is by["bias-hyp"]
        and by["mag/poe-ov/seed0"].deps[-1] is by["bias-ov"]
    )
    assert "mag/ce/seed1" in by and "mag/poe-ov/seed1" in by
    # the debiased teacher: the teacher's recipe with its loss, compressed from, distilled from
    t = by["teacher-poe-hyp"]
    assert t.config.loss.name == "poe" and [d.name for d in t.deps] == ["teacher", "bias-hyp"]
    c = by["mag@poe-hyp/ce/seed0"]
    assert c.deps[0] is t and "mag@poe-hyp/ce/seed1" not in by  # its own seeds
    cfg = c.resolve()
    assert cfg.model == str(t.path) and cfg.inputs.teacher == str(t.path)
    tcfg = t.resolve()
    assert tcfg.inputs.bias_model == str(by["bias-hyp"].path) and tcfg.inputs.teacher == str(
        stages[0].path
    )


def test_seeds_by_loss_adds_and_drops_seeds_for_single_runs(tmp_path, tiny_dir, tiny_task):
    from robust_compress.io import UserError

    comps = [
        {
            "name": "mag",
            "method": "magnitude",
            "settings": {"sparsity": 0.5},
            "seeds": [0],
            "seeds_by_loss": {"ce": [0, 1, 2], "poe-ov": [0, 2], "poe": [1]},
        }
    ]
    _, stages = prepare(_study(tmp_path, tiny_dir, tiny_task, compressions=comps, teachers={}))
    names = {s.name for s in stages if s.kind == "compress"}
    assert names == {
        "mag/ce/seed0", "mag/ce/seed1", "mag/ce/seed2",
        "mag/poe-ov/seed0", "mag/poe-ov/seed2",  # the loss-bias key wins over the loss key
        "mag/poe-hyp/seed1",
    }  # fmt: skip
    # a run at a seed without its vanilla reference, or a key naming no run, is refused
    for bad, match in (
        ({"poe": [0, 5]}, r"seeds_by_loss.poe has seeds \[5\]"),
        ({"poe-nope": [0]}, "not runs of this row"),
    ):
        comps[0]["seeds_by_loss"] = bad
        with pytest.raises(UserError, match=match):
            prepare(_study(tmp_path, tiny_dir, tiny_task, compressions=comps, teachers={}))


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_dir, shared_tiny_task):
    tmp = tmp_path_factory.mktemp("mitigation")
    path = _study(tmp, tiny_dir, shared_tiny_task)
    return path, reproduce(path)


def test_cross_fitted_probabilities_never_come_from_a_model_that_saw_the_example(done):
    _, stages = done
    bias = next(s for s in stages if s.name == "bias-hyp")
    probs = pd.read_parquet(bias.path / "train_probs.parquet")
    assert read_json(bias.path / "bias.json")["scoring"] == "crossfit"
    folds = [d for d in bias.deps if d.kind == "bias-fold"]
    # every example has a fold; the fold stage of that fold was trained without it
    from robust_compress.config import RunConfig
    from robust_compress.data.load import load_train_split

    for k, f in enumerate(folds):
        cfg = RunConfig.model_validate(read_yaml(f.path / "run_config.yaml"))
        assert cfg.cv_fold == k
        seen = {e["id"] for e in load_train_split(cfg.data_args()).examples}
        held = set(probs.loc[probs["fold"] == k, "id"])
        assert held and not (seen & held)
        assert len(seen) + len(held) == len(probs)
    # and the held-out rows are that fold model's own probabilities (its logits, softmaxed)
    from robust_compress.analysis.easy_hard import bias_probs
    from robust_compress.train.logit_cache import LogitCache

    cfg = RunConfig.model_validate(read_yaml(folds[0].path / "run_config.yaml"))
    everything = load_train_split(cfg.data_args().model_copy(update={"cv_fold": None})).examples
    held = [
        e for e, k in zip(everything, folds_of(everything, 3, cfg.data_seed), strict=True) if k == 0
    ]
    p = bias_probs(str(folds[0].path), held, LogitCache(cfg.cache_dir), cfg.max_length)
    mine = (
        probs.set_index("id")
        .loc[[e["id"] for e in held], [f"crossfit_p{j}" for j in range(3)]]
        .to_numpy()
    )
    np.testing.assert_allclose(mine, p, rtol=1e-6)
    # in-sample scoring is kept beside it, and differs (the full model saw these examples)
    assert not np.allclose(
        probs[[f"insample_p{j}" for j in range(3)]], probs[[f"crossfit_p{j}" for j in range(3)]]
    )


def test_a_mitigation_study_reports_every_bias_model(done):
    path, _stages = done
    exp, _ = prepare(path)
    from pathlib import Path

    root = Path(exp.output_dir)
    assert (root / "easy_hard" / "dev.parquet").is_file() and (
        root / "easy_hard" / "dev.ov.parquet"
    ).is_file()
    b = read_json(root / "analysis" / "bias_models.json")
    assert set(b) == {"hyp", "ov"}
    assert b["hyp"]["training_set"]["scoring"] == "crossfit" and "dev" in b["hyp"]["accuracy"]
    assert set(b["hyp"]["agreement_with_bias_models"]) == {"ov"}
    # the easy share is what the losses read: the cross-fitted probabilities' accuracy
    assert b["hyp"]["easy_fraction"] == pytest.approx(
        b["hyp"]["training_set"]["train_accuracy_crossfit"]
    )
    index = read_json(root / "index.json")
    names = {r["name"] for r in index}
    assert {"teacher", "teacher-poe-hyp", "mag@poe-hyp/ce/seed0", "mag/poe-ov/seed1"} <= names
    assert [r["name"] for r in index if r["is_teacher"]] == ["teacher"]
    from robust_compress.report import build_report

    md = (build_report(root) / "report.md").read_text()
    for heading in (
        "## What wins it back",
        "## What wins it back: each loss against the Vanilla row of its compression",
        "## Debiased teachers against the study's teacher",
        "## Debias, then compress: what a compressed model keeps of its teacher's debiasing gain",
        "## Bias models: accuracy, how they scored the training set, and agreement",
    ):
        assert heading in md, heading
    assert "| teacher-poe-hyp | poe-hyp |" in md
    # Δ hard also on the other bias model's split (its values: tests/test_docs.py, on the export)
    assert "| Δ hard (ov split) |" in md
    assert (
        "| mag@poe-hyp | ce | 1 |" in md
    )  # against mag / ce, the same compression of the study's teacher
    (root / "report.md").write_text(md)  # for a look by hand


@pytest.mark.parametrize("loss", ["reweight", "poe", "conf_reg", "learned_mixin"])
def test_each_known_bias_loss_reads_its_bias_probabilities(
    loss, tiny_dir, tiny_tokenizer, tmp_path
):
    """A run with the bias probabilities shuffled across examples ends with other weights."""
    examples = make_examples(64)
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(64, 3, generator=g) * 2, -1)
    teacher = torch.randn(64, 3, generator=g)
    weights = []
    for probs in (p, p[torch.randperm(64, generator=g)]):
        extras = {"bias_probs": list(probs), "teacher_logits": list(teacher)}
        data = EncodedSplit(examples, tiny_tokenizer, 32, extras=extras)
        model = load_model(str(tiny_dir), LABELS, seed=0)
        fn = make_loss(
            REGISTRY[loss].Settings(name=loss), hidden_size=model.config.hidden_size, num_labels=3
        )
        train(
            model,
            data,
            TrainArgs(batch_size=16, max_steps=4, lr=1e-3, seed=0, checkpoint_every=100),
            fn,
            tmp_path / f"w{len(weights)}",
        )
        weights.append(model.classifier.weight.detach().clone())
    assert not torch.allclose(weights[0], weights[1])


def test_the_verdict_on_a_second_split_follows_its_interval():
    from robust_compress.metrics.multiboot import Effect
    from robust_compress.report.verdict import Diff, elsewhere

    def d(est, lo, hi, one_seed=False):
        return Diff(Effect(est, lo, hi, (hi - lo) / 4, 2.0, 3, one_seed))

    assert elsewhere("ov", d(0.02, 0.01, 0.03)).startswith("also on the ov split")
    assert elsewhere("ov", d(-0.013, -0.02, -0.006)).startswith("but loses on the ov split")
    assert elsewhere("ov", d(0.01, -0.01, 0.03)).startswith("not measurably on the ov")
    # one seed: neither "also" nor "measurably", the one-seed phrase
    one = elsewhere("ov", d(0.02, 0.01, 0.03, one_seed=True))
    assert "measurabl" not in one and "also" not in one and "1 seed" in one
