"""Every way this tool serves a model on a CPU, side by side: the teacher and two structured models
(one-shot to 1/2 and 1/3 of the FLOPs) on PyTorch fp32 and bf16, PyTorch int8 (torchao, the
default, and the deprecated torch.ao `quantize_dynamic`) and onnxruntime fp32 and int8. Each row:
examples/s and speed-up over the fp32 teacher (every entry takes turns in every round, several fresh
processes), and its logits against the same model on PyTorch fp32 (max |Δlogit|, same argmax).

    python benchmarks/runtimes.py [--teacher PATH] [--n 256] [--processes 3] [--rounds 5]

Pass a fine-tuned teacher for the agreement columns to mean something (a pretrained encoder's new
head is near-uniform, so int8 flips its argmax easily); speed depends on shapes only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import (
    MODELS,
    fmt,
    group_rates,
    harness_args,
    measure,
    mnli,
    model_and_dev,
    structured_one_shot,
)

from robust_compress.data.batching import Collator, EncodedSplit, sorted_batches
from robust_compress.metrics.timing import speedup
from robust_compress.models.infer import model_inputs, round_robin_seconds
from robust_compress.models.quantized import quantize
from robust_compress.models.runtimes import onnx_inputs, onnx_session, runner

SERVED = {  # row name: (runtime the runner takes, int8 scheme applied first or None)
    "PyTorch fp32": ("pytorch-fp32", None),
    "PyTorch bf16": ("pytorch-bf16", None),
    "PyTorch int8 (torchao)": ("pytorch-fp32", "dynamic-int8"),
    "PyTorch int8 (torch.ao)": ("pytorch-fp32", "dynamic-int8-torch-ao"),
    "onnxruntime fp32": ("onnxruntime-fp32", None),
    "onnxruntime int8": ("onnxruntime-int8", None),
}


@torch.no_grad()
def logits(model, runtime: str, batches: list[dict], workdir: Path) -> np.ndarray:
    """The logits `runtime` serves for every batch, in batch order."""
    if runtime.startswith("onnxruntime"):
        name = "model.int8.onnx" if runtime.endswith("int8") else "model.onnx"
        sess, names = onnx_session(workdir / name), onnx_inputs(model, batches[0])
        out = [sess.run(None, {k: b[k].numpy() for k in names})[0] for b in batches]
        return np.concatenate(out)
    bf16 = runtime == "pytorch-bf16"
    out = []
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(model(**model_inputs(model, b, torch.device("cpu"))).logits.float())
    return torch.cat(out).numpy()


def timed(args) -> dict:
    teacher, tok, data = model_and_dev(args.teacher, args.n)
    train = EncodedSplit(mnli("train", 256).examples, tok, 128)
    models = {"teacher": teacher}
    for f, label in ((0.5, "structured 1/2"), (1 / 3, "structured 1/3")):
        models[label] = structured_one_shot(teacher, train, f)
    collate = Collator(getattr(teacher.config, "pad_token_id", 0) or 0)
    batches = [collate([data[i] for i in rows]) for rows in sorted_batches(data.lengths, 64)]
    runs, info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, m) in enumerate(models.items()):
            ref = logits(m, "pytorch-fp32", batches, Path(tmp))
            for served, (runtime, scheme) in SERVED.items():
                model = quantize(m, scheme) if scheme else m
                key = f"{label} · {served}"
                runs[key] = runner(model, runtime, batches, Path(tmp) / str(i))
                out = logits(model, runtime, batches, Path(tmp) / str(i))
                info[key] = {
                    "max_abs_dlogit": float(np.abs(out - ref).max()),
                    "same_argmax": float((out.argmax(1) == ref.argmax(1)).mean()),
                }
        seconds = round_robin_seconds(runs, args.rounds)
    return {
        "groups": {"all": {"seconds": seconds, "examples": dict.fromkeys(seconds, len(data))}},
        "info": info,
    }


def table(rec: dict) -> tuple[list[str], list[list[str]]]:
    header = ["model", "served on", "ex/s", "speed-up vs fp32 teacher"]
    header += ["vs the teacher on the same runtime", "max abs Δlogit", "same argmax"]
    rows = []
    for key, est in rec["estimates"]["all"].items():
        label, served = key.split(" · ")
        i = rec["info"][key]
        same = speedup(group_rates(rec, "all", key), group_rates(rec, "all", f"teacher · {served}"))
        rows.append(
            [
                label,
                served,
                fmt(est["rate"], 1, ""),
                fmt(est["speedup"]),
                "–" if label == "teacher" else fmt(same.as_list()),
                f"{i['max_abs_dlogit']:.1e}",
                f"{100 * i['same_argmax']:.1f} %",
            ]
        )
    return header, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default=str(MODELS / "all-MiniLM-L6-v2"))
    ap.add_argument("--n", type=int, default=256)
    harness_args(ap, "runtimes")
    args = ap.parse_args()
    measure(
        "runtimes",
        args,
        timed,
        table,
        f"{args.n} MNLI dev-matched examples, batch 64, length-sorted dynamic padding; the "
        "structured models are one-shot (no fine-tuning); agreement against the same model on "
        "PyTorch fp32",
    )


if __name__ == "__main__":
    main()
