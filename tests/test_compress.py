import json
import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from robust_compress.io import UserError
from robust_compress.models.load import load_model
from robust_compress.models.quantized import is_quantized, load_for_inference, quantize
from robust_compress.stages import compress, evaluate_folder, finetune

from .conftest import LABELS, tiny_run_config


@pytest.fixture
def teacher(tiny_dir, tiny_task, tmp_path):
    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "teacher", epochs=8)
    return finetune(cfg)


def test_finetune_writes_complete_artifact(teacher):
    for f in (
        "model.safetensors",
        "config.json",
        "tokenizer_config.json",
        "run_config.yaml",
        "summary.json",
        "train_metrics.json",
        "compression.json",
        "predictions/dev.parquet",
        "predictions/ood.parquet",
    ):
        assert (teacher / f).is_file(), f
    s = json.loads((teacher / "summary.json").read_text())
    assert s["splits"]["dev"]["accuracy"] > 0.6  # the cue word is learnable
    assert set(s["splits"]["ood"]["by_kind"]) == {
        "k1/entailment",
        "k1/non-entailment",
        "k2/entailment",
        "k2/non-entailment",
    }
    assert "delta" in s
    assert not (teacher.parent / "teacher.partial").exists()


def test_magnitude_compress_reaches_sparsity_and_records_it(tiny_task, tmp_path, teacher):
    cfg = tiny_run_config(
        teacher,
        tiny_task,
        tmp_path / "m50",
        inputs={"teacher": str(teacher)},
        compression={
            "method": "magnitude",
            "sparsity": 0.5,
            "prune_end": 0.5,
            "snapshots": [0.25, 0.5],
        },
    )
    out = compress(cfg)
    rec = json.loads((out / "compression.json").read_text())
    assert abs(rec["measured_sparsity"] - 0.5) < 1e-3
    assert rec["nonzero_parameters"] < rec["parameters"]
    assert rec["flops_nonzero"] < rec["flops_dense"]
    assert rec["bytes_on_disk"] == (out / "model.safetensors").stat().st_size
    snaps = sorted(p.name for p in (tmp_path / "m50-snapshots").iterdir())
    assert snaps == ["sparsity-0.25", "sparsity-0.50"]
    assert "f_bias" in json.loads((out / "summary.json").read_text())


def test_kd_uses_cache_and_skips_teacher_on_hit(
    tiny_dir, tiny_task, tmp_path, teacher, monkeypatch
):
    cfg = tiny_run_config(
        tiny_dir,
        tiny_task,
        tmp_path / "kd1",
        loss={"name": "kd", "temperature": 2.0},
        inputs={"teacher": str(teacher)},
        compression={"method": "distill"},
    )
    compress(cfg)
    cache_files = list((tmp_path / "cache" / "logits").glob("*.safetensors"))
    assert len(cache_files) == 1

    def boom(*a, **k):
        raise AssertionError("teacher forward pass on a cache hit")

    monkeypatch.setattr("robust_compress.train.logit_cache.load_for_inference", boom)
    compress(cfg.model_copy(update={"output_dir": str(tmp_path / "kd2"), "seed": 1}))
    assert (
        len(list((tmp_path / "cache" / "logits").glob("*.safetensors"))) == 1
    )  # the hit wrote nothing new


def test_truncate_and_quantize(tiny_task, tmp_path, teacher):
    out = compress(
        tiny_run_config(
            teacher,
            tiny_task,
            tmp_path / "t1",
            inputs={"teacher": str(teacher)},
            compression={"method": "truncate", "layers": 1},
        )
    )
    assert load_model(str(out), LABELS).config.num_hidden_layers == 1
    q = compress(
        tiny_run_config(
            teacher, tiny_task, tmp_path / "q", bf16=True, compression={"method": "quantize"}
        )
    )
    assert json.loads((q / "quantization.json").read_text())["scheme"] == "dynamic-int8"
    m = load_model(str(teacher), LABELS).eval()
    x = {"input_ids": torch.tensor([[2, 7, 8, 3, 10, 3]])}
    qm = quantize(m)
    assert is_quantized(qm)  # every Linear runs with int8 weights ...
    linears = [mod for mod in qm.modules() if isinstance(mod, torch.nn.Linear)]
    assert linears and all(
        "Int8" in type(mod.weight).__name__ or "Affine" in type(mod.weight).__name__
        for mod in linears
    ), {type(mod.weight).__name__ for mod in linears}
    got, ref = qm(**x).logits, m(**x).logits
    assert not torch.equal(
        got, ref
    )  # ... so the logits move (a no-op "quantization" keeps them equal) ...
    torch.testing.assert_close(got, ref, atol=0.1, rtol=0.1)  # ... by little
    from safetensors import safe_open

    with safe_open(str(q / "model.safetensors"), "pt") as f:  # and the artifact is int8 on disk
        assert any(f.get_slice(k).get_dtype() == "I8" for k in f.keys())  # noqa: SIM118 -- not iterable


