"""The multi-bootstrap: one interval procedure for every difference between trained models.

Sellam et al., "The MultiBERTs" (ICLR 2022): a number measured on trained models varies with the
training seed *and* with the examples it is measured on (Bouthillier et al. 2021), so each bootstrap
draw resamples both. Seeds are paired: models with the same seed list (the same model on two example
sets, or two losses run at the same seeds) draw the same seed positions. Examples are shared: every
model evaluated on one example set draws the same example indices. The statistic (a difference Δ, a
change of a gap, a share = gain / cost) is computed inside each draw.

Small samples (our studies have 3 seeds): a percentile interval over such draws under-covers, since
it underestimates the seed variance by (n-1)/n and treats it as known. The interval is therefore a
studentised hybrid: var = seed part (from seed-only draws, times n/(n-1)) + example part (from
example-only draws) - the seed x example interaction both of them contain (from the joint draws,
same random numbers), with a Student t quantile at df = (n-1) / (the seed share of the variance):
n-1 when seeds dominate, normal when examples do; calibrated to cover 0.94-0.96 at 3 seeds
whatever the share (Welch-Satterthwaite's df, share squared, gives 0.92). A share's interval is
Fieller's on the same variance parts: bounded only when its cost is measurable.

numpy, and scipy for the t quantile."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

SOURCES = ("seeds", "examples")
NO_SEED_VARIANCE = "1 seed: no seed variance; not a finding"
NO_COST = "no measurable cost"
_CHUNK = 2_000_000  # example indices drawn at a time (memory: ~16 bytes each)


@dataclass(frozen=True, eq=False)
class Runs:
    """One model's per-seed, per-example scores (e.g. 0/1 correctness) on one example set.

    data: {seed: 1-D array} or a 2-D array seeds x examples (rows are seeds `seeds`, default their
    positions 0..n-1). Every `Runs` with the same `examples` name must be aligned on the same
    examples (the caller aligns); every `Runs` with the same seed list is paired by seed.
    fixed: a given reference (e.g. the teacher a user brings): its seeds are not resampled, only its
    examples. A one-seed model that is not fixed makes every result it enters `one_seed`."""

    scores: np.ndarray
    seeds: tuple = ()
    examples: str = "all"
    fixed: bool = False

    def __init__(self, data, seeds: Iterable | None = None, examples: str = "all", fixed=False):
        if isinstance(data, Mapping):
            if seeds is not None:
                raise ValueError("Runs: seeds come from the dict's keys")
            keys = sorted(data)
            arr = np.vstack([np.asarray(data[k], float).ravel() for k in keys])
        else:
            arr = np.atleast_2d(np.asarray(data, float))
            keys = list(range(len(arr))) if seeds is None else list(seeds)
            order = sorted(range(len(keys)), key=lambda i: keys[i])
            keys, arr = [keys[i] for i in order], arr[order]
        if arr.ndim != 2 or arr.shape[1] == 0 or len(keys) != len(arr):
            raise ValueError(f"Runs: expected seeds x examples scores, got shape {arr.shape}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"Runs: duplicate seeds {keys}")
        if not np.isfinite(arr).all():
            raise ValueError("Runs: scores must be finite (align the examples first)")
        arr.setflags(write=False)
        object.__setattr__(self, "scores", arr)
        object.__setattr__(self, "seeds", tuple(keys))
        object.__setattr__(self, "examples", str(examples))
        object.__setattr__(self, "fixed", bool(fixed))

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class Effect:
    """A statistic with its interval: estimate [lo, hi] at `level`; se and df of the t interval;
    n_seeds: the fewest seeds of a resampled model in it (0: all fixed); one_seed: a model with one
    seed and no declared `fixed` entered it (print NO_SEED_VARIANCE, never "measurable");
    draws: the joint multi-bootstrap draws of the statistic."""

    estimate: float
    lo: float
    hi: float
    se: float
    df: float
    n_seeds: int
    one_seed: bool
    level: float = 0.95
    draws: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    @property
    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)

    @property
    def measurable(self) -> bool:
        """The interval excludes 0 and every model in it has seed variance (or is fixed)."""
        return self.excludes_zero and not self.one_seed


def excludes_zero(effect: Effect) -> bool:
    return effect.excludes_zero


@dataclass(frozen=True)
class Share:
    """gain / cost computed inside each draw, e.g. (loss - vanilla) / (teacher - vanilla): the share
    of a compression's cost a loss wins back. lo, hi: Fieller's interval (infinite or NaN ends when
    the cost is not measurable); gain, cost: the two differences with their own intervals."""

    estimate: float
    lo: float
    hi: float
    gain: Effect
    cost: Effect
    one_seed: bool
    draws: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)


def share_text(share: Share, digits: int = 0) -> str | None:
    """How to show a share in percent: None when its cost's interval includes 0 (print NO_COST, no
    share); "≥ lo %" when the upper end passes 100 %; else "estimate % [lo, hi]"."""
    if not share.cost.excludes_zero or not math.isfinite(share.lo) or math.isnan(share.hi):
        return None
    if share.hi > 1:
        return f"≥ {100 * share.lo:.{digits}f} %"
    est, lo, hi = (f"{100 * v:.{digits}f}" for v in (share.estimate, share.lo, share.hi))
    return f"{est} % [{lo}, {hi}]"


# ---------------------------------------------------------------------------------------------
# the draws


@dataclass(frozen=True)
class _Parts:
    point: np.ndarray  # (K,) the statistics on all seeds and examples
    joint: np.ndarray  # (B, K) the multi-bootstrap draws
    seed: list[np.ndarray]  # per seed group (K, K): seed-only covariance x n/(n-1)
    inter: list[np.ndarray]  # per seed group (K, K): seed x example interaction x n/(n-1)
    example: np.ndarray  # (K, K) example-only covariance
    dfs: list[int]  # per seed group: n - 1
    n_seeds: int
    one_seed: bool


def _example_means(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, rows) means of y's rows (rows x N) over B example resamples, one index draw per
    resample shared by all rows; vectorised through per-draw counts."""
    n = y.shape[1]
    out = np.empty((n_boot, len(y)))
    step = max(1, _CHUNK // n)
    for start in range(0, n_boot, step):
        c = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(c, n)) + (np.arange(c) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=c * n).reshape(c, n).astype(float)
        out[start : start + c] = counts @ y.T / n
    return out


