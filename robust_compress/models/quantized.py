"""Post-training dynamic int8 quantization, saving it as int8, and loading a model as it runs.

Two schemes, both int8 weights with activations quantized on the fly at inference:
- `dynamic-int8` (default): torchao's maintained `quantize_` with
  `Int8DynamicActivationInt8WeightConfig`. Saved as int8 on disk: the quantized state dict is
  flattened with torchao's safetensors support (int8 data + scales + JSON metadata naming only
  torchao's allowed tensor types), so nothing loaded is pickled and the file is about a quarter of
  the float one for the Linear weights.
- `dynamic-int8-torch-ao`: the deprecated `torch.ao.quantization.quantize_dynamic`, kept as the
  fallback. Its quantized modules only serialize through pickle, so that artifact stores the float
  weights and the loader re-quantizes them (a pure function of the weights: the same model).

`load_for_inference` is the one loader every evaluation uses: an int8 folder is scored as int8.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification

from ..io import UserError, read_json, write_json
from ..settings.methods import SCHEMES
from .labels import permute_classifier
from .load import (
    check_head,
    check_model_dir,
    label_order,
    load_arch,
    load_model,
    resolve_model_dir,
    save_tokenizer,
)

QUANT_FILE = "quantization.json"
INT8_WEIGHTS = "model.safetensors"


def _torchao():
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as e:
        raise UserError(
            f"int8 scheme 'dynamic-int8' needs torchao ({e}); use 'dynamic-int8-torch-ao'"
        ) from None
    return quantize_, Int8DynamicActivationInt8WeightConfig


def _linear_filter(module: torch.nn.Module, fqn: str) -> bool:
    return isinstance(module, torch.nn.Linear)


def quantize(model: torch.nn.Module, scheme: str = "dynamic-int8") -> torch.nn.Module:
    """A quantized copy on the CPU: every nn.Linear with int8 weights, activations quantized per
    call."""
    if scheme not in SCHEMES:
        raise UserError(f"unknown quantization scheme {scheme!r}; have {list(SCHEMES)}")
    model = copy.deepcopy(model).cpu().eval()
    if scheme == "dynamic-int8-torch-ao":
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    quantize_, config = _torchao()
    quantize_(model, config(), filter_fn=_linear_filter)
    return model


def is_quantized(model: torch.nn.Module) -> bool:
    if any(m.__class__.__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        return True
    return any(type(p).__module__.startswith("torchao") for p in model.parameters())


def save_quantized(
    qmodel: torch.nn.Module, float_model: torch.nn.Module, tokenizer, folder: Path, scheme: str
) -> None:
    """Write a quantized model: int8 safetensors (torchao) or float weights + recipe (torch.ao)."""
    folder = Path(folder)
    if scheme == "dynamic-int8-torch-ao":
        float_model.save_pretrained(folder, safe_serialization=True)
    else:
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        config = copy.deepcopy(float_model.config)
        config.architectures = [type(float_model).__name__]
        config.save_pretrained(folder)
        tensors, metadata = flatten_tensor_state_dict(
            {
                k: v.detach().contiguous() if not type(v).__module__.startswith("torchao") else v
                for k, v in qmodel.state_dict().items()
            }
        )
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(folder / INT8_WEIGHTS),
            metadata=metadata,
        )
    save_tokenizer(tokenizer, folder)
    write_json(folder / QUANT_FILE, {"scheme": scheme})


def _load_torchao(folder: Path) -> torch.nn.Module:
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    with safe_open(str(folder / INT8_WEIGHTS), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open handle is not iterable)
    state, leftover = unflatten_tensor_state_dict(tensors, metadata)
    if leftover:
        raise UserError(
            f"{folder / INT8_WEIGHTS}: {len(leftover)} tensors not described by its metadata"
        )
    config = load_arch(folder)
    # built on the CPU (not meta): buffers outside the state dict (position ids) must be real
    model = AutoModelForSequenceClassification.from_config(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def load_for_inference(
    folder: str | Path,
    labels: list[str],
    label_map: dict[str, str] | None = None,
    new_head: bool = False,
) -> torch.nn.Module:
    """A saved model (folder or hub id) ready to predict, its outputs in `labels`' order: int8 as
    saved (or re-applied, for the torch.ao fallback). A classifier folder missing its head tensors
    is refused (they would be drawn at random), unless `new_head` asks for a new one on purpose."""
    folder = resolve_model_dir(str(folder))
    if not new_head:
        check_model_dir(folder)
        check_head(folder)
    recipe = folder / QUANT_FILE
    if not recipe.is_file():
        return load_model(str(folder), labels, label_map=label_map).eval()
    scheme = read_json(recipe).get("scheme")
    if scheme == "dynamic-int8-torch-ao":
        return quantize(load_model(str(folder), labels, label_map=label_map), scheme)
    if scheme != "dynamic-int8":
        raise UserError(f"{recipe}: unknown scheme {scheme!r}; have {list(SCHEMES)}")
    check_model_dir(folder)
    perm = label_order(folder, labels, label_map)
    try:
        model = _load_torchao(folder)
    except (RuntimeError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise UserError(
            f"{folder / INT8_WEIGHTS}: cannot load the int8 weights ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]})"
        ) from None
    permute_classifier(
        model, perm, list(labels)
    )  # int8 rows too: per-row data and scales move together
    return model
