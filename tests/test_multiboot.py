"""The multi-bootstrap (metrics/multiboot.py): its 95 % interval covers the true difference between
two trained models at 3 seeds, on simulated studies whose seed and example variance are known; the
same test fails the procedure without example resampling and without seed resampling."""

from __future__ import annotations

import functools
import math
import time
from statistics import NormalDist

import numpy as np
import pytest

from robust_compress.metrics.multiboot import (
    NO_SEED_VARIANCE,
    SOURCES,
    Runs,
    delta,
    delta_of_diff,
    effect,
    excludes_zero,
    ratio,
    share,
    share_text,
    t_quantile,
)

# -- coverage on simulated studies ---------------------------------------------------------------
# A study: N examples drawn from a population (difficulty z ~ N(mu, sz^2); model B's own per-example
# effect w ~ N(0, tau^2), fixed across seeds: the examples where B differs from A), n seeds (seed
# offsets a_s, b_s ~ N(0, su^2), correlated rho: the same seed for both), 0/1 correctness
# ~ Bernoulli(Phi(z + a_s)) for A and Bernoulli(Phi(z + w + b_s)) for B. The true parameter is the
# expected accuracy difference over seeds and the example population (closed form, probit).

SCENARIOS = {
    # seeds give ~95 % of the variance of the difference
    "seeds dominate": dict(mu=1.0, sz=2.0, tau=0.5, su=0.3, rho=0.3, n=3, N=300),
    # examples give ~70 %, seeds and their interaction with examples the rest
    "examples dominate": dict(mu=1.0, sz=3.0, tau=2.5, su=0.05, rho=0.5, n=3, N=300),
    # about half each, at 5 seeds
    "mixed, 5 seeds": dict(mu=1.0, sz=2.0, tau=1.5, su=0.12, rho=0.3, n=5, N=300),
}
STUDIES = 1000  # per scenario: binomial SE of a coverage ~0.007
DRAWS = 400


def _truth(mu, sz, tau, su, **_) -> float:
    phi = NormalDist().cdf
    return phi(mu / math.sqrt(1 + sz**2 + su**2)) - phi(mu / math.sqrt(1 + sz**2 + tau**2 + su**2))


@functools.cache
def _studies(name: str) -> tuple[np.ndarray, np.ndarray]:
    p = SCENARIOS[name]
    n, N = p["n"], p["N"]
    rng = np.random.default_rng(20220101)
    z = rng.normal(p["mu"], p["sz"], (STUDIES, 1, N))
    w = rng.normal(0.0, p["tau"], (STUDIES, 1, N))
    cov = p["su"] ** 2 * np.array([[1.0, p["rho"]], [p["rho"], 1.0]])
    ab = rng.multivariate_normal([0.0, 0.0], cov, (STUDIES, n))  # STUDIES x n x 2
    grid = np.linspace(-12, 12, 4801)  # Phi without scipy: a table, interpolated
    table = np.array([NormalDist().cdf(x) for x in grid])

    def cdf(x):
        return np.interp(x, grid, table)

    ya = rng.random((STUDIES, n, N)) < cdf(z + ab[..., :1])
    yb = rng.random((STUDIES, n, N)) < cdf(z + w + ab[..., 1:])
    return ya, yb


def _coverage(name: str, sources=SOURCES) -> float:
    ya, yb = _studies(name)
    truth = _truth(**SCENARIOS[name])
    hits = 0
    for i in range(STUDIES):
        e = delta(Runs(ya[i]), Runs(yb[i]), n_boot=DRAWS, seed=i, sources=sources)
        hits += e.lo <= truth <= e.hi
    return hits / STUDIES


