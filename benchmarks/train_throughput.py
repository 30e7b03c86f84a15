"""Training examples/s: this project's loop vs the Hugging Face Trainer, same model, data,
batch size, max length and length grouping, measured back to back in one process.

    python benchmarks/train_throughput.py [--model all-MiniLM-L6-v2] [--n 640]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import MODELS, mnli, row
from transformers import Trainer, TrainingArguments

from robust_compress.config import RunConfig
from robust_compress.data.batching import Collator, EncodedSplit
from robust_compress.models.load import load_model, load_tokenizer, set_threads
from robust_compress.train.loop import train
from robust_compress.train.losses import make_loss


def ours(path: str, data: EncodedSplit, bf16: bool, labels) -> float:
    model = load_model(path, labels)
    cfg = RunConfig(model=path, epochs=1, batch_size=32, bf16=bf16, checkpoint_every=10**9, lr=5e-5)
    with tempfile.TemporaryDirectory() as d:
        return train(model, data, cfg, make_loss(cfg.loss), d).examples_per_s


class _DS(torch.utils.data.Dataset):
    def __init__(self, enc: EncodedSplit):
        self.feats = [{k: v for k, v in f.items() if k != "row"} for f in enc.features]

    def __len__(self):
        return len(self.feats)

    def __getitem__(self, i):
        return self.feats[i]


def hf_trainer(path: str, data: EncodedSplit, bf16: bool, labels) -> float:
    model = load_model(path, labels)
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(
            output_dir=d,
            per_device_train_batch_size=32,
            num_train_epochs=1,
            learning_rate=5e-5,
            train_sampling_strategy="group_by_length",
            bf16=bf16,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        tr = Trainer(model=model, args=args, train_dataset=_DS(data), data_collator=Collator(0))
        t0 = time.perf_counter()
        tr.train()
        return len(data) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--n", type=int, default=640)
    args = ap.parse_args()
    set_threads()
    path = str(MODELS / args.model)
    split = mnli("train", args.n)
    labels = ["entailment", "neutral", "contradiction"]
    data = EncodedSplit(split.examples, load_tokenizer(path), 128)
    print(
        f"model {args.model}, {args.n} MNLI train examples, batch 32, max_length 128, "
        f"{torch.get_num_threads()} threads"
    )
    warm = EncodedSplit(split.examples[:64], load_tokenizer(path), 128)
    ours(
        path, warm, False, labels
    )  # untimed: thread pools and allocator warm up before either is measured
    hf = hf_trainer(path, data, False, labels)
    o = ours(path, data, False, labels)
    ob = ours(path, data, True, labels)
    row("HF Trainer fp32 (examples/s)", hf)
    row("robust-compress fp32 (examples/s)", o)
    row("robust-compress bf16 autocast (examples/s)", ob)
    row("ratio ours/Trainer fp32", o / hf, "x")
    row("ratio ours bf16 / ours fp32", ob / o, "x")


if __name__ == "__main__":
    main()
