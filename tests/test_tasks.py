"""The paper's other two tasks: QQP -> PAWS offline (a deduplicated held-out ID set, PAWS-QQP and
PAWS-Wiki pooled for F_bias) and FEVER -> Symmetric end to end on a generated FEVER-format fixture
(F_bias on the plain mean of Symmetric v1 and v2; the adversarial sets reported beside it)."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import yaml

from robust_compress.data.load import load_split, pair_key
from robust_compress.data.tasks import BUILTIN
from robust_compress.metrics import ood_accuracy, summarize

from .conftest import DATA, needs_shared
from .test_families import _make

FEVER_LABELS = ["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"]


def test_pair_key_ignores_case_punctuation_and_order():
    assert pair_key("How do I learn?", "what is  Python") == pair_key(
        "What is python", "how do i learn"
    )


@needs_shared
def test_qqp_heldout_shares_no_pair_with_train_or_paws():
    qqp = BUILTIN["qqp"]
    held = load_split(qqp, "heldout", DATA)
    others = set()
    for name in ("train", "paws_qqp", "paws_wiki"):
        others |= {pair_key(e["text_a"], e["text_b"]) for e in load_split(qqp, name, DATA).examples}
    assert not any(pair_key(e["text_a"], e["text_b"]) in others for e in held.examples)
    assert len(held) == 19470  # one pair of the 19,471 also occurs in PAWS-QQP
    labels = np.bincount([e["label"] for e in held.examples])
    assert abs(labels[0] - labels[1]) < 0.01 * len(held)  # balanced, unlike QQP
    assert qqp.delta_rule(["heldout", "paws_qqp", "paws_wiki"]) == {
        "splits": ["paws_qqp", "paws_wiki"],
        "combine": "pooled",
    }


def test_fever_f_bias_uses_the_mean_of_symmetric_v1_and_v2():
    fever = BUILTIN["fever"]
    rule = fever.delta_rule(["dev", "symmetric_v1", "symmetric_v2", "fever2_fixers", "triggers"])
    assert rule == {"splits": ["symmetric_v1", "symmetric_v2"], "combine": "mean"}
    tables = {
        "dev": pd.DataFrame(
            {"correct": [True] * 8, "gold": "SUPPORTS", "pred": "SUPPORTS", "confidence": 0.9}
        ),
        "symmetric_v1": pd.DataFrame(
            {"correct": [True, False], "gold": "SUPPORTS", "pred": "x", "confidence": 0.5}
        ),
        "symmetric_v2": pd.DataFrame(
            {
                "correct": [True] * 6 + [False] * 2,
                "gold": "SUPPORTS",
                "pred": "x",
                "confidence": 0.5,
            }
        ),
        "fever2_fixers": pd.DataFrame(
            {"correct": [False] * 4, "gold": "SUPPORTS", "pred": "x", "confidence": 0.5}
        ),
    }
    acc, _ = ood_accuracy(tables, rule)
    assert acc == pytest.approx((0.5 + 0.75) / 2)  # not pooled (7/10), and the fixers do not count
    roles = {"dev": "id", "symmetric_v1": "ood", "symmetric_v2": "ood", "fever2_fixers": "ood"}
    s = summarize(tables, roles, {}, rule=rule)
    assert s["delta"] == pytest.approx((1 - acc) / 1) and s["delta_ood"] == rule


def _fever_fixture(root):
    """FEVER-format files in the local data layout, generated: the claim shares words with the
    evidence for SUPPORTS, negates it for REFUTES, is unrelated for NOT ENOUGH INFO."""
    rng = random.Random(0)
    words = [
        "cat",
        "dog",
        "sat",
        "ran",
        "mat",
        "park",
        "big",
        "small",
        "red",
        "blue",
        "house",
        "tree",
    ]

    def row(i, label):
        ev = " ".join(rng.choice(words) for _ in range(8))
        claim = {
            "SUPPORTS": " ".join(ev.split()[:4]),
            "REFUTES": "no " + " ".join(ev.split()[:3]),
            "NOT ENOUGH INFO": " ".join(rng.choice(words) for _ in range(4)),
        }[label]
        return {"id": i, "claim": claim, "evidence": ev, "label": label}

    def write(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    write(root / "fever" / "train.jsonl", [row(i, FEVER_LABELS[i % 3]) for i in range(240)])
    write(root / "fever" / "dev.jsonl", [row(i, FEVER_LABELS[i % 3]) for i in range(90)])
    v1 = [row(i, FEVER_LABELS[i % 2]) for i in range(40)]
    write(
        root / "fever_symmetric" / "v1" / "fever_symmetric_generated.jsonl",
        [
            {
                "id": r["id"],
                "claim": r["claim"],
                "evidence_sentence": r["evidence"],
                "label": r["label"],
            }
            for r in v1
        ],
    )
    write(
        root / "fever_symmetric" / "v2" / "fever_symmetric_test.jsonl",
        [row(i, FEVER_LABELS[i % 2]) for i in range(30)],
    )
    write(
        root / "fever_adversarial" / "fever2_fixers.jsonl",
        [row(i // 2, FEVER_LABELS[i % 2]) for i in range(20)],
    )
    write(
        root / "fever_adversarial" / "fever_triggers.jsonl",
        [row(i // 2, FEVER_LABELS[i % 3]) for i in range(12)],
    )
    return root


def test_fever_study_end_to_end_on_a_fixture(tmp_path):
    """Teacher, claim-only bias model, easy/hard, magnitude pruning with Vanilla and RMC, report."""
    import shutil

    from transformers import BertForSequenceClassification

    from robust_compress.io import UserError
    from robust_compress.report import build_report
    from robust_compress.study.run import prepare, reproduce

    data = _fever_fixture(tmp_path / "data")
    mnli_head = _make(tmp_path / "zoo", "bert")
    model = tmp_path / "encoder"  # a bare encoder: the FEVER head starts new
    BertForSequenceClassification.from_pretrained(mnli_head).bert.save_pretrained(model)
    for f in mnli_head.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, model / f.name)
    exp = {
        "name": "fever-fixture",
        "task": "fever",
        "output_dir": str(tmp_path / "study"),
        "seeds": [0],
        "defaults": {
            "data_dir": str(data),
            "batch_size": 16,
            "lr": 2e-3,
            "max_length": 48,
            "max_steps": 6,
            "cache_dir": str(tmp_path / "cache"),
        },
        "teacher": {"model": str(model)},
        "compressions": [{"name": "mag-0.4", "method": "magnitude", "settings": {"sparsity": 0.4}}],
        "losses": ["ce", "rmc"],
        "uncertainty": {"source": "oneshot", "sparsities": [0.3, 0.6]},
        "bias_model": {"kind": "partial", "model": str(model), "easy_hard_split": "dev"},
        "speed": None,
    }
    (tmp_path / "wrong.yaml").write_text(
        yaml.safe_dump(exp | {"teacher": {"model": str(mnli_head)}})
    )
    with pytest.raises(
        UserError,
        match=r"a classifier over \['entailment', 'neutral', 'contradiction'\], but the task "
        r"has labels \['SUPPORTS'.*a model of another task.*label_map",
    ):
        prepare(tmp_path / "wrong.yaml")  # found before any work
    (tmp_path / "fever.yaml").write_text(yaml.safe_dump(exp))
    stages = reproduce(tmp_path / "fever.yaml")
    assert all(s.done() for s in stages)
    teacher = next(s for s in stages if s.kind == "teacher").path
    summary = json.loads((teacher / "summary.json").read_text())
    assert set(summary["splits"]) == {
        "dev",
        "symmetric_v1",
        "symmetric_v2",
        "fever2_fixers",
        "triggers",
    }
    assert summary["delta_ood"] == {"splits": ["symmetric_v1", "symmetric_v2"], "combine": "mean"}
    acc = np.mean([summary["splits"][s]["accuracy"] for s in ("symmetric_v1", "symmetric_v2")])
    assert summary["acc_ood"] == pytest.approx(acc)
    bias = next(s for s in stages if s.kind == "bias").path
    assert (
        yaml.safe_load((bias / "run_config.yaml").read_text())["input_field"] == "text_b"
    )  # the claim only
    md = (build_report(tmp_path / "study") / "report.md").read_text()
    assert "fever2_fixers (OOD)" in md and "Easy / hard examples of dev" in md