def _check(arms: Mapping[str, Runs], contrasts, n_boot: int, sources: tuple) -> None:
    if not sources or set(sources) - set(SOURCES):
        raise ValueError(f"sources: a non-empty subset of {SOURCES}, got {sources}")
    unknown = {k for c in contrasts for k in c} - set(arms)
    if unknown:
        raise ValueError(f"weights name models not given: {sorted(unknown)}")
    if n_boot < 10:
        raise ValueError("n_boot: at least 10 draws")
    widths: dict[str, set[int]] = {}
    for r in arms.values():
        widths.setdefault(r.examples, set()).add(r.scores.shape[1])
    for key, w in widths.items():
        if len(w) > 1:
            raise ValueError(f"example set {key!r}: models differ in length {sorted(w)}")


def _resampled_means(
    arms: list[Runs], n_boot: int, rng: np.random.Generator, examples: bool
) -> list[np.ndarray]:
    """Per model (B, seeds): its per-seed means over each example resample (one index draw per
    example set, shared by every model on it); the plain means when examples are not resampled."""
    means = [np.broadcast_to(r.scores.mean(1), (n_boot, r.n_seeds)) for r in arms]
    if not examples:
        return means
    sets: dict[str, list[int]] = {}
    for j, r in enumerate(arms):
        sets.setdefault(r.examples, []).append(j)
    for js in sets.values():
        m = _example_means(np.vstack([arms[j].scores for j in js]), n_boot, rng)
        at = 0
        for j in js:
            means[j], at = m[:, at : at + arms[j].n_seeds], at + arms[j].n_seeds
    return means


