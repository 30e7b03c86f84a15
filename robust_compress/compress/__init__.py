"""Compression methods behind one registry: adding a method is one module and one line here."""

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

__all__ = ["METHODS", "Method", "MethodConfig", "Prepare"]
