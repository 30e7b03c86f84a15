"""Wall time of RMC (uncertainty step included) over a vanilla run of the same compression,
measured side by side on one small configuration, for four uncertainty sources:

  dynamics   the teacher's own training dynamics (recorded while it was fine-tuned: free)
  snapshots  one iterative pruning run to 0.85 saving 5 snapshots
  oneshot    the teacher one-shot pruned to 5 sparsities, inference only
  n-runs     5 separately pruned models (paper-faithful)

It also prints how the signals agree (Spearman rank correlation of v). The teacher trains 2 epochs
(dynamics need each example seen twice).

    python benchmarks/rmc_overhead.py [--n 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DATA, MODELS

from robust_compress.config import RunConfig
from robust_compress.stages import compress, compute_uncertainty, finetune

SPARSITIES = [0.2, 0.4, 0.6, 0.7, 0.85]


def timed(fn, *a, **k) -> float:
    t0 = time.perf_counter()
    fn(*a, **k)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rmc-overhead-"))
    base = {
        "task": "mnli",
        "data_dir": str(DATA),
        "train_limit": args.n,
        "eval_limit": 300,
        "eval_sets": ["dev_matched"],
        "bf16": True,
        "max_length": 128,
        "lr": 1e-4,
        "batch_size": 32,
        "cache_dir": str(tmp / "cache"),
        "checkpoint_every": 10**6,
    }
    teacher = tmp / "teacher"
    finetune(
        RunConfig(
            model=str(MODELS / "paraphrase-MiniLM-L3-v2"),
            output_dir=str(teacher),
            epochs=2,
            record_dynamics=True,
            **base,
        )
    )

    def cfg(name, loss_name="ce", loss_extra=None, cold=False, **comp):
        """cold: a cache of its own, so the run pays for its teacher-logit pass as a single run
        does."""
        inputs = {"teacher": str(teacher)} | ({"uncertainty": loss_extra} if loss_extra else {})
        run_base = base | ({"cache_dir": str(tmp / f"cache-{name}")} if cold else {})
        return RunConfig(
            model=str(teacher),
            output_dir=str(tmp / name),
            loss={"name": loss_name},
            inputs=inputs,
            compression={"method": "magnitude", **comp},
            **run_base,
        )

    t_vanilla = timed(compress, cfg("vanilla", sparsity=0.4))
    t_snap_run = timed(compress, cfg("snap", sparsity=0.85, snapshots=SPARSITIES))
    u_snap = tmp / "u_snap.parquet"
    t_snap_u = timed(
        compute_uncertainty, cfg("x", sparsity=0.4), u_snap, snapshots=str(tmp / "snap-snapshots")
    )
    u_one = tmp / "u_one.parquet"
    t_one_u = timed(
        compute_uncertainty,
        cfg("x", sparsity=0.4),
        u_one,
        oneshot=str(teacher),
        sparsities=SPARSITIES,
    )
    t_runs = sum(timed(compress, cfg(f"run{s}", sparsity=s)) for s in SPARSITIES)
    u_runs = tmp / "u_runs.parquet"
    t_runs_u = timed(
        compute_uncertainty,
        cfg("x", sparsity=0.4),
        u_runs,
        models=[str(tmp / f"run{s}") for s in SPARSITIES],
    )
    u_dyn = tmp / "u_dyn.parquet"
    t_dyn_u = timed(compute_uncertainty, cfg("x", sparsity=0.4), u_dyn, dynamics=str(teacher))
    t_distil = timed(compress, cfg("distil", "distil", cold=True, sparsity=0.4))
    t_rmc = timed(compress, cfg("rmc", "rmc", str(u_snap), cold=True, sparsity=0.4))
    t_rmc_dyn = timed(compress, cfg("rmc-dyn", "rmc", str(u_dyn), cold=True, sparsity=0.4))

    print(
        f"{args.n} MNLI train examples, paraphrase-MiniLM-L3-v2 teacher, magnitude 0.4, bf16, "
        "1 epoch"
    )
    print(f"{'':44s} {'seconds':>8s} {'ratio to vanilla':>17s}")
    print(f"{'vanilla (ce) run':44s} {t_vanilla:8.1f} {1.0:16.2f}x")
    print(
        f"{'Distil run (teacher logits, no uncertainty)':44s} {t_distil:8.1f} "
        f"{t_distil / t_vanilla:16.2f}x"
    )
    for name, t in (
        ("RMC, training-dynamics uncertainty (free)", t_dyn_u + t_rmc_dyn),
        ("RMC, snapshots uncertainty", t_snap_run + t_snap_u + t_rmc),
        ("RMC, one-shot uncertainty (cheap)", t_one_u + t_rmc),
        ("RMC, 5 separate runs (paper-faithful)", t_runs + t_runs_u + t_rmc),
    ):
        print(f"{name:44s} {t:8.1f} {t / t_vanilla:16.2f}x")
    print(f"{'  of which the RMC run itself':44s} {t_rmc:8.1f} {t_rmc / t_vanilla:16.2f}x")
    print(
        "each RMC and Distil run scores the training set with the teacher itself (a cache of its "
        "own); in a study that pass and the uncertainty step are shared by every run (losses, "
        "seeds, sparsities)"
    )

    import pandas as pd

    v = {
        k: pd.read_parquet(p)["v"].rank().to_numpy()
        for k, p in (
            ("dynamics", u_dyn),
            ("snapshots", u_snap),
            ("oneshot", u_one),
            ("n-runs", u_runs),
        )
    }
    for a, b in (
        ("dynamics", "n-runs"),
        ("dynamics", "snapshots"),
        ("snapshots", "n-runs"),
        ("oneshot", "n-runs"),
        ("oneshot", "snapshots"),
    ):
        print(f"Spearman rank correlation of v, {a} vs {b}: {np.corrcoef(v[a], v[b])[0, 1]:.3f}")


if __name__ == "__main__":
    main()