def _draw(
    arms: Mapping[str, Runs],
    contrasts: list[Mapping[str, float]],
    n_boot: int,
    seed: int | np.random.Generator,
    sources: Iterable[str],
) -> _Parts:
    sources = tuple(sources)
    _check(arms, contrasts, n_boot, sources)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    names, runs = list(arms), list(arms.values())
    w = np.array([[float(c.get(n, 0.0)) for n in names] for c in contrasts])  # K x A
    used = [bool(np.any(w[:, j] != 0)) for j in range(len(runs))]
    # seed groups: resampled models (not fixed, 2+ seeds) by seed list; one draw per group
    groups: dict[tuple, list[int]] = {}
    for j, r in enumerate(runs):
        if not r.fixed and r.n_seeds > 1:
            groups.setdefault(r.seeds, []).append(j)
    group_of = {j: g for g, js in enumerate(groups.values()) for j in js}
    sizes = [len(s) for s in groups]
    picks = [rng.integers(0, n, size=(n_boot, n)) for n in sizes] if "seeds" in sources else []
    point = [r.scores.mean(1)[None, :] for r in runs]
    means = _resampled_means(runs, n_boot, rng, "examples" in sources)

    def stat(resample: set[int], examples: bool) -> np.ndarray:
        """(B, K) the statistics with the seeds of groups `resample` and (or not) the examples."""
        vals = np.empty((n_boot, len(runs)))
        for j in range(len(runs)):
            x = np.broadcast_to(means[j] if examples else point[j], (n_boot, runs[j].n_seeds))
            if picks and group_of.get(j, -1) in resample:
                x = np.take_along_axis(x, picks[group_of[j]], 1)
            vals[:, j] = x.mean(1)
        return vals @ w.T

    def cov(x: np.ndarray) -> np.ndarray:
        if not np.ptp(x, axis=0).any():  # nothing drawn: exactly 0, not rounding
            return np.zeros((len(w), len(w)))
        return np.atleast_2d(np.cov(x, rowvar=False))

    est = w @ np.array([p.mean() for p in point])
    ex = stat(set(), True)
    seed_parts, inter_parts = [], []
    for g, n in enumerate(sizes):
        so, jg = stat({g}, False), stat({g}, True)
        seed_parts.append(cov(so) * n / (n - 1))
        inter_parts.append(cov(jg - so - ex + est) * n / (n - 1))
    resampled = [r for j, r in enumerate(runs) if used[j] and not r.fixed]
    return _Parts(
        point=est,
        joint=stat(set(range(len(sizes))), True),
        seed=seed_parts,
        inter=inter_parts,
        example=cov(ex),
        dfs=[n - 1 for n in sizes],
        n_seeds=min((r.n_seeds for r in resampled), default=0),
        one_seed=any(r.n_seeds == 1 for r in resampled),
    )


