"""Bring your own model: label names and orders matched to the task's, the classifier's rows
permuted at load, so a model saved in any order predicts exactly what the original does,
everywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from robust_compress.io import UserError
from robust_compress.models.families import classifier_out
from robust_compress.models.labels import align, canonical
from robust_compress.models.load import load_model, model_labels
from robust_compress.models.pruned import prune_heads
from robust_compress.models.quantized import load_for_inference, quantize, save_quantized
from robust_compress.stages import compress, evaluate_folder
from robust_compress.train.logit_cache import LogitCache

from .conftest import LABELS, ORDERS, ROOT, save_reordered, tiny_run_config
from .test_families import FAMILIES, _batch, _logits, zoo  # noqa: F401 (zoo: the session fixture)

MNLI = ["entailment", "neutral", "contradiction"]


def cli(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "robust_compress.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=600,
    )


# ---------------------------------------------------------------- matching names (no model needed)


@pytest.mark.parametrize("name", list(ORDERS))
def test_known_orders_align_to_the_task(name):
    names, rows, label_map = ORDERS[name]
    perm = align(names, MNLI, label_map)
    assert [rows[p] for p in perm] == [0, 1, 2]  # output row perm[i] is task label i


def test_synonyms_cover_the_three_tasks():
    assert align(["not_entailment", "entails"], ["entailment", "non-entailment"]) == [1, 0]
    assert align(["duplicate", "not_duplicate"], ["not_duplicate", "duplicate"]) == [1, 0]
    assert align(["1", "0"], ["not_duplicate", "duplicate"]) == [1, 0]
    assert align(["REFUTES", "NEI", "Supports"], ["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"]) == [
        2,
        0,
        1,
    ]
    assert (
        canonical("Not Enough Info") == canonical("not_enough_info") == canonical("NOT-ENOUGH-INFO")
    )
    with pytest.raises(UserError, match="no single model label means 'entailment'"):
        align(["entailment", "entailment", "contradiction"], MNLI)


def test_refusals_name_the_problem_and_the_label_map_setting():
    with pytest.raises(
        UserError, match=r"cannot be matched .*LABEL_k say nothing.*label_map setting"
    ):
        align(["LABEL_0", "LABEL_1", "LABEL_2"], MNLI)
    with pytest.raises(UserError, match=r"label_map: m has no label 'LABEL_5'"):
        align(["LABEL_0", "LABEL_1", "LABEL_2"], MNLI, {"LABEL_5": "neutral"}, where="m")
    with pytest.raises(
        UserError, match=r"'LABEL_0' -> 'maybe', but 'maybe' is not one of the labels"
    ):
        align(["LABEL_0", "LABEL_1", "LABEL_2"], MNLI, {"LABEL_0": "maybe"})
    with pytest.raises(UserError, match=r"cannot be matched .*label_map"):  # an incomplete map
        align(
            ["LABEL_0", "LABEL_1", "LABEL_2"], MNLI, {"LABEL_0": "neutral", "LABEL_1": "entailment"}
        )
    with pytest.raises(
        UserError, match=r"2 labels .* 3 labels .*2-way entailment model: use it on 2-way sets"
    ):
        align(["entailment", "not_entailment"], MNLI)
    # a map for other models does not touch a model whose names match on their own
    assert align(["CONTRADICTION", "NEUTRAL", "ENTAILMENT"], MNLI, {"LABEL_0": "neutral"}) == [
        2,
        1,
        0,
    ]


def test_label_map_setting_is_validated():
    from robust_compress.config import validate

    cfg = validate({"model": "m", "label_map": {0: "neutral", "LABEL_1": "entailment"}})
    assert cfg.label_map == {"0": "neutral", "LABEL_1": "entailment"}  # YAML's int keys: indices
    with pytest.raises(
        UserError, match=r"label_map: .*'LABEL_0' and 'LABEL_1' both map to 'NEUTRAL'"
    ):
        validate({"model": "m", "label_map": {"LABEL_0": "neutral", "LABEL_1": "NEUTRAL"}})


def _with_config(tiny_dir, tmp_path, **change):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "config.json").read_text()) | change
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_gaps_in_id2label_and_regression_heads_are_one_line(tiny_dir, tmp_path):
    gaps = _with_config(
        tiny_dir, tmp_path, id2label={"0": "entailment", "2": "neutral", "3": "contradiction"}
    )
    with pytest.raises(
        UserError, match=r"config.json: id2label keys \['0', '2', '3'\] are not 0..2"
    ):
        model_labels(gaps)
    shutil.rmtree(gaps)
    reg = _with_config(tiny_dir, tmp_path, id2label={"0": "LABEL_0"}, problem_type="regression")
    with pytest.raises(
        UserError, match=r"a regression head \(num_labels 1 / problem_type regression\)"
    ):
        load_model(str(reg), LABELS)


# ---------------------------------------------------------------- every family, pruned types too


def _pruned(zoo_dir, tmp_path):
    m = AutoModelForSequenceClassification.from_pretrained(zoo_dir)
    prune_heads(m, {0: [1], 1: [0, 2]})
    m.save_pretrained(tmp_path / "pruned")
    for f in zoo_dir.iterdir():
        if f.name.startswith(("vocab", "tokenizer", "special")):
            shutil.copy(f, tmp_path / "pruned" / f.name)
    return tmp_path / "pruned"


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads_in_the_task_order(family, pruned, zoo, tmp_path):  # noqa: F811
    """The adapter names the final layer (a bias shift moves exactly the logits), and a copy saved
    in roberta-large-mnli's order loads to the original's logits, named in the task's order."""
    src = _pruned(zoo[family], tmp_path) if pruned else zoo[family]
    original = load_model(str(src), LABELS).eval()
    assert original.config.model_type.startswith("pruned_") == pruned
    batch = _batch()
    base = _logits(original, batch)
    with torch.no_grad():
        classifier_out(original).bias += torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(_logits(original, batch), base + torch.tensor([1.0, 2.0, 3.0]))
    names, rows, _ = ORDERS["roberta-mnli"]
    other = load_model(str(save_reordered(src, tmp_path / "other", names, rows)), LABELS).eval()
    torch.testing.assert_close(_logits(other, batch), base, atol=0, rtol=0)
    assert (
        other.config.id2label == dict(enumerate(LABELS))
        and other.config.label2id["contradiction"] == 2
    )


