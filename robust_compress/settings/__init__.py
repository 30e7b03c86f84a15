"""Settings: what the layers below the config take, declared apart from the code that runs them.

Pydantic models and names only, no torch: the loop's `TrainArgs` (`train.loop` runs them), the
loss `Inputs` and where each per-example input is read from (`train.extras` builds them), every
loss's Settings and the inputs it needs (`train.losses` holds the formulas), every compression
method's Config (`compress` holds the methods), and the runtimes and int8 schemes a config may name
(`models` implements them). `config.RunConfig` is assembled from these and `data.load.DataArgs`, so
validating a config, a study file or building the CLI's help loads no torch, transformers or
accelerate. Each light registry here (`LOSS_SETTINGS`, `METHOD_CONFIGS`) is the one the heavy
registry (`train.losses.REGISTRY`, `compress.METHODS`) reuses: each checks at import that it names
the same entries with the same settings classes.
"""

from .inputs import INPUT_SOURCES, Inputs, required_sources
from .losses import LOSS_SETTINGS, KDSettings, LossSettings
from .methods import METHOD_CONFIGS, RUNTIMES, SCHEMES, MethodConfig, Runtime
from .train import TrainArgs

__all__ = [
    "INPUT_SOURCES",
    "LOSS_SETTINGS",
    "METHOD_CONFIGS",
    "RUNTIMES",
    "SCHEMES",
    "Inputs",
    "KDSettings",
    "LossSettings",
    "MethodConfig",
    "Runtime",
    "TrainArgs",
    "required_sources",
]
