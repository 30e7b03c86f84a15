"""Post-training dynamic int8 quantization, and loading a saved model as it is meant to run.

A quantized artifact stores its float weights (safetensors) plus `quantization.json` naming the
scheme; dynamic int8 is a pure function of those weights, so loading re-applies it and no
pickled quantized module is ever loaded. `load_for_inference` is the one loader every
evaluation uses, so an int8 folder is always scored as int8.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..io import UserError, read_json
from .load import load_model

QUANT_FILE = "quantization.json"
SCHEMES = ("dynamic-int8",)


def quantize(model: torch.nn.Module, scheme: str = "dynamic-int8") -> torch.nn.Module:
    """A quantized copy: every nn.Linear with int8 weights, activations quantized on the fly (CPU)."""
    if scheme not in SCHEMES:
        raise UserError(f"unknown quantization scheme {scheme!r}; have {list(SCHEMES)}")
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {torch.nn.Linear},
                                                  dtype=torch.qint8)


def is_quantized(model: torch.nn.Module) -> bool:
    return any(m.__class__.__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def load_for_inference(folder: str | Path, labels: list[str]) -> torch.nn.Module:
    """A saved model ready to predict: int8 re-applied when the folder says it is quantized."""
    model = load_model(str(folder), labels)
    recipe = Path(folder) / QUANT_FILE
    if recipe.is_file():
        scheme = read_json(recipe).get("scheme")
        model = quantize(model, scheme)
    return model.eval()
