"""Evaluation examples/s: length-sorted batches padded per batch vs fixed padding to max_length.

python benchmarks/eval_padding.py [--model all-MiniLM-L6-v2] [--n 1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import MODELS, mnli, row

from robust_compress.data.batching import EncodedSplit
from robust_compress.models.infer import predict_logits
from robust_compress.models.load import load_model, load_tokenizer, set_threads


@torch.no_grad()
def fixed_padding(
    model, tok, examples, max_length: int, batch_size: int
) -> tuple[np.ndarray, float]:
    """Baseline: every example padded to max_length (tokenized beforehand, like the dynamic
    path)."""
    model.eval()
    enc = tok(
        [e["text_a"] for e in examples],
        [e["text_b"] for e in examples],
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    out = []
    t0 = time.perf_counter()
    for i in range(0, len(examples), batch_size):
        out.append(model(**{k: v[i : i + batch_size] for k, v in enc.items()}).logits.numpy())
    return np.concatenate(out), len(examples) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    set_threads()
    path = str(MODELS / args.model)
    labels = ["entailment", "neutral", "contradiction"]
    model, tok = load_model(path, labels), load_tokenizer(path)
    examples = mnli("dev_matched", args.n).examples
    data = EncodedSplit(examples, tok, 128)
    print(
        f"model {args.model}, {args.n} MNLI dev-matched examples, batch {args.batch}, "
        "max_length 128, "
        f"mean length {np.mean(data.lengths):.1f} tokens"
    )
    b = args.batch
    predict_logits(model, EncodedSplit(examples[:b], tok, 128), b)  # untimed warm-up
    fixed, r_fixed = fixed_padding(model, tok, examples, 128, b)
    dyn, r_dyn = predict_logits(model, data, b)
    _, r_bf16 = predict_logits(model, data, b, bf16=True)
    row("fixed padding to 128 fp32 (examples/s)", r_fixed)
    row("length-sorted dynamic padding fp32 (examples/s)", r_dyn)
    row("length-sorted dynamic padding bf16 (examples/s)", r_bf16)
    row("ratio dynamic/fixed fp32", r_dyn / r_fixed, "x")
    row("max |logit difference| dynamic vs fixed", float(np.abs(dyn - fixed).max()))


if __name__ == "__main__":
    main()
