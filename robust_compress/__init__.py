"""robust-compress: compress BERT-family NLU models and measure the OOD robustness it costs.

Importing the package registers the physically pruned model types (`pruned_<type>`) with
transformers' Auto classes, so a pruned model reloads with `from_pretrained`.
"""

__version__ = "0.2.0"


def _quiet_imports() -> None:
    """Libraries that log at import (torchao's optional GPU kernels, torch's pytree notices) are not
    the user's concern; `-v` (the CLI's verbose flag) sets these back."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_imports()


def _register() -> None:
    from .models.pruned import register_all

    register_all()


_register()
