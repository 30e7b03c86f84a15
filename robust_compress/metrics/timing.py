"""Rates and speed-ups from raw timings, with a 95 % interval over timing rounds and processes.

A timing varies between rounds of one process (caches, the scheduler) and, more, between processes
(memory layout, which core, thread placement), so one process's best round says nothing about
noise. Each benchmark times its models in several processes, the models taking turns in every
round, and keeps every round. A speed-up is then the geometric mean, over processes and rounds, of
the per-round ratio (the model's rate over the base's in the same round: paired, so drift that hits
both cancels). Its interval is a two-level percentile bootstrap (processes, then rounds within each
drawn process; Davison & Hinkley 1997, sec. 3.8), hand-written because scipy's bootstrap has no
nested resampling. With 2-3 processes it is an honest lower bound on the noise, not an exact 95 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % interval."""

    point: float
    lo: float
    hi: float

    def as_list(self, digits: int = 4) -> list[float]:
        return [round(self.point, digits), round(self.lo, digits), round(self.hi, digits)]


def _logs(values: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-process rounds as a (processes, rounds) array of logs; every process the same rounds."""
    rows = [list(v) for v in values]
    if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
        raise ValueError("timings need the same number (≥ 1) of rounds in every process")
    arr = np.asarray(rows, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("timings must be positive and finite")
    return np.log(arr)


def geometric(values: Sequence[Sequence[float]], draws: int = 4000, seed: int = 0) -> Estimate:
    """The geometric mean of `values[process][round]` and its two-level bootstrap interval."""
    x = _logs(values)
    n_proc, n_round = x.shape
    rng = np.random.default_rng(seed)
    procs = rng.integers(0, n_proc, size=(draws, n_proc))
    rounds = rng.integers(0, n_round, size=(draws, n_proc, n_round))
    means = x[procs[..., None], rounds].mean(axis=(1, 2))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Estimate(float(np.exp(x.mean())), float(np.exp(lo)), float(np.exp(hi)))


def rates(seconds: Sequence[Sequence[float]], examples: int) -> list[list[float]]:
    """examples/s of each round from its seconds."""
    return [[examples / s for s in proc] for proc in seconds]


def speedup(model: Sequence[Sequence[float]], base: Sequence[Sequence[float]], **kw) -> Estimate:
    """How many times faster `model` ran than `base` (both examples/s per process and round, taken
    in turns), paired by round."""
    m, b = _logs(model), _logs(base)
    if m.shape != b.shape:
        raise ValueError(f"paired timings need the same rounds: {m.shape} vs {b.shape}")
    return geometric(np.exp(m - b).tolist(), **kw)
