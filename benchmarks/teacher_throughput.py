"""The BERT-base-sized MPNet teacher against the MiniLM teacher, side by side in one process:
training examples/s (bf16 and fp32, AdamW, length-grouped batches of 32) and inference examples/s
(fp32 and bf16), and the head-pruned (28 of 144) and 6-layer MPNet's inference speed-up against
their FLOP reduction.

    python benchmarks/teacher_throughput.py [--mpnet ~/.cache/shared-models/all-mpnet-base-v2]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

import torch
from common import LABELS, MODELS, mnli

from robust_compress.compress.structured import head_importance, select_heads, train_batches
from robust_compress.data.batching import EncodedSplit
from robust_compress.models.families import encoder_flops
from robust_compress.models.infer import throughput
from robust_compress.models.load import load_model, load_tokenizer, set_threads
from robust_compress.models.pruned import keep_layers, prune_heads
from robust_compress.train.loop import TrainArgs, train
from robust_compress.train.losses import REGISTRY, make_loss


def train_rate(path: str, examples, bf16: bool) -> float:
    model = load_model(path, LABELS)
    data = EncodedSplit(examples, load_tokenizer(path), 128)
    args = TrainArgs(batch_size=32, max_steps=len(data) // 32, bf16=bf16, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as d:
        return train(
            model, data, args, make_loss(REGISTRY["ce"].Settings()), Path(d)
        ).examples_per_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--mpnet", default=os.path.expanduser("~/.cache/shared-models/all-mpnet-base-v2")
    )
    ap.add_argument("--n-train", type=int, default=192)
    ap.add_argument("--n-eval", type=int, default=256)
    args = ap.parse_args()
    set_threads()
    teachers = {
        "MiniLM-L6 (22.7M)": str(MODELS / "all-MiniLM-L6-v2"),
        "MPNet-base (109.5M)": args.mpnet,
    }
    train_ex, eval_ex = (
        mnli("train", args.n_train).examples,
        mnli("dev_matched", args.n_eval).examples,
    )
    print(
        f"training: {args.n_train} MNLI pairs, batch 32; "
        f"inference: {args.n_eval} dev-matched pairs, batch 64; "
        f"{torch.get_num_threads()} threads"
    )
    for bf16 in (True, False):
        rates = {k: train_rate(p, train_ex, bf16) for k, p in teachers.items()}
        base = rates["MiniLM-L6 (22.7M)"]
        for k, r in rates.items():
            print(
                f"train {'bf16' if bf16 else 'fp32'}  {k:22s} {r:7.1f} ex/s  "
                f"{r / base:5.2f}x MiniLM"
            )
    models = {k: load_model(p, LABELS).eval() for k, p in teachers.items()}
    mp = models["MPNet-base (109.5M)"]
    data = {k: EncodedSplit(eval_ex, load_tokenizer(p), 128) for k, p in teachers.items()}
    imp = head_importance(
        mp, train_batches(EncodedSplit(train_ex, load_tokenizer(args.mpnet), 128), 32, 4, 0)
    )
    heads = prune_heads(copy.deepcopy(mp), select_heads(imp, 28))
    six = keep_layers(copy.deepcopy(mp), list(range(6)))
    entries = {k: (m, data[k]) for k, m in models.items()} | {
        "MPNet heads -28/144": (heads, data["MPNet-base (109.5M)"]),
        "MPNet 6 layers": (six, data["MPNet-base (109.5M)"]),
    }
    for bf16 in (False, True):
        rates = throughput(entries, batch_size=64, repeats=2, bf16=bf16)
        base = rates["MPNet-base (109.5M)"]
        for k, (m, _) in entries.items():
            flops = encoder_flops(mp)["flops_dense"] / encoder_flops(m)["flops_dense"]
            print(
                f"infer {'bf16' if bf16 else 'fp32'}  {k:22s} {rates[k]:7.1f} ex/s  "
                f"{rates[k] / base:5.2f}x MPNet  "
                f"(MPNet FLOPs / its FLOPs {flops:5.2f}x)"
            )


if __name__ == "__main__":
    main()