@pytest.mark.parametrize(
    "name, sources, covers",
    [
        ("seeds dominate", SOURCES, True),
        ("examples dominate", SOURCES, True),
        ("mixed, 5 seeds", SOURCES, True),
        # the broken variants: the test must catch them
        ("seeds dominate", ("examples",), False),  # no seed resampling
        ("examples dominate", ("seeds",), False),  # no example resampling (a t over seeds)
    ],
    ids=lambda v: "+".join(v) if isinstance(v, tuple) else str(v),
)
def test_the_interval_covers_the_true_difference_at_3_seeds(name, sources, covers):
    cov = _coverage(name, sources)
    if covers:
        assert 0.92 <= cov <= 0.98, f"{name}: 95 % interval covered {cov:.3f}"
    else:
        assert cov < 0.92, f"{name}, {sources} only: covered {cov:.3f}; the test cannot see it"


# -- the rest of the contract ---------------------------------------------------------------------


def _bern(rng, p, shape):
    return (rng.random(shape) < p).astype(float)


def test_same_inputs_same_interval_and_a_generator_is_accepted():
    rng = np.random.default_rng(1)
    a, b = Runs(_bern(rng, 0.8, (3, 2000))), Runs(_bern(rng, 0.75, (3, 2000)))
    e1, e2 = delta(a, b, seed=7), delta(a, b, seed=7)
    assert (e1.estimate, e1.lo, e1.hi) == (e2.estimate, e2.lo, e2.hi)
    assert np.array_equal(e1.draws, e2.draws)
    g1 = delta(a, b, seed=np.random.default_rng(3))
    g2 = delta(a, b, seed=np.random.default_rng(3))
    assert (g1.lo, g1.hi) == (g2.lo, g2.hi)
    assert e1.estimate == pytest.approx(a.scores.mean() - b.scores.mean())


def test_paired_seeds_give_a_narrower_interval_when_models_are_correlated():
    """Two losses run at the same seeds share each seed's offset: pairing keeps it out of Δ."""
    rng = np.random.default_rng(2)
    offsets = np.array([-0.08, 0.0, 0.08])[:, None]  # the seed moves both models
    diff = rng.normal(0, 1, 3000)
    a = _bern(rng, 0.7 + offsets + 0.02 * (diff > 0), (3, 3000))
    b = _bern(rng, 0.7 + offsets, (3, 3000))
    paired = delta(Runs(a, seeds=[42, 43, 44]), Runs(b, seeds=[42, 43, 44]))
    unpaired = delta(Runs(a, seeds=[42, 43, 44]), Runs(b, seeds=[52, 53, 54]))
    assert paired.estimate == unpaired.estimate
    assert paired.hi - paired.lo < 0.5 * (unpaired.hi - unpaired.lo)
    # a dict seed -> scores pairs by seed id, whatever the order given
    as_dict = delta(Runs({44: a[2], 42: a[0], 43: a[1]}), Runs(b, seeds=[42, 43, 44]))
    assert (as_dict.lo, as_dict.hi) == (paired.lo, paired.hi)


def test_one_seed_is_flagged_unless_declared_a_fixed_reference():
    rng = np.random.default_rng(3)
    student = Runs(_bern(rng, 0.70, (3, 2000)))
    teacher = _bern(rng, 0.85, (1, 2000))
    free = delta(student, Runs(teacher))
    assert free.one_seed and not free.measurable and free.excludes_zero
    assert NO_SEED_VARIANCE == "1 seed: no seed variance; not a finding"
    fixed = delta(student, Runs(teacher, fixed=True))
    assert not fixed.one_seed and fixed.measurable and fixed.n_seeds == 3
    # a one-seed model that the statistic does not use flags nothing
    unused = effect({"s": student, "t": Runs(teacher)}, {"s": 1.0})
    assert not unused.one_seed


