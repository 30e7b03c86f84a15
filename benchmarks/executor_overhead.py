"""What running a study through Ray costs over running it here: the tiny study of the tests (a tiny
random BERT teacher, an overlap bias model, a pruning run with snapshots, uncertainty, a Vanilla and
an RMC run) run locally and through a local Ray cluster, each into a fresh folder, side by side. The
ratio is Ray's fixed cost (cluster start, a worker process per stage's imports, task scheduling)
against stages that take seconds here; on real stages (minutes to hours) it vanishes.

    python benchmarks/executor_overhead.py [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, row

sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.conftest import write_tiny_model, write_tiny_task


def study(tmp: Path, model: Path, task: Path, name: str) -> Path:
    exp = {
        "name": "tiny",
        "task": str(task),
        "output_dir": str(tmp / name),
        "seeds": [0],
        "defaults": {
            "batch_size": 16,
            "lr": 2e-3,
            "max_length": 32,
            "checkpoint_every": 5,
            "cache_dir": str(tmp / f"cache-{name}"),
        },
        "teacher": {"model": str(model), "train": {"epochs": 4}},
        "compressions": [{"name": "mag-0.5", "method": "magnitude", "settings": {"sparsity": 0.5}}],
        "losses": ["ce", "rmc"],
        "uncertainty": {"source": "snapshots", "sparsities": [0.3, 0.6]},
        "bias_model": {"kind": "overlap", "easy_hard_split": "dev"},
        "speed": None,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = ap.parse_args()
    import ray

    from robust_compress.study.executors import Ray
    from robust_compress.study.run import reproduce

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "model").mkdir()
        model, task = write_tiny_model(tmp / "model"), write_tiny_task(tmp)
        t0 = time.perf_counter()
        reproduce(study(tmp, model, task, "local"))
        local = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(
            num_cpus=args.cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}},
        )
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        reproduce(study(tmp, model, task, "ray"), executor=Ray())
        on_ray = time.perf_counter() - t0
        ray.shutdown()
    row("local executor (s)", local, "s")
    row("ray: starting the local cluster (s)", start, "s")
    row(f"ray executor, {args.cpus} CPUs, cluster running (s)", on_ray, "s")
    row("ray / local", on_ray / local, "x")
    row("ray incl. cluster start / local", (on_ray + start) / local, "x")


if __name__ == "__main__":
    main()
