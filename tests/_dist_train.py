"""Run by test_train.py under torchrun: train a tiny model and save its weights."""

import sys

from safetensors.torch import save_file

from robust_compress.config import RunConfig
from robust_compress.data.batching import EncodedSplit
from robust_compress.models.load import load_model, load_tokenizer
from robust_compress.train.loop import make_accelerator, train
from robust_compress.train.losses import make_loss
from tests.conftest import LABELS, make_examples

model_dir, out = sys.argv[1], sys.argv[2]
cfg = RunConfig(
    model=model_dir, batch_size=16, max_steps=6, lr=1e-3, dropout=0.0, seed=3, checkpoint_every=100
)
model = load_model(model_dir, LABELS, dropout=0.0)
tok = load_tokenizer(model_dir)
acc = make_accelerator(cfg)
train(
    model,
    EncodedSplit(make_examples(96), tok, 64),
    cfg,
    make_loss(cfg.loss),
    f"{out}.work",
    accelerator=acc,
)
if acc.is_main_process:
    m = acc.unwrap_model(model)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, out)
    print("world", acc.num_processes)