def test_a_fixed_reference_is_resampled_over_examples_only():
    rng = np.random.default_rng(4)
    runs = _bern(rng, 0.8, (3, 1000))
    alone = {"t": Runs(runs, fixed=True)}
    assert effect(alone, {"t": 1.0}, sources=("seeds",)).se == 0  # its seeds are not drawn
    assert effect(alone, {"t": 1.0}, sources=("examples",)).se > 0
    # the same runs as a resampled model carry their seed variance too
    as_model = effect({"t": Runs(runs)}, {"t": 1.0}, sources=("seeds",))
    assert as_model.se > 0
    # a fixed teacher against itself on the same examples: one example draw for both, Δ = 0
    t = Runs(runs[:1], fixed=True)
    same = delta(t, Runs(runs[:1], fixed=True))
    assert same.lo == same.hi == 0


def test_the_change_of_a_gap_is_computed_inside_each_draw():
    rng = np.random.default_rng(5)
    a_easy, a_hard = _bern(rng, 0.9, (3, 800)), _bern(rng, 0.5, (3, 400))
    b_easy, b_hard = _bern(rng, 0.92, (3, 800)), _bern(rng, 0.4, (3, 400))
    e = delta_of_diff(
        Runs(a_easy, examples="easy"),
        Runs(a_hard, examples="hard"),
        Runs(b_easy, examples="easy"),
        Runs(b_hard, examples="hard"),
    )
    gap = (a_easy.mean() - a_hard.mean()) - (b_easy.mean() - b_hard.mean())
    assert e.estimate == pytest.approx(gap)
    assert e.lo < gap < e.hi and e.excludes_zero and excludes_zero(e)
    with pytest.raises(ValueError, match="example set"):
        delta(Runs(a_easy), Runs(a_hard))  # not aligned on the same examples


def _share_case(loss_p, vanilla_p, teacher_p, n=4000, seed=6):
    rng = np.random.default_rng(seed)
    offsets = np.array([-0.005, 0.0, 0.005])[:, None]
    loss = Runs(_bern(rng, loss_p + offsets, (3, n)))
    vanilla = Runs(_bern(rng, vanilla_p + offsets, (3, n)))
    teacher = Runs(_bern(rng, teacher_p, (1, n)), fixed=True)
    return loss, vanilla, teacher


def test_share_rules():
    s = share(*_share_case(0.70, 0.60, 0.80))  # half of the cost won back
    assert s.estimate == pytest.approx(s.gain.estimate / s.cost.estimate)
    assert s.lo < 0.5 < s.hi < 1
    text = share_text(s)
    assert text.endswith("]") and "%" in text, text
    # the cost's interval includes 0: no share
    nothing = share(*_share_case(0.61, 0.60, 0.60))
    assert not nothing.cost.excludes_zero and share_text(nothing) is None
    # the upper end passes 100 %: shown as a lower bound
    most = share(*_share_case(0.79, 0.76, 0.80))
    assert most.cost.excludes_zero and most.hi > 1
    assert share_text(most).startswith("≥ "), share_text(most)


def test_a_model_in_both_parts_of_a_share_is_drawn_once():
    loss, vanilla, teacher = _share_case(0.70, 0.60, 0.80)
    once = share(loss, vanilla, teacher)
    # the same vanilla runs taken as two unrelated models (other seed ids): wider
    twice = ratio(
        {"loss": loss, "v1": vanilla, "v2": Runs(vanilla.scores, seeds=[7, 8, 9]), "t": teacher},
        {"loss": 1.0, "v1": -1.0},
        {"t": 1.0, "v2": -1.0},
    )
    assert twice.estimate == pytest.approx(once.estimate)
    assert twice.hi - twice.lo > once.hi - once.lo


def test_t_quantiles_and_speed():
    for df, q in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423)]:
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.95996, abs=1e-5)
    rng = np.random.default_rng(8)
    a, b = Runs(_bern(rng, 0.8, (3, 10_000))), Runs(_bern(rng, 0.78, (3, 10_000)))
    start = time.perf_counter()
    delta(a, b)  # 2000 draws
    assert time.perf_counter() - start < 10  # ~0.3 s; a loop over examples would take minutes
