"""The BERT-base-sized MPNet teacher against the MiniLM teacher, side by side in one process:
training examples/s (bf16 and fp32, AdamW, length-grouped batches of 32) and inference examples/s
(fp32 and bf16), and the head-pruned (28 of 144) and 6-layer MPNet's inference speed-up against
their FLOP reduction.

    python benchmarks/teacher_throughput.py [--mpnet PATH] [--processes 2] [--rounds 3]

Training: every round trains each teacher in turn on the same pairs (bf16, then fp32), from its
pretrained weights; inference: every model takes turns in every round. Several fresh processes
(`common.measure`); docs/results/benchmarks/teacher-throughput.json keeps every round's seconds.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

from common import LABELS, MODELS, fmt, harness_args, measure, mnli

from robust_compress.compress.structured import head_importance, select_heads, train_batches
from robust_compress.data.batching import EncodedSplit
from robust_compress.models.families import encoder_flops
from robust_compress.models.infer import pytorch_runs, round_robin_seconds
from robust_compress.models.load import load_model, load_tokenizer, set_threads
from robust_compress.models.pruned import keep_layers, prune_heads
from robust_compress.train.loop import TrainArgs, train
from robust_compress.train.losses import REGISTRY, make_loss

MINILM, MPNET = "MiniLM-L6 (22.7M)", "MPNet-base (109.5M)"


def train_seconds(path: str, examples, bf16: bool) -> float:
    """Seconds of clean training (no checkpoint, no evaluation) over `examples`."""
    model = load_model(path, LABELS)
    data = EncodedSplit(examples, load_tokenizer(path), 128)
    args = TrainArgs(batch_size=32, max_steps=len(data) // 32, bf16=bf16, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as d:
        rate = train(
            model, data, args, make_loss(REGISTRY["ce"].Settings()), Path(d)
        ).examples_per_s
    return (len(data) // 32) * 32 / rate


def worker(args) -> dict:
    set_threads()
    teachers = {MINILM: str(MODELS / "all-MiniLM-L6-v2"), MPNET: args.mpnet}
    train_ex = mnli("train", args.n_train).examples
    eval_ex = mnli("dev_matched", args.n_eval).examples
    n_train = (len(train_ex) // 32) * 32
    groups = {}
    for bf16 in (True, False):
        secs: dict[str, list[float]] = {k: [] for k in (MPNET, MINILM)}
        train_seconds(teachers[MINILM], train_ex[:64], bf16)  # warm-up
        for _ in range(args.rounds):
            for k in secs:
                secs[k].append(train_seconds(teachers[k], train_ex, bf16))
        groups[f"train {'bf16' if bf16 else 'fp32'}"] = {
            "seconds": secs,
            "examples": dict.fromkeys(secs, n_train),
        }
    models = {k: load_model(p, LABELS).eval() for k, p in teachers.items()}
    mp = models[MPNET]
    data = {k: EncodedSplit(eval_ex, load_tokenizer(p), 128) for k, p in teachers.items()}
    imp = head_importance(
        mp, train_batches(EncodedSplit(train_ex, load_tokenizer(args.mpnet), 128), 32, 4, 0)
    )
    entries = {MPNET: (mp, data[MPNET]), MINILM: (models[MINILM], data[MINILM])} | {
        "MPNet heads −28/144": (prune_heads(copy.deepcopy(mp), select_heads(imp, 28)), data[MPNET]),
        "MPNet 6 layers": (keep_layers(copy.deepcopy(mp), list(range(6))), data[MPNET]),
    }
    for bf16 in (False, True):
        runs = pytorch_runs(entries, batch_size=64, bf16=bf16)
        groups[f"infer {'bf16' if bf16 else 'fp32'}"] = {
            "seconds": round_robin_seconds({k: r for k, (r, _) in runs.items()}, args.rounds),
            "examples": {k: n for k, (_, n) in runs.items()},
        }
    base = encoder_flops(mp)["flops_dense"]
    info = {
        k: {"flops_reduction": base / encoder_flops(m)["flops_dense"]}
        for k, (m, _) in entries.items()
    }
    return {"groups": groups, "info": info}


def table(rec: dict) -> tuple[list[str], list[list[str]]]:
    """Rows: training and inference rates; cells: ex/s and the rate against MPNet-base's."""
    est, info = rec["estimates"], rec["info"]
    cols = [MINILM, MPNET, "MPNet heads −28/144", "MPNet 6 layers"]
    rows = []
    for group in ("train bf16", "train fp32", "infer fp32", "infer bf16"):
        cells = [f"{group}, ex/s (× MPNet-base)"]
        for c in cols:
            e = est[group].get(c)
            if e is None:
                cells.append("")
                continue
            rate = fmt(e["rate"], 1, "")
            ratio = "" if c == MPNET else f" ({fmt(e['speedup'])}"
            if ratio and group.startswith("infer"):
                ratio += f"; FLOPs ÷ {info[c]['flops_reduction']:.2f}"
            cells.append(rate + (ratio + ")" if ratio else ""))
        rows.append(cells)
    return ["", *cols], rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--mpnet", default=os.path.expanduser("~/.cache/shared-models/all-mpnet-base-v2")
    )
    ap.add_argument("--n-train", type=int, default=192)
    ap.add_argument("--n-eval", type=int, default=256)
    harness_args(ap, "teacher-throughput", processes=2, rounds=3)
    args = ap.parse_args()
    measure(
        "teacher-throughput",
        args,
        worker,
        table,
        f"training: {args.n_train} MNLI pairs, batch 32, AdamW, length-grouped, from the "
        f"pretrained weights; inference: {args.n_eval} dev-matched pairs, batch 64",
    )


if __name__ == "__main__":
    main()
