"""How the per-sample uncertainty sources of one study folder agree: Spearman rank correlation of v
between every pair, and each source's agreement with the hypothesis-only bias model's easy/hard
split of the training examples (the paper's 82.8 %), with the chance level.

    python benchmarks/uncertainty_sources.py runs/mnli-uncertainty
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from robust_compress.analysis.easy_hard import agreement, bias_probs, easy_mask
from robust_compress.config import RunConfig
from robust_compress.data.load import load_train_split
from robust_compress.io import read_json, read_yaml
from robust_compress.train.logit_cache import LogitCache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study", type=Path)
    args = ap.parse_args()
    sources = {}
    for p in sorted(args.study.glob("artifacts/uncertainty-*.parquet")):
        meta = read_json(p.with_suffix(".json"))
        sources[meta["source"]] = pd.read_parquet(p).set_index("id")["v"]
    bias = next(args.study.glob("artifacts/bias-*"))
    cfg = RunConfig.model_validate(read_yaml(bias / "run_config.yaml") | {"input_field": None})
    examples = load_train_split(cfg.data_args()).examples
    ids = [e["id"] for e in examples]
    probs = bias_probs(
        str(bias),
        examples,
        LogitCache(cfg.cache_dir, cfg.eval_batch_size, cfg.bf16),
        cfg.max_length,
    )
    easy = easy_mask(probs, np.array([e["label"] for e in examples]))
    p = easy.mean()
    print(
        f"{len(ids)} training examples; bias-model easy: {100 * p:.1f}% (chance agreement "
        f"{100 * (p * p + (1 - p) ** 2):.1f}%)"
    )
    for name, v in sources.items():
        print(
            f"{name:10s} agreement with the hypothesis-only split: "
            f"{100 * agreement(v.loc[ids].to_numpy(), easy):.1f}%"
        )
    for a, b in itertools.combinations(sources, 2):
        rho = np.corrcoef(sources[a].loc[ids].rank(), sources[b].loc[ids].rank())[0, 1]
        print(f"Spearman rank correlation of v, {a} vs {b}: {rho:.3f}")


if __name__ == "__main__":
    main()