def _variance(parts: _Parts, u: np.ndarray) -> tuple[float, float]:
    """Variance and degrees of freedom of the combination u of the statistics: the seed parts plus
    the example part net of the interaction both contain; df = the seed parts' Welch-Satterthwaite
    df (n-1 for one group) / the seed share of the variance. Satterthwaite's own df (divided by the
    share squared) is estimated from the same 2 seed df and under-covers at 3 seeds (0.92 where
    seeds give 70-95 % of the variance); dividing by the share keeps 0.94-0.96 at any share
    (normal-theory simulation; tests/test_multiboot.py checks it on simulated studies)."""
    seed = [float(u @ c @ u) for c in parts.seed]
    inter = sum(float(u @ c @ u) for c in parts.inter)
    var = sum(seed) + max(float(u @ parts.example @ u) - inter, 0.0)
    den = sum(s * s / d for s, d in zip(seed, parts.dfs, strict=True))
    if den <= 0:
        return var, math.inf
    return var, sum(seed) ** 2 / den * var / sum(seed)


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Student t quantile at real df > 0 (scipy; the normal quantile for df = inf)."""
    return float(stats.t.ppf(p, df))


# ---------------------------------------------------------------------------------------------
# the statistics


def effect(
    arms: Mapping[str, Runs],
    weights: Mapping[str, float],
    *,
    n_boot: int = 2000,
    seed: int | np.random.Generator = 0,
    sources: Iterable[str] = SOURCES,
    level: float = 0.95,
) -> Effect:
    """A linear statistic sum_m weights[m] * mean accuracy of m (mean over its seeds and examples),
    e.g. {"loss": 1, "vanilla": -1}, with its multi-bootstrap interval. `sources` drops seed or
    example resampling (for tests: both are needed for the interval to cover)."""
    parts = _draw(arms, [weights], n_boot, seed, sources)
    return _effect(parts, np.ones(1), 0, level)


def _effect(parts: _Parts, u: np.ndarray, k: int, level: float) -> Effect:
    var, df = _variance(parts, u)
    est, half = float(parts.point[k]), t_quantile(0.5 + level / 2, df) * math.sqrt(var)
    lo, hi, se = est - half, est + half, math.sqrt(var)
    return Effect(est, lo, hi, se, df, parts.n_seeds, parts.one_seed, level, parts.joint[:, k])


def delta(a: Runs, b: Runs, **kw) -> Effect:
    """Δ = a - b of the mean score (a model row against its reference row)."""
    return effect({"a": a, "b": b}, {"a": 1.0, "b": -1.0}, **kw)


def delta_of_diff(a1: Runs, a2: Runs, b1: Runs, b2: Runs, **kw) -> Effect:
    """(a1 - a2) - (b1 - b2), e.g. the change of the easy - hard gap from reference b to model a
    (a1, b1 on the easy examples; a2, b2 on the hard ones)."""
    arms = {"a1": a1, "a2": a2, "b1": b1, "b2": b2}
    return effect(arms, {"a1": 1.0, "a2": -1.0, "b1": -1.0, "b2": 1.0}, **kw)


def ratio(
    arms: Mapping[str, Runs],
    gain: Mapping[str, float],
    cost: Mapping[str, float],
    *,
    n_boot: int = 2000,
    seed: int | np.random.Generator = 0,
    sources: Iterable[str] = SOURCES,
    level: float = 0.95,
) -> Share:
    """gain / cost of two linear statistics of the same models, both computed inside each draw (a
    model in both keeps its correlation). Interval: Fieller's, {r : (gain - r cost)^2 <= t^2
    var(gain - r cost)} with the hybrid variance and df; an end is infinite when the cost is not
    measurable."""
    parts = _draw(arms, [gain, cost], n_boot, seed, sources)
    g, c = (float(v) for v in parts.point)
    q = 0.5 + level / 2

    gain_e = _effect(parts, np.array([1.0, 0.0]), 0, level)
    cost_e = _effect(parts, np.array([0.0, 1.0]), 1, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = parts.joint[:, 0] / parts.joint[:, 1]
    if c == 0:
        return Share(math.nan, math.nan, math.nan, gain_e, cost_e, parts.one_seed, draws)
    r0 = g / c

    def outside(r: float) -> bool:  # r is outside Fieller's set
        var, df = _variance(parts, np.array([1.0, -r]))
        return (g - r * c) ** 2 > t_quantile(q, df) ** 2 * var

    def end(sign: float) -> float:
        step = max(abs(r0), 1e-3)
        inner, outer = r0, r0 + sign * step
        while not outside(outer):
            inner, outer, step = outer, outer + sign * step, step * 2
            if step > 1e6:
                return sign * math.inf
        for _ in range(60):
            mid = (inner + outer) / 2
            inner, outer = (inner, mid) if outside(mid) else (mid, outer)
        return (inner + outer) / 2

    lo, hi = end(-1.0), end(1.0)
    return Share(r0, lo, hi, gain_e, cost_e, parts.one_seed, draws)


def share(loss: Runs, vanilla: Runs, teacher: Runs, **kw) -> Share:
    """(loss - vanilla) / (teacher - vanilla): the share of the compression's cost (teacher -
    vanilla) that a loss wins back, in one draw for the three (vanilla resampled once per draw)."""
    arms = {"loss": loss, "vanilla": vanilla, "teacher": teacher}
    return ratio(arms, {"loss": 1.0, "vanilla": -1.0}, {"teacher": 1.0, "vanilla": -1.0}, **kw)