def test_evaluate_command_scores_an_int8_folder_as_int8(tiny_task, tmp_path, teacher):
    """`evaluate <int8 folder>` must score the quantized model, not its stored float weights."""
    q = compress(
        tiny_run_config(teacher, tiny_task, tmp_path / "q", compression={"method": "quantize"})
    )
    assert is_quantized(load_for_inference(q, LABELS))
    cfg = tiny_run_config(q, tiny_task, tmp_path / "unused")
    summary = evaluate_folder(q, cfg, tmp_path / "eval-q")
    float_summary = evaluate_folder(teacher, cfg, tmp_path / "eval-f")
    # the int8 artifact's own predictions (made while quantizing) equal the evaluate command's
    import pandas as pd

    own = pd.read_parquet(q / "predictions" / "dev.parquet")
    again = pd.read_parquet(tmp_path / "eval-q" / "predictions" / "dev.parquet")
    assert (own["p_entailment"] - again["p_entailment"]).abs().max() < 1e-6
    floats = pd.read_parquet(tmp_path / "eval-f" / "predictions" / "dev.parquet")
    assert (
        floats["p_entailment"] - again["p_entailment"]
    ).abs().max() > 1e-6  # int8 differs from float
    assert summary["splits"]["dev"]["n"] == float_summary["splits"]["dev"]["n"]


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"method": "magnitude", "sparsity": 1.0}, "sparsity"),
        ({"method": "magnitude", "sparsity": -0.1}, "sparsity"),
        ({"method": "heads"}, "needs `heads`"),
        ({"method": "truncate"}, "exactly one of `layers` and `keep`"),
        ({"method": "bogus"}, "compression"),
    ],
)
def test_bad_compression_settings(tiny_dir, tiny_task, settings, match):
    from robust_compress.config import validate

    with pytest.raises(UserError, match=match):
        validate({"model": str(tiny_dir), "task": str(tiny_task), "compression": settings})


def test_loss_without_its_input_is_refused_at_validation(tiny_dir, tiny_task):
    from robust_compress.config import validate

    with pytest.raises(UserError, match=r"loss 'rmc' needs inputs.teacher and inputs.uncertainty"):
        validate({"model": str(tiny_dir), "task": str(tiny_task), "loss": {"name": "rmc"}})
    with pytest.raises(ValidationError):
        tiny_run_config(tiny_dir, tiny_task, "x", loss={"name": "kd", "lam": 2})


def test_student_with_other_label_set_is_refused(teacher):
    with pytest.raises(UserError, match="labels"):
        load_model(str(teacher), ["yes", "no"])


def test_too_many_heads_is_refused_before_training(tiny_task, tmp_path, teacher, monkeypatch):
    monkeypatch.setattr(
        "robust_compress.stages.training.train", lambda *a, **k: pytest.fail("trained")
    )
    cfg = tiny_run_config(
        teacher, tiny_task, tmp_path / "h", compression={"method": "heads", "heads": 99}
    )
    with pytest.raises(UserError, match="cannot remove 99 of 8 heads"):
        compress(cfg)
    assert not (tmp_path / "h").exists() and not (tmp_path / "h.partial").exists()


