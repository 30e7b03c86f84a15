import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from robust_compress.config import RunConfig
from robust_compress.data.batching import Collator, EncodedSplit, LengthGroupedSampler
from robust_compress.models.load import load_model
from robust_compress.train.loop import Hook, train
from robust_compress.train.losses import make_loss

from .conftest import LABELS, ROOT, make_examples


def test_sampler_is_seeded_permutation_grouped_by_length():
    lengths = [(i * 37) % 50 + 1 for i in range(400)]
    s = LengthGroupedSampler(lengths, batch_size=8, seed=1, group=5)
    first = list(s)
    assert sorted(first) == list(range(400))
    assert list(s) == first  # same epoch, same order
    s.set_epoch(1)
    assert list(s) != first
    # within a batch, lengths are close: mean in-batch spread far below the global spread
    spreads = [
        max(lengths[i] for i in first[b : b + 8]) - min(lengths[i] for i in first[b : b + 8])
        for b in range(0, 400, 8)
    ]
    assert sum(spreads) / len(spreads) < 10


def test_collator_pads_to_longest_in_batch(tiny_tokenizer):
    data = EncodedSplit(make_examples(4), tiny_tokenizer, 64)
    batch = Collator(0)([data[0], data[1]])
    width = max(data.lengths[0], data.lengths[1])
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"].sum().item() == data.lengths[0] + data.lengths[1]


def _cfg(tiny_dir, **kw):
    base = {
        "model": str(tiny_dir),
        "batch_size": 16,
        "lr": 2e-3,
        "epochs": 2,
        "seed": 0,
        "checkpoint_every": 3,
        "warmup_ratio": 0.1,
    }
    return RunConfig(**(base | kw))


def test_tiny_model_learns(tiny_dir, tiny_tokenizer, tmp_path):
    cfg = _cfg(tiny_dir, epochs=4)
    model = load_model(str(tiny_dir), LABELS)
    data = EncodedSplit(make_examples(320), tiny_tokenizer, 64)
    result = train(model, data, cfg, make_loss(cfg.loss), tmp_path / "w")
    assert result.losses[-1] < result.losses[0] - 0.3


class Crash(Hook):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, model, step):
        if step == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_resumed_run_equals_uninterrupted(tiny_dir, tiny_tokenizer, tmp_path):
    data = EncodedSplit(make_examples(160), tiny_tokenizer, 64)
    cfg = _cfg(tiny_dir)  # 10 batches/epoch, 20 steps, checkpoints every 3 (dropout on)
    a = load_model(str(tiny_dir), LABELS)
    train(a, data, cfg, make_loss(cfg.loss), tmp_path / "a")

    b = load_model(str(tiny_dir), LABELS)
    with pytest.raises(KeyboardInterrupt):
        train(b, data, cfg, make_loss(cfg.loss), tmp_path / "b", hooks=[Crash(14)])
    assert (tmp_path / "b" / "checkpoint" / "loop_state.json").is_file()
    c = load_model(str(tiny_dir), LABELS)  # a fresh process would start from the base model
    result = train(c, data, cfg, make_loss(cfg.loss), tmp_path / "b")
    assert result.steps == 20
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vc, rtol=0, atol=0, msg=k)


def test_two_processes_match_one(tiny_dir, tmp_path):
    """gloo, 2 CPU processes, global batch split in halves: same weights as 1 process (dropout
    off)."""
    outs = {}
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for n in (1, 2):
        out = tmp_path / f"w{n}.safetensors"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            str(ROOT / "tests" / "_dist_train.py"),
            str(tiny_dir),
            str(out),
        ]
        r = subprocess.run(
            cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"world {n}" in r.stdout
        outs[n] = load_file(str(out))
    worst = max((outs[1][k] - outs[2][k]).abs().max().item() for k in outs[1])
    assert worst < 1e-5, worst
