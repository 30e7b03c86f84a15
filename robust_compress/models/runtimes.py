"""The runtimes a model is deployed in, timed with one harness: PyTorch fp32, PyTorch bf16 autocast,
onnxruntime fp32 and onnxruntime dynamic int8.

A speed-up is only meaningful for a named runtime (structured pruning gains more in fp32 than under
bf16 autocast on a CPU; onnxruntime's int8 is another trade). Every runtime is timed by the same
round-robin harness as `models.infer.throughput`, so rates on one runtime are taken side by side.
A model a runtime cannot run (torchao int8 has no ONNX form; int8 kernels take fp32 activations, so
"bf16" would be fp32 again) is reported as missing with its reason, never a crash.

The ONNX export itself (torch's exporter, dynamic batch and length) lives here too: `stages.export`
writes files with it, the speed stage and the latency table time models through it.
"""

from __future__ import annotations

import functools
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data.batching import Collator, EncodedSplit, sorted_batches
from ..settings.methods import RUNTIMES
from .infer import INPUT_KEYS, model_inputs, pytorch_pass, round_robin_seconds
from .quantized import is_quantized


class Unsupported(Exception):
    """This runtime cannot run this model (the message says why)."""


class Logits(torch.nn.Module):
    """The model as a function of its token tensors only, returning logits (what ONNX serves)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def onnx_inputs(model: torch.nn.Module, have: dict) -> tuple[str, ...]:
    """The token fields the exported graph takes, in the forward's order (INPUT_KEYS)."""
    accepted = model_inputs(model, dict.fromkeys(INPUT_KEYS))
    return tuple(k for k in INPUT_KEYS if k in accepted and k in have)


def export_onnx_file(
    model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path
) -> tuple[str, ...]:
    """Export `model` (float, CPU) to ONNX at `path` with a dynamic batch and sequence length;
    `example` is one collated batch (more than one example, more than one token). Returns the
    inputs."""
    names = onnx_inputs(model, example)
    wrapper = Logits(model).eval()
    batch_dim, seq_dim = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    torch.onnx.export(
        wrapper,
        tuple(example[k] for k in names),
        str(path),
        dynamo=True,
        input_names=list(names),
        output_names=["logits"],
        dynamic_shapes={k: {0: batch_dim, 1: seq_dim} for k in names},
        verbose=False,
    )
    return names


def quantize_onnx(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic int8 (int8 weights, activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def onnx_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What a timing depends on besides the model: platform, CPU model, threads, GPU."""
    return {
        "platform": platform.system(),
        "arch": platform.machine(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def runtime_versions(runtime: str) -> dict[str, str]:
    """The library versions a runtime's speed depends on."""
    out = {"torch": torch.__version__}
    if runtime.startswith("onnxruntime"):
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


def _largest(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """An export example with more than one row and token (the exporter specializes dimensions of
    size 1)."""
    return max(
        batches,
        key=lambda b: (
            b["input_ids"].shape[0] > 1,
            b["input_ids"].shape[1] > 1,
            b["input_ids"].numel(),
        ),
    )


def runner(
    model: torch.nn.Module, runtime: str, batches: list[dict[str, torch.Tensor]], workdir: Path
) -> Callable[[], None]:
    """A function that runs every batch once through `model` on `runtime` (ready to time), or
    `Unsupported`. onnxruntime variants export into `workdir` (an export already there is reused:
    the fp32 graph is quantized for int8, not exported twice)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; have {list(RUNTIMES)}")
    quantized = is_quantized(model)
    if runtime.startswith("pytorch"):
        bf16 = runtime == "pytorch-bf16"
        if bf16 and quantized:
            raise Unsupported("int8 kernels take fp32 activations: timed under pytorch-fp32 only")
        return pytorch_pass(model.eval(), batches, bf16)
    if quantized:
        raise Unsupported(
            "a torchao int8 model has no ONNX form: onnxruntime-int8 of its float parent is the "
            "comparable row"
        )
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise Unsupported(f"onnxruntime is not installed ({e})") from None
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    names = onnx_inputs(model, batches[0])
    try:
        if not path.is_file():
            export_onnx_file(model.cpu().eval(), _largest(batches), path)
        if runtime == "onnxruntime-int8":
            if not (workdir / "model.int8.onnx").is_file():
                quantize_onnx(path, workdir / "model.int8.onnx")
            path = workdir / "model.int8.onnx"
        sess = onnx_session(path)
    except Exception as e:  # noqa: BLE001 -- the exporter and onnxruntime raise many kinds: one reason
        raise Unsupported(
            f"ONNX export or session failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        ) from None
    feeds = [{k: b[k].numpy() for k in names} for b in batches]

    def run_onnx() -> None:
        for f in feeds:
            sess.run(None, f)

    return run_onnx


def time_on(
    entries: dict[str, tuple[torch.nn.Module, EncodedSplit]],
    runtime: str,
    batch_size: int = 64,
    repeats: int = 3,
    workdir: Path | None = None,
    progress=None,
) -> tuple[dict[str, float], dict[str, str]]:
    """(examples/s of each model that `runtime` runs, {name: why not} for the others), timed side by
    side: round-robin, `repeats` rounds after a warm-up round, the best round counts. ONNX exports
    go to `workdir` (one folder per entry, reused by a later call with the same entries), else a
    temporary folder. `progress(k)`: after each timed pass."""
    seconds, examples, missing = time_rounds(
        entries, runtime, batch_size, repeats, workdir, progress
    )
    return {k: examples[k] / max(min(v), 1e-9) for k, v in seconds.items()}, missing


def time_rounds(
    entries: dict[str, tuple[torch.nn.Module, EncodedSplit]],
    runtime: str,
    batch_size: int = 64,
    repeats: int = 3,
    workdir: Path | None = None,
    progress=None,
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, str]]:
    """`time_on`'s raw timings: (seconds of every timed round of each model, its examples,
    {name: why not} for the models `runtime` cannot run)."""
    runs, missing = {}, {}
    with tempfile.TemporaryDirectory(prefix="runtime-") as tmp:
        for i, (name, (m, data)) in enumerate(entries.items()):
            collate = Collator(getattr(m.config, "pad_token_id", 0) or 0)
            batches = [
                collate([data[j] for j in rows])
                for rows in sorted_batches(data.lengths, batch_size)
            ]
            try:
                runs[name] = (runner(m, runtime, batches, Path(workdir or tmp) / str(i)), len(data))
            except Unsupported as e:
                missing[name] = str(e)
        seconds = round_robin_seconds({k: r for k, (r, _) in runs.items()}, repeats, progress)
    return seconds, {k: n for k, (_, n) in runs.items()}, missing