# --------------------------------------------------------- evaluate, compress, teacher logits, int8


@pytest.fixture(scope="module")
def trained(tmp_path_factory, written, shared_tiny_task):
    """A briefly fine-tuned model (predictions vary across classes), its copies in every order, and
    what the original gives: predictions, and a magnitude/distil compress run from it."""
    root = tmp_path_factory.mktemp("orders")
    teacher = written["teacher"]
    copies = {
        n: save_reordered(teacher, root / n, names, rows) for n, (names, rows, _) in ORDERS.items()
    }
    ev = evaluate_folder(
        teacher, tiny_run_config(teacher, shared_tiny_task, root / "x"), root / "eval"
    )
    assert (
        ev["splits"]["dev"]["top_pred_share"] < 0.9
    )  # not a constant predictor: the comparison means something
    mag = compress(_mag_cfg(teacher, teacher, shared_tiny_task, root / "mag", None))
    return {
        "root": root,
        "teacher": teacher,
        "copies": copies,
        "eval": root / "eval",
        "mag": mag,
        "task": shared_tiny_task,
    }


def _mag_cfg(start, teacher, task, out, label_map):
    return tiny_run_config(
        start,
        task,
        out,
        max_steps=3,
        loss={"name": "distil"},
        inputs={"teacher": str(teacher)},
        compression={"method": "magnitude", "sparsity": 0.4, "prune_end": 0.5},
        label_map=label_map,
    )


def _same_tables(a, b, atol=1e-6):
    for split in ("dev", "ood"):
        x, y = (
            pd.read_parquet(a / "predictions" / f"{split}.parquet"),
            pd.read_parquet(b / "predictions" / f"{split}.parquet"),
        )
        assert list(x.columns) == list(y.columns)
        assert (x["pred"] == y["pred"]).all() and (x["id"] == y["id"]).all()
        probs = [c for c in x.columns if c.startswith("p_")]
        np.testing.assert_allclose(x[probs].to_numpy(), y[probs].to_numpy(), atol=atol)


