"""robust-compress: compress BERT-family NLU models and measure the OOD robustness it costs.

Importing the package is light (no torch): `robust_compress.models` registers the physically pruned
model types (`pruned_<type>`) with transformers' Auto classes when it is imported, so after
`import robust_compress.models` a pruned model reloads with `from_pretrained`.
"""

__version__ = "0.2.0"


def _quiet_imports() -> None:
    """Libraries that log at import (torchao's optional GPU kernels, torch's pytree notices) are not
    the user's concern; `-v` (the CLI's verbose flag) sets these back."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_imports()
