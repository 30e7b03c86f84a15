"""How much recovery a 2x structured model needs: dev-matched accuracy against the recovery budget
(training pairs x epochs), with distil alone and with layer distillation, as a small printed curve.

    python benchmarks/structured_recovery.py --teacher runs/teacher-minilm-l6
    # larger (hours):
    python benchmarks/structured_recovery.py --pairs 2000 8000 40999 --epochs 1 3 --eval 0

The teacher is pruned once to the speed-up on the runtime (a Fisher start: `compress --method
fisher`, Kwon et al.'s mask search against this machine's latency table for that runtime, with
rescaling; no training), timed against the teacher; then each (loss, pairs, epochs) recovers from
that same start with the study's recipe (`stages.compress`: the one loop; lr 5e-5, batch 32, bf16
autocast). `--init dense` recovers with gradual structured pruning from the teacher instead (the
pruning inside the budget). Every row is evaluated on the same dev-matched examples (`--eval 0`: all
9,815).

The default budget (pairs 2,000 and 8,000, one epoch, two losses, 1,000 dev-matched examples) takes
about 20 minutes on 2 CPU cores with OMP_NUM_THREADS=1; the latency table is cached in --cache.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import DATA, ROOT

from robust_compress.config import validate
from robust_compress.stages import compress, evaluate_folder, measure_speed

FISHER_SAMPLES = (
    2048  # Kwon et al.'s budget: the start is free of training, whatever the recovery budget
)


def common_cfg(args, model: str, out: Path) -> dict:
    return {
        "model": model,
        "task": "mnli",
        "data_dir": str(DATA),
        "output_dir": str(out),
        "cache_dir": args.cache,
        "eval_sets": ["dev_matched"],
        "eval_limit": args.eval or None,
        "batch_size": 32,
        "lr": 5e-5,
        "bf16": not args.fp32,
        "seed": args.seed,
        "checkpoint_every": 100000,
    }


def run(args, name: str, model: str, out: Path, **over) -> dict:
    """One compress run (the study's code path); its dev-matched accuracy and wall time."""
    t0 = time.perf_counter()
    folder = compress(
        validate(common_cfg(args, model, out / name) | {"inputs": {"teacher": args.teacher}} | over)
    )
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "dev_m": 100 * summary["splits"]["dev_matched"]["accuracy"],
        "seconds": time.perf_counter() - t0,
        "folder": folder,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default=str(ROOT / "runs" / "teacher-minilm-l6"))
    ap.add_argument("--speedup", type=float, default=2.0)
    ap.add_argument("--runtime", default="pytorch-fp32")
    ap.add_argument(
        "--pairs", type=int, nargs="+", default=[2000, 8000], help="training pairs (nested subsets)"
    )
    ap.add_argument("--epochs", type=float, nargs="+", default=[1.0])
    ap.add_argument("--losses", nargs="+", default=["distil", "distil_layers"])
    ap.add_argument("--init", choices=["fisher", "dense"], default="fisher")
    ap.add_argument("--eval", type=int, default=1000, help="dev-matched examples (0: all)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--fp32", action="store_true", help="train in fp32 (default: bf16 autocast)")
    ap.add_argument(
        "--cache", default=str(ROOT / "runs" / "cache"), help="latency tables and teacher logits"
    )
    ap.add_argument(
        "--out", default=None, help="keep the models here (default: a temporary folder)"
    )
    args = ap.parse_args()
    if not (Path(args.teacher) / "config.json").is_file():
        raise SystemExit(
            f"{args.teacher}: no fine-tuned teacher; make it with "
            "`robust-compress finetune -c configs/teacher-minilm-l6.yaml` or pass --teacher"
        )
    target = {"target_speedup": args.speedup, "target_runtime": args.runtime}
    with tempfile.TemporaryDirectory(prefix="recovery-") as tmp:
        out = Path(args.out or tmp)
        evaluated = evaluate_folder(
            args.teacher,
            validate(common_cfg(args, args.teacher, out / "teacher")),
            out / "teacher-eval",
        )
        start = run(
            args,
            "fisher-start",
            args.teacher,
            out,
            train_limit=FISHER_SAMPLES,  # the same start for every budget
            compression={"method": "fisher", "samples": FISHER_SAMPLES, **target},
        )
        speed = measure_speed(
            {"teacher": args.teacher, "start": start["folder"]},
            validate({"model": args.teacher, "task": "mnli", "data_dir": str(DATA)}),
            out / "speed.json",
            n=256,
            repeats=2,
            runtimes=[args.runtime],
        )
        rates = speed["runtimes"][args.runtime]["examples_per_s"]
        record = json.loads((start["folder"] / "compression.json").read_text())
        print(
            f"start: Fisher mask search to {args.speedup}x on {args.runtime} (no training): "
            f"predicted {record['predicted_speedup']:.2f}x, "
            f"measured {rates['start'] / rates['teacher']:.2f}x; "
            f"{record['heads_removed']} heads and {record['ffn_neurons_removed']} FFN neurons "
            "removed, "
            f"{record['flops_kept']:.2f} of the FLOPs kept ({start['seconds']:.0f} s)"
        )
        print(
            f"teacher: dev-m {100 * evaluated['splits']['dev_matched']['accuracy']:.1f} "
            "on the same "
            f"{evaluated['splits']['dev_matched']['n']} examples"
        )
        print(f"{'recovery loss':16s} {'pairs':>7s} {'epochs':>6s} {'dev-m':>6s} {'seconds':>8s}")
        print(
            f"{'(none: the start)':16s} {0:7d} {0:6.1f} {start['dev_m']:6.1f} "
            f"{start['seconds']:8.0f}"
        )
        for loss in args.losses:
            for epochs in args.epochs:
                for pairs in args.pairs:
                    if args.init == "fisher":
                        got = run(
                            args,
                            f"{loss}-{pairs}-{epochs:g}",
                            str(start["folder"]),
                            out,
                            train_limit=pairs,
                            epochs=epochs,
                            loss={"name": loss},
                        )
                    else:
                        got = run(
                            args,
                            f"{loss}-{pairs}-{epochs:g}",
                            args.teacher,
                            out,
                            train_limit=pairs,
                            epochs=epochs,
                            loss={"name": loss},
                            compression={"method": "structured", **target},
                        )
                    print(
                        f"{loss:16s} {pairs:7d} {epochs:6.1f} {got['dev_m']:6.1f} "
                        f"{got['seconds']:8.0f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