@pytest.mark.parametrize("order", list(ORDERS))
def test_a_model_in_another_order_evaluates_compresses_and_teaches_like_the_original(
    order, trained, tmp_path
):
    """evaluate, the teacher's logits (cached, in the task's order), and a magnitude + Distil run
    that starts from the copy and learns from it: the original's numbers (the run: its weights
    too)."""
    label_map = ORDERS[order][2]
    copy, task = trained["copies"][order], trained["task"]
    cfg = tiny_run_config(copy, task, tmp_path / "x", label_map=label_map)
    evaluate_folder(copy, cfg, tmp_path / "eval")
    _same_tables(trained["eval"], tmp_path / "eval")

    from robust_compress.data.load import load_split
    from robust_compress.data.tasks import load_task

    ex = load_split(load_task(str(task)), "dev", None).examples
    cache = LogitCache(tmp_path / "cache")
    np.testing.assert_allclose(
        cache.get(copy, ex, 32, LABELS, label_map), cache.get(trained["teacher"], ex, 32), atol=1e-6
    )
    assert (
        cache.misses == 2
    )  # the copy's logits were computed from the copy, not found under the original's key

    mag = compress(_mag_cfg(copy, copy, task, tmp_path / "mag", label_map))
    _same_tables(trained["mag"], mag)
    a, b = load_model(str(trained["mag"]), LABELS), load_model(str(mag), LABELS)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=n)
    assert json.loads((mag / "config.json").read_text())["id2label"] == {
        str(i): n for i, n in enumerate(LABELS)
    }


def test_int8_of_a_model_in_another_order(trained, tmp_path):
    """quantize from a copy = quantize from the original; an int8 folder saved in another order (its
    int8 rows and scales permuted at load) predicts what the original's int8 does."""
    copy, task = trained["copies"]["cross-encoder"], trained["task"]
    q_orig = compress(
        tiny_run_config(
            trained["teacher"], task, tmp_path / "q0", compression={"method": "quantize"}
        )
    )
    q_copy = compress(
        tiny_run_config(copy, task, tmp_path / "q1", compression={"method": "quantize"})
    )
    _same_tables(q_orig, q_copy)
    raw = AutoModelForSequenceClassification.from_pretrained(
        copy
    ).eval()  # as saved: the copy's own order
    assert raw.config.id2label[0] == "contradiction"
    from robust_compress.models.load import load_tokenizer

    tok = load_tokenizer(str(copy))
    save_quantized(quantize(raw), raw, tok, tmp_path / "int8-other", "dynamic-int8")
    int8 = load_for_inference(tmp_path / "int8-other", LABELS)
    expected = load_for_inference(q_orig, LABELS)
    batch = _batch()
    torch.testing.assert_close(_logits(int8, batch), _logits(expected, batch), atol=1e-6, rtol=0)


def test_a_two_way_entailment_model_scores_hans_like_sets_and_is_refused_on_three_way_ones(
    trained, tmp_path
):
    teacher, task = trained["teacher"], trained["task"]
    m = AutoModelForSequenceClassification.from_pretrained(teacher)
    two = torch.nn.Linear(m.config.hidden_size, 2)
    with torch.no_grad():
        two.weight.copy_(m.classifier.weight[:2])
        two.bias.copy_(m.classifier.bias[:2])
    m.classifier, m.num_labels = two, 2
    m.config.id2label, m.config.label2id = (
        {0: "not_entailment", 1: "entailment"},
        {"not_entailment": 0, "entailment": 1},
    )
    m.save_pretrained(tmp_path / "two")
    for f in teacher.iterdir():
        if f.name.startswith(("vocab", "tokenizer", "special")):
            shutil.copy(f, tmp_path / "two" / f.name)
    with pytest.raises(
        UserError,
        match=r"2-way entailment model.*eval_sets=\[hans\].*sets \['dev'\] need the task's 3",
    ):
        evaluate_folder(
            tmp_path / "two", tiny_run_config(teacher, task, tmp_path / "x"), tmp_path / "e"
        )
    s = evaluate_folder(
        tmp_path / "two",
        tiny_run_config(teacher, task, tmp_path / "x", eval_sets=["ood"]),
        tmp_path / "e",
    )
    df = pd.read_parquet(tmp_path / "e" / "predictions" / "ood.parquet")
    logits = m.eval()  # its own p(entailment), not a sum over a 3-way head
    from robust_compress.data.batching import EncodedSplit
    from robust_compress.data.load import load_split
    from robust_compress.data.tasks import load_task
    from robust_compress.models.infer import predict_logits
    from robust_compress.models.load import load_tokenizer

    split = load_split(load_task(str(task)), "ood", None)
    raw, _ = predict_logits(logits, EncodedSplit(split.examples, load_tokenizer(str(teacher)), 32))
    np.testing.assert_allclose(
        df["p_entailment"], torch.softmax(torch.tensor(raw), 1)[:, 1].numpy(), atol=1e-6
    )
    assert s["splits"]["ood"]["n"] == len(split)
    with pytest.raises(UserError, match="2-way entailment model"):  # nor trained on the 3-way task
        compress(tiny_run_config(tmp_path / "two", task, tmp_path / "c", max_steps=1))


