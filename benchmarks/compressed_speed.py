"""Inference speed and size of compressed models vs their dense parent, measured side by side.

    python benchmarks/compressed_speed.py [--teacher PATH] [--n 512] [--processes 3] [--rounds 5]

Rows: the dense teacher; structured pruning (heads + FFN neurons) to 67 / 50 / 33 % of the encoder
FLOPs; 20 % of its heads physically removed (importance-ranked); the teacher
truncated to 3 layers; the pretrained 3-layer student; int8 dynamic quantization; 40 % and 70 %
magnitude sparsity (one-shot, for the non-zero count: dense kernels run the zeros anyway).
Timing: the models take turns in every round (`models.infer.round_robin_seconds`, the study's speed
stage's harness) in several fresh processes; every round is kept and the record
docs/results/benchmarks/compressed-speed.json carries them (`common.measure`). Speed depends on
shapes, not on weights, so the default teacher is the pretrained encoder with a new head.
"""

from __future__ import annotations

import argparse
import copy

from common import (
    LABELS,
    MODELS,
    fmt,
    harness_args,
    measure,
    mnli,
    model_and_dev,
    structured_one_shot,
)

from robust_compress.compress.magnitude import oneshot_prune
from robust_compress.compress.structured import head_importance, select_heads, train_batches
from robust_compress.data.batching import EncodedSplit
from robust_compress.models.families import blocks, encoder_flops, family_of, n_heads
from robust_compress.models.infer import pytorch_runs, round_robin_seconds
from robust_compress.models.load import count_parameters, load_model, load_tokenizer
from robust_compress.models.pruned import keep_layers, prune_heads
from robust_compress.models.quantized import quantize


def timed(args) -> dict:
    teacher, tok, data = model_and_dev(args.teacher, args.n)
    train = EncodedSplit(mnli("train", 256).examples, tok, 128)
    heads = copy.deepcopy(teacher)
    fam = family_of(heads)
    total_heads = sum(n_heads(b, fam) for b in blocks(heads))
    k = round(0.2 * total_heads)
    prune_heads(heads, select_heads(head_importance(heads, train_batches(train, 32, 8, 0)), k))
    student = str(MODELS / "paraphrase-MiniLM-L3-v2")
    student_data = EncodedSplit(mnli("dev_matched", args.n).examples, load_tokenizer(student), 128)
    structured = {
        f"structured to {f * 100:.0f} % of FLOPs": (structured_one_shot(teacher, train, f), data)
        for f in (0.67, 0.5, 0.33)
    }
    rows = {
        "dense teacher": (teacher, data),
        **structured,
        f"heads −20 % ({k} of {total_heads})": (heads, data),
        "truncated to 3 layers": (keep_layers(copy.deepcopy(teacher), [0, 1, 2]), data),
        "paraphrase-MiniLM-L3-v2 student": (load_model(student, LABELS).eval(), student_data),
        "int8 (torchao)": (quantize(teacher), data),
        "magnitude 40 % (dense kernels)": (oneshot_prune(copy.deepcopy(teacher), 0.4), data),
        "magnitude 70 % (dense kernels)": (oneshot_prune(copy.deepcopy(teacher), 0.7), data),
    }
    runs = pytorch_runs(rows, batch_size=64)
    seconds = round_robin_seconds({k: r for k, (r, _) in runs.items()}, args.rounds)
    base_flops = encoder_flops(teacher)["flops_dense"]
    info = {}
    for name, (m, _) in rows.items():
        quant = name.startswith("int8")
        total, nonzero = count_parameters(teacher if quant else m)
        flops = encoder_flops(teacher if quant else m)["flops_dense"]
        info[name] = {"flops_reduction": base_flops / flops, "params": total, "nonzero": nonzero}
    return {
        "groups": {"fp32": {"seconds": seconds, "examples": {k: n for k, (_, n) in runs.items()}}},
        "info": info,
    }


def table(rec: dict) -> tuple[list[str], list[list[str]]]:
    header = ["model", "ex/s", "speed-up", "FLOPs ÷", "speed-up ÷ FLOPs", "params", "non-zero"]
    rows = []
    for name, est in rec["estimates"]["fp32"].items():
        i = rec["info"][name]
        dense_kernels = name.startswith(("int8", "magnitude"))
        rows.append(
            [
                name,
                fmt(est["rate"], 1, ""),
                fmt(est["speedup"]),
                f"{i['flops_reduction']:.2f}×",
                "–" if dense_kernels else f"{est['speedup'][0] / i['flops_reduction']:.2f}",
                f"{i['params'] / 1e6:.1f}M",
                f"{i['nonzero'] / 1e6:.1f}M",
            ]
        )
    return header, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default=str(MODELS / "all-MiniLM-L6-v2"))
    ap.add_argument("--n", type=int, default=512)
    harness_args(ap, "compressed-speed")
    args = ap.parse_args()
    measure(
        "compressed-speed",
        args,
        timed,
        table,
        f"{args.n} MNLI dev-matched examples, batch 64, length-sorted dynamic padding, fp32; "
        "the structured rows are one-shot (no fine-tuning) to the same FLOP targets",
    )


if __name__ == "__main__":
    main()
