"""Inference speed and size of compressed models vs their dense parent, measured side by side.

    python benchmarks/compressed_speed.py [--teacher runs/teacher-minilm-l6] [--n 512]

Rows: the dense teacher; structured pruning (heads + FFN neurons) to 67 / 50 / 33 % of the encoder
FLOPs; 20 % of its heads physically removed (importance-ranked); the teacher
truncated to 3 layers; the pretrained 3-layer student; int8 dynamic quantization; 40 % and 70 %
magnitude sparsity (one-shot, for the non-zero count: dense kernels run the zeros anyway).
Timing is `models.infer.throughput`: the harness the study's speed stage uses (round-robin, best
round).
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import LABELS, MODELS, mnli, model_and_dev

from robust_compress.compress.base import Prepare
from robust_compress.compress.magnitude import oneshot_prune
from robust_compress.compress.structured import head_importance, select_heads, train_batches
from robust_compress.compress.structured_target import StructuredConfig, StructuredPruning
from robust_compress.data.batching import EncodedSplit
from robust_compress.models.families import blocks, encoder_flops, family_of, n_heads
from robust_compress.models.infer import throughput
from robust_compress.models.load import count_parameters, load_model, load_tokenizer
from robust_compress.models.pruned import keep_layers, prune_heads
from robust_compress.models.quantized import quantize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default=str(MODELS / "all-MiniLM-L6-v2"))
    ap.add_argument("--n", type=int, default=512)
    args = ap.parse_args()
    teacher, tok, data = model_and_dev(args.teacher, args.n)
    train = EncodedSplit(mnli("train", 256).examples, tok, 128)

    heads = copy.deepcopy(teacher)
    fam = family_of(heads)
    total_heads = sum(n_heads(b, fam) for b in blocks(heads))
    k = round(0.2 * total_heads)
    prune_heads(heads, select_heads(head_importance(heads, train_batches(train, 32, 8, 0)), k))
    student = str(MODELS / "paraphrase-MiniLM-L3-v2")
    student_data = EncodedSplit(mnli("dev_matched", args.n).examples, load_tokenizer(student), 128)
    structured = {}
    for f in (
        0.67,
        0.5,
        0.33,
    ):  # heads + FFN neurons together, one importance round (no fine-tuning)
        m = copy.deepcopy(teacher)
        hook = StructuredPruning(StructuredConfig(target_flops=f), Prepare(data=train, seed=0), f)
        hook.on_train_begin(m, 1)
        hook.on_step_end(m, 1)
        hook.on_train_end(m)
        structured[f"structured to {f:.0%} of FLOPs"] = (m.eval(), data)
    rows = {
        "dense teacher": (teacher, data),
        **structured,
        f"heads -20% ({k} of {total_heads})": (heads, data),
        "truncated to 3 layers": (keep_layers(copy.deepcopy(teacher), [0, 1, 2]), data),
        "paraphrase-MiniLM-L3-v2 student": (load_model(student, LABELS).eval(), student_data),
        "int8 dynamic quantization": (quantize(teacher), data),
        "magnitude 40% (dense kernels)": (oneshot_prune(copy.deepcopy(teacher), 0.4), data),
        "magnitude 70% (dense kernels)": (oneshot_prune(copy.deepcopy(teacher), 0.7), data),
    }
    print(
        f"{args.n} MNLI dev-matched examples, batch 64, length-sorted dynamic padding, "
        f"{torch.get_num_threads()} threads, fp32; round-robin, best of 3 rounds"
    )
    rates = throughput(rows)
    base = rates["dense teacher"]
    base_flops = encoder_flops(teacher)["flops_dense"]
    print(
        f"{'model':40s} {'ex/s':>8s} {'speed-up':>9s} {'FLOPs ÷':>8s} {'params':>11s} "
        f"{'non-zero':>11s}"
    )
    for name, (m, _) in rows.items():
        quant = name.startswith("int8")
        total, nonzero = count_parameters(teacher if quant else m)
        flops = encoder_flops(teacher if quant else m)["flops_dense"]
        print(
            f"{name:40s} {rates[name]:8.1f} {rates[name] / base:8.2f}x {base_flops / flops:7.2f}x "
            f"{total:11,d} {nonzero:11,d}"
        )


if __name__ == "__main__":
    main()