# ------------------------------------------------------------ a study's check, and the command line


def test_a_study_checks_a_given_teacher_in_another_order(trained, tmp_path):
    import yaml

    from robust_compress.study.run import prepare

    def exp(teacher, **defaults):
        e = {
            "name": "t",
            "task": str(trained["task"]),
            "output_dir": str(tmp_path / "s"),
            "seeds": [0],
            "defaults": {
                "batch_size": 16,
                "max_length": 32,
                "cache_dir": str(tmp_path / "c"),
                **defaults,
            },
            "teacher": {"model": str(teacher), "path": str(teacher)},
            "losses": ["ce"],
            "compressions": [{"name": "m", "method": "magnitude", "settings": {"sparsity": 0.5}}],
            "speed": None,
        }
        (tmp_path / "e.yaml").write_text(yaml.safe_dump(e))
        return tmp_path / "e.yaml"

    prepare(exp(trained["copies"]["roberta-mnli"]))
    with pytest.raises(UserError, match=r"e\.yaml: .*cannot be matched .*label_map setting"):
        prepare(exp(trained["copies"]["label-k"]))
    prepare(exp(trained["copies"]["label-k"], label_map=ORDERS["label-k"][2]))


@pytest.mark.parametrize(
    "bad,match",
    [
        ("unmatched", r"cannot be matched to the labels .*label_map"),
        ("missing-key", r"label_map: .* has no label 'LABEL_7'"),
        ("regression", r"a regression head"),
    ],
)
def test_bad_labels_are_one_line_on_the_command_line(bad, match, trained, tmp_path):
    copy = trained["copies"]["label-k"]
    args = ["evaluate", str(copy), "--task", str(trained["task"]), "-o", str(tmp_path / "e")]
    if bad == "missing-key":
        args += ["-s", "label_map={LABEL_0: neutral, LABEL_7: entailment}"]
    if bad == "regression":
        reg = _with_config(
            trained["teacher"], tmp_path, id2label={"0": "score"}, problem_type="regression"
        )
        args[1] = str(reg)
    r = cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and __import__("re").search(match, r.stderr), (
        r.stderr
    )


# -------------------------------------------------------------- hub ids from a local cache, offline


def make_hub_cache(src, cache, repo_id, commit="0123456789abcdef0123456789abcdef01234567"):
    """The Hugging Face cache layout: blobs by content hash, a snapshot of symlinks, refs/main."""
    import hashlib

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for d in (repo / "refs", repo / "blobs", snap):
        d.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for f in src.iterdir():
        if f.is_file():
            blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copy2(f, blob)
            os.symlink(os.path.relpath(blob, snap), snap / f.name)
    return snap


def test_a_hub_id_resolves_offline_from_the_cache_and_evaluates(trained, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from robust_compress.models.load import resolve_model_dir

    snap = make_hub_cache(trained["copies"]["roberta-mnli"], tmp_path / "hub", "acme/tiny-nli")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert constants.HF_HUB_OFFLINE
    assert resolve_model_dir("acme/tiny-nli") == snap
    with pytest.raises(
        UserError, match="acme/missing: not a local folder and not available from the hub"
    ):
        resolve_model_dir("acme/missing")
    r = cli(
        "evaluate",
        "acme/tiny-nli",
        "--task",
        str(trained["task"]),
        "-o",
        str(tmp_path / "e"),
        env={"HF_HUB_CACHE": str(tmp_path / "hub")},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    _same_tables(trained["eval"], tmp_path / "e")
    assert not (tmp_path / "acme").exists()
