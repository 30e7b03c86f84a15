"""int8 on the maintained API (torchao `quantize_`, Int8DynamicActivationInt8WeightConfig)
against the deprecated torch.ao `quantize_dynamic`, side by side on this CPU: speed, logit error,
size on disk.

    python benchmarks/int8_schemes.py [--model runs/teacher-minilm-l6] [--n 512]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import MODELS, model_and_dev

from robust_compress.models.infer import predict_logits, throughput
from robust_compress.models.quantized import quantize, save_quantized


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODELS / "all-MiniLM-L6-v2"))
    ap.add_argument("--n", type=int, default=512)
    args = ap.parse_args()
    model, tok, data = model_and_dev(args.model, args.n)
    rows = {"fp32": model} | {
        s: quantize(model, s) for s in ("dynamic-int8", "dynamic-int8-torch-ao")
    }
    rates = throughput({k: (m, data) for k, m in rows.items()}, batch_size=64, repeats=3)
    ref = predict_logits(model, data, 64)[0]
    tmp = Path(tempfile.mkdtemp())
    print(
        f"{args.n} MNLI dev-matched examples, batch 64, {torch.get_num_threads()} threads; "
        "round-robin, best of 3"
    )
    print(
        f"{'scheme':28s} {'ex/s':>8s} {'vs fp32':>8s} {'max |dlogit|':>13s} "
        f"{'argmax agree':>13s} {'MiB':>7s}"
    )
    for name, m in rows.items():
        logits = predict_logits(m, data, 64)[0]
        if name == "fp32":
            m.save_pretrained(tmp / name, safe_serialization=True)
        else:
            save_quantized(m, model, tok, tmp / name, name)
        size = sum(p.stat().st_size for p in (tmp / name).glob("*.safetensors")) / 2**20
        agree = (logits.argmax(1) == ref.argmax(1)).mean()
        print(
            f"{name:28s} {rates[name]:8.1f} {rates[name] / rates['fp32']:7.2f}x "
            f"{abs(logits - ref).max():13.4f} "
            f"{100 * agree:12.1f}% {size:7.1f}"
        )


if __name__ == "__main__":
    main()
