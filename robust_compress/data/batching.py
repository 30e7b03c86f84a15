"""Tokenization, dynamic padding and length-grouped batches: the biggest CPU speed lever here.

Padding every batch to its own longest example, and putting examples of similar length in
the same batch, cuts the work of a BERT forward pass roughly in proportion to the padding
removed (see benchmarks/eval_padding.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class EncodedSplit(Dataset):
    """Tokenized examples; `row` indexes the split, so predictions map back to example ids."""

    def __init__(
        self,
        examples: Sequence[dict[str, Any]],
        tokenizer,
        max_length: int,
        field: str | None = None,
        extras: dict[str, Sequence[Any]] | None = None,
    ):
        texts_a = [e["text_a"] for e in examples]
        texts_b = [e["text_b"] for e in examples]
        if field == "text_a":  # partial-input (bias-only) models see one side only
            enc = tokenizer(texts_a, truncation=True, max_length=max_length)
        elif field == "text_b":
            enc = tokenizer(texts_b, truncation=True, max_length=max_length)
        else:
            enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length)
        self.features = [
            {k: enc[k][i] for k in enc} | {"labels": int(examples[i]["label"]), "row": i}
            for i in range(len(examples))
        ]
        for name, values in (
            extras or {}
        ).items():  # per-example tensors: teacher probs, weights, ...
            for feat, v in zip(self.features, values, strict=True):
                feat[name] = v
        self.lengths = [len(f["input_ids"]) for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]

    def subset(self, rows) -> EncodedSplit:
        """The same tokenized examples, only these rows (renumbered from 0)."""
        out = EncodedSplit.__new__(EncodedSplit)
        out.features = [self.features[i] | {"row": j} for j, i in enumerate(rows)]
        out.lengths = [len(f["input_ids"]) for f in out.features]
        return out


class Collator:
    """Pad token fields to the longest in the batch; stack everything else."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in feats)
        batch: dict[str, torch.Tensor] = {}
        for key in feats[0]:
            values = [f[key] for f in feats]
            if key in ("input_ids", "attention_mask", "token_type_ids"):
                pad = self.pad_token_id if key == "input_ids" else 0
                batch[key] = torch.tensor(
                    [v + [pad] * (width - len(v)) for v in values], dtype=torch.long
                )
            elif isinstance(values[0], torch.Tensor):
                batch[key] = torch.stack(values)
            else:
                batch[key] = torch.tensor(values)
        return batch


class LengthGroupedSampler(Sampler[int]):
    """Shuffle, then sort by length inside mega-batches of `group` batches, then shuffle batches.

    Same idea as transformers' LengthGroupedSampler, but seeded per epoch with a torch
    generator we own, so a resumed run sees exactly the order an uninterrupted run saw.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, group: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = self.batch_size * self.group
        batches = []
        for start in range(0, len(perm), mega):
            chunk = sorted(perm[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [
                chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)
            ]
        order = torch.randperm(len(batches), generator=g).tolist()
        for b in order:
            yield from batches[b]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Inference order: longest first, so batches are tight and the peak memory shows up at once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int, world: int = 1) -> int:
    return max(1, math.ceil(n_examples / (batch_size * world)) // grad_accum)
