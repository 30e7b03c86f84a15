"""Inference speed and size of compressed models vs their dense parent, measured side by side.

    python benchmarks/compressed_speed.py [--teacher runs/teacher-minilm-l6] [--n 512]

Rows: the dense teacher; 20 % of its heads physically removed (importance-ranked); the teacher
truncated to 3 layers; the pretrained 3-layer student; int8 dynamic quantization; 40 % and 70 %
magnitude sparsity (one-shot, for the non-zero count: dense kernels run the zeros anyway).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import MODELS, mnli

from robust_compress.batching import Collator, EncodedSplit, sorted_batches
from robust_compress.compress import quantize_dynamic, state_bytes, train_batches
from robust_compress.heads import head_importance, prune_heads, select_heads
from robust_compress.magnitude import prunable_linears
from robust_compress.models import (
    count_parameters,
    load_model,
    load_tokenizer,
    set_threads,
    truncate_layers,
)

LABELS = ["entailment", "neutral", "contradiction"]


@torch.no_grad()
def speed(model, data: EncodedSplit, repeats: int = 2) -> float:
    model.eval()
    collate = Collator(0)
    batches = [collate([data[i] for i in rows]) for rows in sorted_batches(data.lengths, 64)]
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            model(**{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
        best = max(best, len(data) / (time.perf_counter() - t0))
    return best


def oneshot_magnitude(model, s: float):
    m = copy.deepcopy(model)
    weights = [lin.weight for _, lin in prunable_linears(m)]
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    thresh = flat.kthvalue(int(s * flat.numel())).values
    with torch.no_grad():
        for w in weights:
            w.mul_((w.abs() > thresh).float())
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default=str(MODELS / "all-MiniLM-L6-v2"))
    ap.add_argument("--n", type=int, default=512)
    args = ap.parse_args()
    set_threads()
    teacher = load_model(args.teacher, LABELS).eval()
    tok = load_tokenizer(args.teacher)
    data = EncodedSplit(mnli("dev_matched", args.n).examples, tok, 128)
    train = EncodedSplit(mnli("train", 256).examples, tok, 128)

    heads = copy.deepcopy(teacher)
    n_heads = sum(layer.attention.self.num_attention_heads for layer in heads.bert.encoder.layer)
    prune_heads(heads, select_heads(head_importance(heads, train_batches(train, 32, 8, 0)), round(0.2 * n_heads)))
    rows = {
        "dense teacher": teacher,
        f"heads -20% ({round(0.2 * n_heads)} of {n_heads})": heads,
        "truncated to 3 layers": truncate_layers(copy.deepcopy(teacher), 3),
        "paraphrase-MiniLM-L3-v2 student": load_model(str(MODELS / "paraphrase-MiniLM-L3-v2"), LABELS).eval(),
        "int8 dynamic quantization": quantize_dynamic(teacher),
        "magnitude 40% (dense kernels)": oneshot_magnitude(teacher, 0.4),
        "magnitude 70% (dense kernels)": oneshot_magnitude(teacher, 0.7),
    }
    print(f"{args.n} MNLI dev-matched examples, batch 64, length-sorted dynamic padding, "
          f"{torch.get_num_threads()} threads, fp32; best of 2 passes")
    base = speed(teacher, data)
    base_total, _ = count_parameters(teacher)
    print(f"{'model':40s} {'ex/s':>8s} {'speed-up':>9s} {'params':>11s} {'non-zero':>11s} {'MB':>7s}")
    for name, m in rows.items():
        r = base if m is teacher else speed(m, data)
        total, nonzero = count_parameters(m) if name != "int8 dynamic quantization" else (base_total, base_total)
        print(f"{name:40s} {r:8.1f} {r / base:8.2f}x {total:11,d} {nonzero:11,d} {state_bytes(m) / 2**20:7.1f}")


if __name__ == "__main__":
    main()
