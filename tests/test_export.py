"""ONNX export of every compressed model kind: onnxruntime's logits equal PyTorch's (fp32, 1e-4)."""

from __future__ import annotations

import json

import pytest

from robust_compress.stages import compress, export_onnx, finetune

from .conftest import tiny_run_config
from .test_families import _make


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, shared_tiny_task):
    root = tmp_path_factory.mktemp("export")
    return finetune(
        tiny_run_config(_make(root, "bert"), shared_tiny_task, root / "teacher", max_steps=6)
    )


@pytest.mark.parametrize(
    "compression",
    [
        None,
        {
            "method": "heads",
            "heads": 3,
            "ffn": 0.25,
            "importance_batches": 1,
        },  # uneven heads per layer
        {"method": "truncate", "layers": 1},
        {"method": "magnitude", "sparsity": 0.5},
    ],
)
def test_onnx_matches_pytorch(teacher, shared_tiny_task, tmp_path, compression):
    model = (
        teacher
        if compression is None
        else compress(
            tiny_run_config(
                teacher, shared_tiny_task, tmp_path / "m", max_steps=2, compression=compression
            )
        )
    )
    rec = export_onnx(model, tmp_path / "onnx", int8=True, n=64)
    assert rec["fp32"]["max_abs_logit_diff"] < 1e-4
    assert (
        rec["int8"]["prediction_agreement"] > 0.8
    )  # int8 moves logits a little, rarely the argmax
    assert (
        json.loads((tmp_path / "onnx" / "export.json").read_text())["fp32"]["file"] == "model.onnx"
    )
    # the size on disk counts the weights the exporter writes beside the graph (model.onnx.data)
    assert rec["fp32"]["bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "onnx").glob("model.onnx*")
    )


def test_onnx_of_an_int8_artifact_and_of_mpnet(
    tmp_path_factory, shared_tiny_task, teacher, tmp_path
):
    q = compress(
        tiny_run_config(
            teacher, shared_tiny_task, tmp_path / "q", compression={"method": "quantize"}
        )
    )
    rec = export_onnx(q, tmp_path / "q-onnx", int8=True, n=32)
    assert rec["fp32"]["max_abs_logit_diff"] < 1e-4  # against its dequantized float weights
    mp = tmp_path_factory.mktemp("mp")
    mpnet = finetune(tiny_run_config(_make(mp, "mpnet"), shared_tiny_task, mp / "t", max_steps=2))
    pruned = compress(
        tiny_run_config(
            mpnet,
            shared_tiny_task,
            mp / "h",
            max_steps=2,
            compression={"method": "heads", "heads": 3, "importance_batches": 1},
        )
    )
    assert export_onnx(pruned, tmp_path / "mp-onnx", n=32)["fp32"]["max_abs_logit_diff"] < 1e-4