def test_head_pruning_compress_shrinks_and_reloads(tiny_task, tmp_path, teacher):
    from transformers import AutoModelForSequenceClassification

    out = compress(
        tiny_run_config(
            teacher,
            tiny_task,
            tmp_path / "h2",
            inputs={"teacher": str(teacher)},
            compression={
                "method": "heads",
                "heads": 3,
                "iterative_steps": 2,
                "importance_batches": 2,
            },
        )
    )
    rec = json.loads((out / "compression.json").read_text())
    assert rec["heads_removed"] == 3
    assert sum(len(v) for v in rec["pruned_heads"].values()) == 3
    assert rec["parameters"] < rec["parameters_before"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    widths = [layer.attention.self.query.out_features for layer in reloaded.bert.encoder.layer]
    assert sum(widths) == (8 - 3) * 8  # 2 layers x 4 heads x head_dim 8, minus 3 heads


def test_ffn_pruning_is_reachable_from_the_config(tiny_task, tmp_path, teacher):
    out = compress(
        tiny_run_config(
            teacher,
            tiny_task,
            tmp_path / "f",
            compression={"method": "heads", "ffn": 0.25, "importance_batches": 2},
        )
    )
    rec = json.loads((out / "compression.json").read_text())
    assert rec["ffn_neurons_removed"] == round(0.25 * 2 * 64)
    assert rec["heads_removed"] == 0


@pytest.mark.parametrize("scheme", ["dynamic-int8", "dynamic-int8-torch-ao"])
def test_int8_artifact_is_int8_reloads_and_scores_as_saved(tiny_task, tmp_path, teacher, scheme):
    """torchao (default): int8 weights on disk (safetensors + torchao metadata, no pickle); torch.ao
    (fallback): float weights re-quantized at load. Either way the reloaded model is int8 and scores
    exactly what the stage scored."""
    import pandas as pd
    from safetensors import safe_open

    q = compress(
        tiny_run_config(
            teacher, tiny_task, tmp_path / "q", compression={"method": "quantize", "scheme": scheme}
        )
    )
    with safe_open(str(q / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (not iterable)
    if scheme == "dynamic-int8":
        assert "I8" in dtypes
    else:
        assert dtypes == {"F32"}
    model = load_for_inference(q, LABELS)
    assert is_quantized(model)
    evaluate_folder(q, tiny_run_config(q, tiny_task, tmp_path / "unused"), tmp_path / "again")
    own = pd.read_parquet(q / "predictions" / "dev.parquet")["p_entailment"]
    again = pd.read_parquet(tmp_path / "again" / "predictions" / "dev.parquet")["p_entailment"]
    assert (own - again).abs().max() < 1e-6


def test_a_run_with_the_controlled_shortcut_reports_reliance_and_delta(
    tiny_dir, tiny_task, tmp_path
):
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # markers in the tiny vocabulary (the default ones are [UNK] to it: both copies would read
    # alike and score alike, and aligned could not be told from conflicting)
    markers = ["sat", "ran", "on"]
    cue = {"rho": 0.9, "markers": markers}
    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "cue", max_steps=24, lr=5e-3, cue=cue)
    out = finetune(cfg)  # long enough to lean on the markers, not on the task's own cue words yet
    s = json.loads((out / "summary.json").read_text())
    assert {"dev+cue_aligned", "dev+cue_conflicting"} <= set(s["splits"])
    assert s["delta_ood"]["splits"] == ["ood"] and s["delta"] is not None
    preds = {
        n: pd.read_parquet(out / "predictions" / f"{n}.parquet").set_index("id")
        for n in ("dev", "ood", "dev+cue_aligned", "dev+cue_conflicting")
    }
    acc = {n: float((df["pred"] == df["gold"]).mean()) for n, df in preds.items()}
    # the aligned copy carries each example's gold marker: its saved probabilities are the model's
    # on the dev texts with that marker appended, scored here with plain transformers
    dev_file = tiny_task.parent / "data" / "dev.jsonl"
    rows = [json.loads(x) for x in dev_file.read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    enc = AutoTokenizer.from_pretrained(out)(
        [r["a"] for r in rows],
        [f"{r['b']} {markers[LABELS.index(r['label'])]}" for r in rows],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits.double(), -1).numpy()
    aligned = preds["dev+cue_aligned"].loc[[r["uid"] for r in rows]]
    assert sorted(aligned.index) == sorted(preds["dev+cue_conflicting"].index)
    cols = [f"p_{model.config.id2label[j]}" for j in range(len(LABELS))]
    np.testing.assert_allclose(aligned[cols].to_numpy(), probs, atol=1e-5)
    # reliance = acc(cue-aligned) - acc(cue-conflicting), from the saved predictions
    a, c = acc["dev+cue_aligned"], acc["dev+cue_conflicting"]
    assert a != c  # the model reads the markers: a swapped pair would show
    got = s["shortcut"]["dev"]
    assert set(got) == {"aligned", "conflicting", "reliance"}
    assert (got["aligned"], got["conflicting"]) == pytest.approx((a, c), abs=1e-12)
    assert got["reliance"] == pytest.approx(a - c, abs=1e-12)
    # Delta = (acc_ID - acc_OOD) / acc_ID, from the summary's accuracies and from the predictions
    acc_id, acc_ood = s["splits"]["dev"]["accuracy"], s["splits"]["ood"]["accuracy"]
    assert (acc_id, acc_ood) == pytest.approx((acc["dev"], acc["ood"]), abs=1e-12)
    assert (s["acc_id"], s["acc_ood"]) == pytest.approx((acc_id, acc_ood), abs=1e-12)
    assert s["delta"] == pytest.approx((acc_id - acc_ood) / acc_id, abs=1e-12)


def test_speed_command_times_models_against_the_first(tiny_task, tmp_path, teacher):
    from typer.testing import CliRunner

    from robust_compress.cli import app

    q = compress(
        tiny_run_config(teacher, tiny_task, tmp_path / "q", compression={"method": "quantize"})
    )
    r = CliRunner().invoke(
        app,
        [
            "speed",
            str(teacher),
            str(q),
            "--task",
            str(tiny_task),
            "--examples",
            "16",
            "--repeats",
            "1",
            "-o",
            str(tmp_path / "speed.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    rates = json.loads((tmp_path / "speed.json").read_text())["examples_per_s"]
    assert set(rates) == {str(teacher), str(q)} and all(v > 0 for v in rates.values())
    # the printed lines, "<model> <rate> ex/s <speed-up>x": each model's rate as the JSON has it,
    # and its speed-up that rate over the first model's (the first: 1.00x)
    printed = {
        m[1]: (float(m[2]), float(m[3]))
        for line in r.output.splitlines()
        if (m := re.fullmatch(r"(\S+)\s+([\d.]+) ex/s\s+([\d.]+)x", line.strip()))
    }
    assert set(printed) == set(rates), r.output
    for name, (rate, speedup) in printed.items():
        assert rate == pytest.approx(rates[name], abs=0.05 + 1e-9), name
        assert speedup == pytest.approx(rates[name] / rates[str(teacher)], abs=0.005 + 1e-9), name
    assert printed[str(teacher)][1] == 1.0


# the smallest settings of every registered method: a new method must add its line here
SMALLEST = {
    "magnitude": {"sparsity": 0.5},
    "heads": {"heads": 1, "importance_batches": 1},
    "structured": {"target_flops": 0.7, "importance_batches": 1},
    "truncate": {"layers": 1},
    "distill": {},
    "quantize": {},
    "fisher": {"target_flops": 0.7, "samples": 32},
}


def test_every_registered_method_is_tested():
    from robust_compress.compress import METHODS

    assert set(SMALLEST) == set(METHODS)


@pytest.mark.parametrize("method", sorted(SMALLEST))
def test_every_method_compresses_records_and_reloads(method, tiny_task, tmp_path, teacher):
    """Each method, through the one `compress` path: the artifact records its method and
    settings, reloads with the project's loader and scores every example, and is no larger than
    the teacher (distill's student is the teacher's own architecture here)."""
    out = compress(
        tiny_run_config(
            teacher,
            tiny_task,
            tmp_path / method,
            max_steps=2,
            compression={"method": method, **SMALLEST[method]},
            **(
                {}
                if method == "quantize"
                else {"loss": {"name": "distil"}, "inputs": {"teacher": str(teacher)}}
            ),
        )
    )
    record = json.loads((out / "compression.json").read_text())
    assert record["method"] == method and record["settings"]["method"] == method
    if method == "quantize":  # int8 on disk
        assert record["bytes_on_disk"] < (teacher / "model.safetensors").stat().st_size
    elif method == "magnitude":  # half of the encoder's weights are exact zeros
        assert record["nonzero_parameters"] < 0.9 * record["parameters"]
    elif method != "distill":  # units or layers removed (distill's student is the teacher's shape)
        assert record["parameters"] < record["parameters_before"]
    summary = json.loads((out / "summary.json").read_text())
    assert all(s["n"] > 0 for s in summary["splits"].values())
    again = evaluate_folder(str(out), tiny_run_config(out, tiny_task, tmp_path / f"{method}-eval"))
    assert again["splits"] == summary["splits"]  # the saved model scores as it was scored
