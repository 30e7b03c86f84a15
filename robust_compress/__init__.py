"""robust-compress: compress BERT-family NLU models and measure the OOD robustness it costs.

Importing the package is light (no torch): `robust_compress.models` registers the physically pruned
model types (`pruned_<type>`) with transformers' Auto classes when it is imported, so after
`import robust_compress.models` a pruned model reloads with `from_pretrained`.
"""

import functools
import os
import subprocess
from pathlib import Path

__version__ = "0.2.0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The code version this process started with (`git describe`); $ROBUST_COMPRESS_CODE_VERSION
    names it where the tree has no .git (a copied working tree). Here, not in the study, so that
    `--version` loads no torch."""
    if os.environ.get("ROBUST_COMPRESS_CODE_VERSION"):
        return os.environ["ROBUST_COMPRESS_CODE_VERSION"]
    try:
        return (
            subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                check=False,
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=5,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _quiet_imports() -> None:
    """Libraries that log at import (torchao's optional GPU kernels, torch's pytree notices) are not
    the user's concern; `-v` (the CLI's verbose flag) sets these back."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_imports()
