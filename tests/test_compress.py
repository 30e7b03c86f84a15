import json

import pytest
import torch

from robust_compress.compress import compress, quantize_dynamic
from robust_compress.io import UserError
from robust_compress.models import load_model
from robust_compress.runner import finetune

from .conftest import LABELS, tiny_run_config


@pytest.fixture
def teacher(tiny_dir, tiny_task, tmp_path):
    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "teacher", epochs=8)
    return finetune(cfg)


def test_finetune_writes_complete_artifact(teacher):
    for f in ("model.safetensors", "config.json", "tokenizer_config.json", "run_config.yaml", "summary.json",
              "train_metrics.json", "predictions/dev.parquet", "predictions/ood.parquet"):
        assert (teacher / f).is_file(), f
    s = json.loads((teacher / "summary.json").read_text())
    assert s["splits"]["dev"]["accuracy"] > 0.6  # the cue word is learnable
    assert set(s["splits"]["ood"]["by_kind"]) == {"k1/entailment", "k1/non-entailment", "k2/entailment",
                                                  "k2/non-entailment"}
    assert "delta" in s
    assert not (teacher.parent / "teacher.partial").exists()


def test_magnitude_compress_reaches_sparsity_and_records_it(tiny_dir, tiny_task, tmp_path, teacher):
    cfg = tiny_run_config(teacher, tiny_task, tmp_path / "m50", compression={
        "method": "magnitude", "sparsity": 0.5, "teacher": str(teacher), "prune_end": 0.5,
        "snapshots": [0.25, 0.5]})
    out = compress(cfg)
    rec = json.loads((out / "compression.json").read_text())
    assert abs(rec["measured_sparsity"] - 0.5) < 1e-3
    assert rec["nonzero_parameters"] < rec["parameters"]
    assert rec["flops_nonzero"] < rec["flops_dense"]
    snaps = sorted(p.name for p in (tmp_path / "m50-snapshots").iterdir())
    assert snaps == ["sparsity-0.25", "sparsity-0.50"]
    assert "f_bias" in json.loads((out / "summary.json").read_text())


def test_kd_uses_cache_and_skips_teacher_on_hit(tiny_dir, tiny_task, tmp_path, teacher, monkeypatch):
    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "kd1", loss={"name": "kd", "temperature": 2.0},
                          compression={"method": "distill", "teacher": str(teacher)})
    compress(cfg)
    cache_files = list((tmp_path / "cache" / "logits").glob("*.safetensors"))
    assert len(cache_files) == 1

    def boom(*a, **k):
        raise AssertionError("teacher forward pass on a cache hit")

    monkeypatch.setattr("robust_compress.compress.load_for_inference", boom)
    compress(cfg.model_copy(update={"output_dir": str(tmp_path / "kd2"), "seed": 1}))
    assert len(list((tmp_path / "cache" / "logits").glob("*.safetensors"))) == 1  # the hit wrote nothing new


def test_truncate_and_quantize(tiny_dir, tiny_task, tmp_path, teacher):
    out = compress(tiny_run_config(teacher, tiny_task, tmp_path / "t1",
                                   compression={"method": "truncate", "layers": 1, "teacher": str(teacher)}))
    assert load_model(str(out), LABELS).config.num_hidden_layers == 1
    q = compress(tiny_run_config(teacher, tiny_task, tmp_path / "q", bf16=True, compression={"method": "quantize"}))
    rec = json.loads((q / "compression.json").read_text())
    assert rec["bytes_int8"] < rec["bytes_float"]
    m = load_model(str(teacher), LABELS).eval()
    x = {"input_ids": torch.tensor([[2, 7, 8, 3, 10, 3]])}
    torch.testing.assert_close(quantize_dynamic(m)(**x).logits, m(**x).logits, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("settings,match", [
    ({"method": "magnitude", "sparsity": 1.0}, "sparsity"),
    ({"method": "magnitude", "sparsity": -0.1}, "sparsity"),
    ({"method": "heads"}, "needs `heads`"),
])
def test_bad_compression_settings(tiny_dir, tiny_task, tmp_path, settings, match):
    with pytest.raises(UserError, match=match):
        from robust_compress.config import validate

        validate({"model": str(tiny_dir), "task": str(tiny_task), "compression": settings})


def test_student_with_other_label_set_is_refused(tiny_dir, tiny_task, tmp_path, teacher):
    with pytest.raises(UserError, match="labels"):
        load_model(str(teacher), ["yes", "no"])


def test_too_many_heads_is_refused(tiny_dir, tiny_task, tmp_path, teacher):
    cfg = tiny_run_config(teacher, tiny_task, tmp_path / "h", compression={"method": "heads", "heads": 99})
    with pytest.raises(UserError):
        compress(cfg)


def test_head_pruning_compress_shrinks_and_reloads(tiny_dir, tiny_task, tmp_path, teacher):
    from transformers import AutoModelForSequenceClassification

    out = compress(tiny_run_config(teacher, tiny_task, tmp_path / "h2", compression={
        "method": "heads", "heads": 3, "iterative_steps": 2, "importance_batches": 2, "teacher": str(teacher)}))
    rec = json.loads((out / "compression.json").read_text())
    assert rec["heads_removed"] == 3
    assert sum(len(v) for v in rec["pruned_heads"].values()) == 3
    assert rec["parameters"] < rec["parameters_before"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    widths = [layer.attention.self.query.out_features for layer in reloaded.bert.encoder.layer]
    assert sum(widths) == (8 - 3) * 8  # 2 layers x 4 heads x head_dim 8, minus 3 heads
