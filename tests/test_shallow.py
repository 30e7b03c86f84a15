"""The `shallow` bias kind (Utama et al. 2020): the task's encoder fit on a small seeded subset of
the full input, so it needs no known bias; cross-fitted like the others (each fold model fit on a
subset of the folds it sees, scoring the fold it never saw)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robust_compress.analysis.easy_hard import bias_probs
from robust_compress.analysis.uncertainty import DYNAMICS
from robust_compress.data.load import load_train_split, seeded_subset
from robust_compress.io import read_json, read_yaml
from robust_compress.stages.shortcut import train_bias_model
from robust_compress.train.logit_cache import LogitCache

from .conftest import DATA, MODELS, needs_shared, tiny_run_config
from .test_experiment import _exp

P = [f"{m}_p{j}" for m in ("insample", "crossfit") for j in range(3)]


def _seen(model_dir) -> set[str]:
    """The ids the training loop computed a step on (its training dynamics): what it saw."""
    return set(pd.read_parquet(model_dir / DYNAMICS)["id"])


def _cfg(tiny_dir, task, out, **kw):
    return tiny_run_config(tiny_dir, task, out, record_dynamics=True, eval_sets=["dev"], **kw)


def test_shallow_fits_exactly_its_seeded_subset_of_both_texts_reproducibly(
    tmp_path, tiny_dir, tiny_task
):
    def fit(name, **kw):
        return train_bias_model(
            _cfg(tiny_dir, tiny_task, tmp_path / name, **kw),
            "shallow",
            subset=40,
            epochs=2,
            easy_hard_split="dev",
            scoring="insample",
        )

    a, b = fit("a"), fit("b")
    run = read_yaml(a / "run_config.yaml")
    assert (run["train_subset"], run["epochs"], run["input_field"]) == (40, 2.0, None)
    everything = load_train_split(_cfg(tiny_dir, tiny_task, tmp_path / "x").data_args()).examples
    assert len(everything) == 192  # the task needs no bias_field: nothing of it is read
    subset = {e["id"] for e in seeded_subset(everything, 40, 0)}
    assert _seen(a) == subset and len(subset) == 40
    assert read_json(a / "train_metrics.json")["train_examples"] == 40
    # reproducible: the same subset and the same probabilities, scored on the whole split
    pa, pb = (pd.read_parquet(d / "train_probs.parquet") for d in (a, b))
    assert len(pa) == 192 and _seen(b) == subset
    np.testing.assert_allclose(pa[P[:3]].to_numpy(), pb[P[:3]].to_numpy(), rtol=1e-6, atol=1e-7)
    # the easy/hard split of the eval set it was asked for
    eh = pd.read_parquet(a / "easy_hard.parquet")
    assert len(eh) == 96 and eh["easy"].dtype == bool and 0 < eh["easy"].mean() < 1
    # another data_seed draws another subset
    assert _seen(fit("c", data_seed=1)) != subset


def test_shallow_cross_fitted_probabilities_come_from_a_model_that_never_saw_the_example(
    tmp_path, tiny_dir, tiny_task
):
    folds, subset = 3, 50
    fold_dirs = [
        train_bias_model(
            _cfg(tiny_dir, tiny_task, tmp_path / f"fold{k}", cv_fold=k, cv_folds=folds),
            "shallow",
            subset=subset,
            epochs=2,
        )
        for k in range(folds)
    ]
    cfg = _cfg(tiny_dir, tiny_task, tmp_path / "bias")
    out = train_bias_model(
        cfg,
        "shallow",
        subset=subset,
        epochs=2,
        scoring="crossfit",
        folds=folds,
        fold_models=[str(d) for d in fold_dirs],
    )
    probs = pd.read_parquet(out / "train_probs.parquet")
    assert len(probs) == 192 and set(probs["fold"]) == set(range(folds))
    cross = probs.set_index("id")[P[3:]]
    everything = load_train_split(cfg.data_args()).examples
    cache = LogitCache(cfg.cache_dir)
    for k in range(folds):
        held = [e for e, f in zip(everything, probs["fold"], strict=True) if f == k]
        ids = [e["id"] for e in held]
        # each fold model fit on exactly `subset` of the examples its fold leaves
        assert len(_seen(fold_dirs[k])) == subset and not _seen(fold_dirs[k]) & set(ids)
        # the model whose probabilities the cross-fitted column holds for this fold never saw it
        scorers = [
            j
            for j, d in enumerate(fold_dirs)
            if np.allclose(bias_probs(str(d), held, cache, cfg.max_length), cross.loc[ids], 1e-5)
        ]
        assert scorers, f"fold {k}: no fold model gave its cross-fitted probabilities"
        for j in scorers:
            assert not _seen(fold_dirs[j]) & set(ids), f"fold {k} scored by a model that saw it"
    # in-sample scoring (the model fit on a subset of all folds) is kept beside it, and differs
    assert not np.allclose(probs[P[:3]].to_numpy(), probs[P[3:]].to_numpy())
    assert read_json(out / "bias.json")["scoring"] == "crossfit"


def test_a_shallow_setting_on_another_kind_or_train_epochs_is_refused(
    tmp_path, tiny_dir, tiny_task
):
    from robust_compress.io import UserError
    from robust_compress.study.run import prepare

    for bias, match in (
        ({"kind": "partial", "subset": 100}, "subset: settings of kind 'shallow'"),
        ({"kind": "shallow", "train": {"epochs": 2}}, "not train.epochs"),
        ({"kind": "shallow", "subset": 0}, "subset"),
    ):
        path = _exp(tmp_path, tiny_dir, tiny_task, bias_model=bias | {"easy_hard_split": "dev"})
        with pytest.raises(UserError, match=match):
            prepare(path)


def test_a_study_with_partial_and_shallow_bias_models_reweights_and_reports_their_agreement(
    tmp_path, tiny_dir, tiny_task
):
    from robust_compress.study.run import prepare, reproduce

    path = _exp(
        tmp_path,
        tiny_dir,
        tiny_task,
        teacher={"model": str(tiny_dir), "train": {"epochs": 1}},
        losses=["ce", "reweight"],
        compressions=[
            {
                "name": "mag",
                "method": "magnitude",
                "settings": {"sparsity": 0.5},
                "bias_models": ["sh"],
            }
        ],
        bias_models={
            "hyp": {"kind": "partial", "folds": 2, "easy_hard_split": "dev"},
            "sh": {
                "kind": "shallow",
                "subset": 48,
                "epochs": 2,
                "folds": 2,
                "easy_hard_split": "dev",
            },
        },
    )
    _, planned = prepare(path)
    by = {s.name: s for s in planned}
    sh_folds = [s for s in by["bias-sh"].deps if s.kind == "bias-fold"]
    assert [s.params for s in sh_folds] == [{"kind": "shallow", "subset": 48, "epochs": 2.0}] * 2
    assert by["bias-sh"].params["subset"] == 48 and "subset" not in by["bias-hyp"].params
    assert by["bias-sh"] in by["mag/reweight-sh/seed0"].deps
    assert "mag/reweight-hyp/seed0" not in by
    # the estimate counts the subset it trains on, for its epochs
    assert sh_folds[0].work["train"] == 48 * 2

    stages = {s.name: s for s in reproduce(path)}
    for f in sh_folds:
        run = read_yaml(stages[f.name].path / "run_config.yaml")
        assert run["train_subset"] == 48 and run["input_field"] is None
        assert read_json(stages[f.name].path / "train_metrics.json")["train_examples"] == 48
    assert read_yaml(stages["bias-hyp"].path / "run_config.yaml")["input_field"] == "text_b"
    b = read_json(tmp_path / "exp" / "analysis" / "bias_models.json")
    assert set(b) == {"hyp", "sh"} and b["sh"]["kind"] == "shallow"
    assert b["sh"]["training_set"]["scoring"] == "crossfit"
    agree = b["sh"]["agreement_with_bias_models"]["hyp"]
    assert 0 <= agree <= 1 and agree == b["hyp"]["agreement_with_bias_models"]["sh"]
    assert (stages["mag/reweight-sh/seed0"].path / "summary.json").is_file()


@needs_shared
@pytest.mark.integration
@pytest.mark.parametrize("task", ["mnli", "qqp", "fever"])
def test_shallow_on_every_built_in_task(task, tmp_path):
    """MiniLM-L3 on a few hundred examples of each built-in task (FEVER has no training data
    offline: its generated fixture), scored on an ID split the data folder has."""
    from robust_compress.config import RunConfig
    from robust_compress.stages.check import available_splits

    from .test_tasks import _fever_fixture

    data = _fever_fixture(tmp_path / "data") if task == "fever" else DATA
    dev = next(
        n
        for n in available_splits(task, str(data), "local")
        if n in ("dev", "dev_matched", "heldout")
    )
    cfg = RunConfig.model_validate(
        {
            "model": str(MODELS / "paraphrase-MiniLM-L3-v2"),
            "task": task,
            "data_dir": str(data),
            "output_dir": str(tmp_path / "sh"),
            "cache_dir": str(tmp_path / "cache"),
            "train_limit": 200,
            "eval_limit": 80,
            "eval_sets": [dev],
            "max_length": 64,
            "batch_size": 16,
            "lr": 1e-4,
            "record_dynamics": True,
        }
    )
    out = train_bias_model(
        cfg, "shallow", subset=64, epochs=1, easy_hard_split=dev, scoring="insample"
    )
    assert len(_seen(out)) == 64 and read_yaml(out / "run_config.yaml")["input_field"] is None
    assert len(pd.read_parquet(out / "train_probs.parquet")) == 200
    assert len(pd.read_parquet(out / "easy_hard.parquet")) == 80
