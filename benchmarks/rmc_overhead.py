"""Wall time of RMC (uncertainty step included) over a vanilla run of the same compression,
measured side by side on one small configuration, for four uncertainty sources:

  dynamics   the teacher's own training dynamics (recorded while it was fine-tuned: free)
  snapshots  one iterative pruning run to 0.85 saving 5 snapshots
  oneshot    the teacher one-shot pruned to 5 sparsities, inference only
  n-runs     5 separately pruned models (paper-faithful)

It also prints how the signals agree (Spearman rank correlation of v). The teacher trains 2 epochs
(dynamics need each example seen twice).

    python benchmarks/rmc_overhead.py [--n 1000] [--processes 2] [--rounds 3]

Every round runs every recipe in turn, from scratch (fresh outputs, the distillation runs a teacher
cache of their own, as a single run pays), in several fresh processes (`common.measure`); the record
docs/results/benchmarks/rmc-overhead.json keeps every round's seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import DATA, MODELS, fmt, harness_args, measure

from robust_compress.config import RunConfig
from robust_compress.stages import compress, compute_uncertainty, finetune

SPARSITIES = [0.2, 0.4, 0.6, 0.7, 0.85]


def timed(fn, *a, **k) -> float:
    t0 = time.perf_counter()
    fn(*a, **k)
    return time.perf_counter() - t0


RECIPES = [
    "Vanilla (CE)",
    "Distil (teacher logits, no uncertainty)",
    "RMC, training-dynamics uncertainty",
    "RMC, one-shot pruned teacher (5 sparsities, inference only)",
    "RMC, snapshots (one pruning run saving 5 snapshots)",
    "RMC, 5 separately pruned runs (paper)",
]


def worker(args) -> dict[str, Any]:
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

    def one_round(r: str) -> tuple[list[float], dict[str, Path]]:
        """Seconds of every recipe, each from scratch, and the uncertainty files it made."""
        u = {k: tmp / f"u_{k}{r}.parquet" for k in ("snapshots", "oneshot", "n-runs", "dynamics")}
        t_vanilla = timed(compress, cfg(f"vanilla{r}", sparsity=0.4))
        t_distil = timed(compress, cfg(f"distil{r}", "distil", cold=True, sparsity=0.4))
        t_dyn = timed(
            compute_uncertainty, cfg("x", sparsity=0.4), u["dynamics"], dynamics=str(teacher)
        )
        t_dyn += timed(
            compress, cfg(f"rmc-dyn{r}", "rmc", str(u["dynamics"]), cold=True, sparsity=0.4)
        )
        t_one = timed(
            compute_uncertainty,
            cfg("x", sparsity=0.4),
            u["oneshot"],
            oneshot=str(teacher),
            sparsities=SPARSITIES,
        )
        t_one += timed(
            compress, cfg(f"rmc-one{r}", "rmc", str(u["oneshot"]), cold=True, sparsity=0.4)
        )
        t_snap = timed(compress, cfg(f"snap{r}", sparsity=0.85, snapshots=SPARSITIES))
        t_snap += timed(
            compute_uncertainty,
            cfg("x", sparsity=0.4),
            u["snapshots"],
            snapshots=str(tmp / f"snap{r}-snapshots"),
        )
        t_snap += timed(
            compress, cfg(f"rmc-snap{r}", "rmc", str(u["snapshots"]), cold=True, sparsity=0.4)
        )
        t_runs = sum(timed(compress, cfg(f"run{s}{r}", sparsity=s)) for s in SPARSITIES)
        t_runs += timed(
            compute_uncertainty,
            cfg("x", sparsity=0.4),
            u["n-runs"],
            models=[str(tmp / f"run{s}{r}") for s in SPARSITIES],
        )
        t_runs += timed(
            compress, cfg(f"rmc-runs{r}", "rmc", str(u["n-runs"]), cold=True, sparsity=0.4)
        )
        return [t_vanilla, t_distil, t_dyn, t_one, t_snap, t_runs], u

    compress(cfg("warm-up", sparsity=0.4))  # the first run of a process pays for lazy imports
    seconds: dict[str, list[float]] = {k: [] for k in RECIPES}
    for r in range(args.rounds):
        times, u = one_round(f"-{r}")
        for k, t in zip(RECIPES, times, strict=True):
            seconds[k].append(t)

    import pandas as pd

    v = {k: pd.read_parquet(p)["v"].rank().to_numpy() for k, p in u.items()}
    pairs = [("dynamics", "n-runs"), ("dynamics", "snapshots"), ("snapshots", "n-runs")]
    pairs += [("oneshot", "n-runs"), ("oneshot", "snapshots")]
    return {
        "groups": {"run": {"seconds": seconds, "examples": dict.fromkeys(RECIPES, args.n)}},
        "info": {
            "spearman_v": {f"{a} vs {b}": float(np.corrcoef(v[a], v[b])[0, 1]) for a, b in pairs}
        },
    }


def table(rec: dict) -> tuple[list[str], list[list[str]]]:
    """Seconds and the multiple of a Vanilla run's (the inverse of the rate's speed-up)."""
    rows = []
    for name, est in rec["estimates"]["run"].items():
        n = rec["runs"][0]["groups"]["run"]["examples"][name]
        secs = [n / x for x in (est["rate"][0], est["rate"][2], est["rate"][1])]
        times = [1 / x for x in (est["speedup"][0], est["speedup"][2], est["speedup"][1])]
        rows.append([name, fmt(secs, 1, ""), fmt(times)])
    return ["run", "seconds", "× a Vanilla run"], rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    harness_args(ap, "rmc-overhead", processes=2, rounds=3)
    args = ap.parse_args()
    measure(
        "rmc-overhead",
        args,
        worker,
        table,
        f"{args.n} MNLI pairs, a paraphrase-MiniLM-L3-v2 teacher fine-tuned 2 epochs, magnitude "
        "40 %, bf16, 1 epoch; every run pays its own teacher pass and uncertainty step",
    )


if __name__ == "__main__":
    main()
