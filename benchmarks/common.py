"""Shared set-up for the benchmarks: real model and data from ../shared, and the harness that turns
raw timings from several processes into a committed record.

Every benchmark that writes under docs/results/benchmarks/ runs `measure`: it starts `--processes`
fresh Python processes one after another (a process's memory layout and thread placement are part
of the noise), each times every model in every round in turn (`models.infer.round_robin_seconds`),
and the parent keeps every round's seconds, the machine, the threads and the code version, then
computes rates and speed-ups with their interval (`metrics.timing`) from those raw seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# this checkout's package, not an editable install of another one: a record names this tree's commit
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("ROBUST_COMPRESS_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
DATA = SHARED / "data"
RESULTS = ROOT / "docs" / "results" / "benchmarks"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def mnli(split: str, n: int, seed: int = 0):
    from robust_compress.data.load import load_split
    from robust_compress.data.tasks import BUILTIN

    return load_split(BUILTIN["mnli"], split, DATA, limit=n, seed=seed)


LABELS = ["entailment", "neutral", "contradiction"]


def model_and_dev(path: str, n: int, max_length: int = 128):
    """A model for scoring, its tokenizer and n dev-matched examples encoded for it."""
    from robust_compress.data.batching import EncodedSplit
    from robust_compress.models.load import load_model, load_tokenizer, set_threads

    set_threads()
    model, tok = load_model(path, LABELS).eval(), load_tokenizer(path)
    return model, tok, EncodedSplit(mnli("dev_matched", n).examples, tok, max_length)


def structured_one_shot(model, train, flops: float):
    """A copy of `model` structured-pruned (heads and FFN neurons, one importance round on `train`,
    seed 0) to `flops` of its FLOPs, no fine-tuning: the studies' shapes, for timing."""
    from robust_compress.compress.base import Prepare
    from robust_compress.compress.structured_target import StructuredConfig, StructuredPruning

    m = copy.deepcopy(model)
    hook = StructuredPruning(
        StructuredConfig(target_flops=flops), Prepare(data=train, seed=0), flops
    )
    hook.on_train_begin(m, 1)
    hook.on_step_end(m, 1)
    hook.on_train_end(m)
    return m.eval()


def row(name: str, value: float, unit: str = "") -> None:
    print(f"{name:48s} {value:10.2f} {unit}")


# -- the multi-process harness --

Worker = Callable[[argparse.Namespace], dict[str, Any]]
"""One process's measurements: {"groups": {group: {"seconds": {model: [s per round]},
"examples": {model: n}}}, "info": {model: {...}}} (info: what does not vary between processes)."""


def harness_args(ap: argparse.ArgumentParser, name: str, processes: int = 3, rounds: int = 5):
    ap.add_argument("--processes", type=int, default=processes, help="fresh processes, in turn")
    ap.add_argument("--rounds", type=int, default=rounds, help="timed rounds per process")
    ap.add_argument("--out", default=str(RESULTS / f"{name}.json"), help="the record to write")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument(
        "--retable",
        action="store_true",
        help="recompute the record's estimates and table from its raw timings (no timing)",
    )


def machine() -> dict[str, Any]:
    import torch
    import transformers

    from robust_compress.models.runtimes import cpu_name

    return {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def measure(
    name: str,
    args: argparse.Namespace,
    worker: Worker,
    table: Callable[[dict[str, Any]], tuple[list[str], list[list[str]]]],
    note: str,
) -> dict[str, Any]:
    """In a worker (`--worker FILE`): run `worker` and write its measurements to FILE, then exit.
    In the parent: run the worker in `args.processes` fresh processes one after another, and
    write the record: command, code version, machine, every process's raw seconds, the
    estimates and `table`'s rows computed from them."""
    if args.worker:
        Path(args.worker).write_text(json.dumps(worker(args) | {"machine": machine()}))
        raise SystemExit(0)
    if args.retable:  # the table's layout changed, not the measurement
        rec = json.loads(Path(args.out).read_text(encoding="utf-8"))
        rec["estimates"] = estimates(rec)
        rec["header"], rec["rows"] = table(rec)
        Path(args.out).write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
        print(render(rec["header"], rec["rows"]))
        return rec
    import robust_compress
    from robust_compress import code_version

    if not Path(robust_compress.__file__).resolve().is_relative_to(ROOT):
        raise SystemExit(f"robust_compress comes from {robust_compress.__file__}, not {ROOT}")
    version = code_version()  # before anything is written: a record must not dirty its own tree
    script = Path(sys.argv[0]).resolve()
    argv = sys.argv[1:]
    shown = [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out")]
    runs = []
    for p in range(args.processes):
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "w.json"
            print(f"[{name}] process {p + 1}/{args.processes}", flush=True)
            env = os.environ | {"PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, str(script), *argv, "--worker", str(out)]
            subprocess.run(cmd, check=True, env=env)
            runs.append(json.loads(out.read_text()))
    rec: dict[str, Any] = {
        "benchmark": name,
        "command": "python benchmarks/" + script.name + "".join(f" {a}" for a in shown),
        "code_version": version,
        "machine": runs[0]["machine"],
        "processes": args.processes,
        "rounds": args.rounds,
        "note": note,
        "runs": [{k: v for k, v in r.items() if k != "info"} for r in runs],
        "info": runs[0].get("info", {}),
    }
    rec["estimates"] = estimates(rec)
    rec["header"], rec["rows"] = table(rec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(render(rec["header"], rec["rows"]))
    print(f"wrote {out}")
    return rec


def group_rates(rec: dict[str, Any], group: str, model: str) -> list[list[float]]:
    """examples/s of `model` in every round of every process of the record."""
    from robust_compress.metrics.timing import rates

    return [
        rates([r["groups"][group]["seconds"][model]], r["groups"][group]["examples"][model])[0]
        for r in rec["runs"]
    ]


def estimates(rec: dict[str, Any]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{group: {model: {"rate": [point, lo, hi], "speedup": [...] against the group's first
    model}}}, computed from the record's raw seconds only."""
    from robust_compress.metrics.timing import geometric, speedup

    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for group, first in rec["runs"][0]["groups"].items():
        models = list(first["seconds"])
        base = group_rates(rec, group, models[0])
        out[group] = {
            m: {
                "rate": geometric(group_rates(rec, group, m)).as_list(),
                "speedup": speedup(group_rates(rec, group, m), base).as_list(),
            }
            for m in models
        }
    return out


def fmt(est: list[float], digits: int = 2, suffix: str = "×") -> str:
    """A point and its interval: '1.87× [1.84, 1.90]'."""
    p, lo, hi = est
    return f"{p:.{digits}f}{suffix} [{lo:.{digits}f}, {hi:.{digits}f}]"


def render(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
