"""Compression methods behind one registry: adding a method is one module and one line here, beside
its Config and its line in `settings/methods.py` (torch-free, what the config and CLI read)."""

from ..settings.methods import METHOD_CONFIGS
from .base import Method, MethodConfig, Prepare
from .distill import Distill
from .fisher import Fisher
from .magnitude import Magnitude
from .quantize import Quantize
from .structured import Heads
from .structured_target import Structured
from .truncate import Truncate

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (Magnitude, Heads, Structured, Truncate, Distill, Quantize, Fisher)
}

# the heavy registry reuses the light one: the same names, each method with the Config listed there
# (the CLI's help and the config's union follow METHOD_CONFIGS's order)
if set(METHODS) != set(METHOD_CONFIGS) or any(
    m.Config is not METHOD_CONFIGS[n] for n, m in METHODS.items()
):
    raise ImportError(
        "compress.METHODS and settings.methods.METHOD_CONFIGS disagree: they must name the same "
        "methods, each method's Config the one METHOD_CONFIGS lists under its name"
    )

__all__ = ["METHODS", "Method", "MethodConfig", "Prepare"]
