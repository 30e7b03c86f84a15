"""Stages: one entry point per kind of artifact (each also a CLI command), and the one writer."""

from . import kinds  # noqa: F401 -- fills the stage-kind registry (graph.KINDS)
from .audit import audit
from .evaluate import evaluate_folder
from .export import export_onnx
from .shortcut import compute_uncertainty, score_easy_hard, train_bias_model, write_easy_hard
from .speed import measure_speed
from .training import compress, finetune

__all__ = [
    "audit",
    "compress",
    "compute_uncertainty",
    "evaluate_folder",
    "export_onnx",
    "finetune",
    "measure_speed",
    "train_bias_model",
    "score_easy_hard",
    "write_easy_hard",
]
