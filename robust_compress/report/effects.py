"""Differences between a study's rows, each with its multi-bootstrap interval (`metrics.multiboot`).

Every side's runs become per-seed, per-example scores of the metric on the examples all sides of
the comparison share; rows with the same seeds are paired by seed; the study's teacher (the model
being compressed) is a fixed reference whose examples alone are resampled. A share (gain / cost)
is computed inside the same draws, a row in both of its parts drawn once. Each difference is
computed once per report: the summary and the wins-back tables read the same numbers."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import example_scores, metric_parts, metric_weights
from ..metrics.multiboot import Effect, Runs, effect, ratio
from .compute import Rows
from .load import Run
from .tables import constant
from .verdict import Diff, Ratio

LOWER_IS_BETTER = frozenset({"gap", "reliance", "ece"})
N_BOOT = 2000  # draws per difference; the seed is fixed: a report rebuilds to the same text


@dataclass(frozen=True, eq=False)
class Side:
    """One side of a comparison: a row's runs (one per seed). fixed: a given model, not a draw from
    training seeds (the teacher being compressed): only its examples are resampled."""

    runs: tuple[Run, ...]
    fixed: bool = False

    @property
    def key(self) -> tuple:
        return tuple(r.name for r in self.runs), self.fixed


def side(runs: Iterable[Run], fixed: bool | None = None) -> Side:
    """A side; by default fixed when it is the study's teacher."""
    runs = tuple(runs)
    return Side(runs, all(r.is_teacher for r in runs) if fixed is None else fixed)


def _splits(metric: str, run: Run, easy: pd.DataFrame | None) -> set[str]:
    """The splits a metric of a run is measured on (for the one-class check)."""
    if metric.startswith(("cell:", "acc:")):
        return {metric.split(":")[1]}
    if metric == "acc_ood":
        return {s for s in run.rule.get("splits", []) if s in run.tables}
    if metric in ("hard", "easy", "gap"):
        return {easy.attrs["split"]} if easy is not None else set()
    if metric == "reliance":
        return {f"{run.id_split}+cue_aligned", f"{run.id_split}+cue_conflicting"}
    return {run.id_split} if run.id_split else set()


def _arms(
    metric: str, sides: list[Side], easy: pd.DataFrame | None
) -> tuple[dict[str, Runs], list[dict[str, float]]] | None:
    """The models of a comparison as multi-bootstrap `Runs` (one per side and part of the metric,
    aligned on the examples every run shares) and, per side, the metric as weights on them; None
    when a run lacks the metric or the sides share no example."""
    parts = []
    for s in sides:
        mine = [metric_parts(r.tables, r.roles, r.id_split, metric, easy, r.rule) for r in s.runs]
        if not mine or any(p is None for p in mine):
            return None
        parts.append(mine)
    keys = list(parts[0][0])
    if any(list(p) != keys for mine in parts for p in mine):
        return None  # e.g. a mean over sets that a run lacks some of
    shared = {
        k: functools.reduce(
            lambda x, y: x.intersection(y), [p[k].index for mine in parts for p in mine]
        )
        for k in keys
    }
    if any(len(idx) == 0 for idx in shared.values()):
        return None
    weights = metric_weights(metric, keys)
    arms, sums = {}, []
    for i, (s, mine) in enumerate(zip(sides, parts, strict=True)):
        seeds: list = [r.seed for r in s.runs]
        if len(set(seeds)) < len(seeds):  # runs of one row at one seed: pair them with nothing
            seeds = [(r.seed, r.name) for r in s.runs]
        w = {}
        for k in keys:
            scores = np.vstack([example_scores(k, p[k].loc[shared[k]]) for p in mine])
            arms[f"{i}/{k}"] = Runs(scores, seeds=seeds, examples=k, fixed=s.fixed)
            w[f"{i}/{k}"] = weights[k]
        sums.append(w)
    return arms, sums


class Effects:
    """The differences of one report, cached on its `Rows`."""

    def __init__(self, rows: Rows, n_boot: int = N_BOOT, seed: int = 0):
        self.rows, self.cache, self.n_boot, self.seed = rows, rows.differences, n_boot, seed

    def _one_class(self, metric: str, sides: list[Side], easy) -> tuple[str, ...]:
        """The splits of the metric on which a row of the comparison predicts one class."""
        out = set()
        for s in sides:
            g = self.rows.groups.get(s.runs[0].unit, {})
            out |= {sp for sp in _splits(metric, s.runs[0], easy) if constant(g, sp)}
        return tuple(sorted(out))

    def diff(self, a: Side, b: Side, metric: str, easy=None) -> Diff | None:
        """a - b of the metric; None when either side lacks it."""
        key = ("diff", metric, id(easy), a.key, b.key)
        if key not in self.cache:
            built = _arms(metric, [a, b], easy)
            if built is None:
                self.cache[key] = None
            else:
                arms, (wa, wb) = built
                e = effect(
                    arms, wa | {k: -v for k, v in wb.items()}, n_boot=self.n_boot, seed=self.seed
                )
                self.cache[key] = Diff(
                    e, metric in LOWER_IS_BETTER, self._one_class(metric, [a, b], easy)
                )
        return self.cache[key]

    def level(self, a: Side, metric: str, easy=None) -> Effect | None:
        """The row's own mean of the metric over its seeds and examples, with its multi-bootstrap
        interval (where another run of the same row should land); None when it lacks the
        metric."""
        key = ("level", metric, id(easy), a.key)
        if key not in self.cache:
            built = _arms(metric, [a], easy)
            self.cache[key] = (
                None
                if built is None
                else effect(built[0], built[1][0], n_boot=self.n_boot, seed=self.seed)
            )
        return self.cache[key]

    def share(
        self, num: tuple[Side, Side], den: tuple[Side, Side], metric: str, easy=None
    ) -> Ratio | None:
        """(num[0] - num[1]) / (den[0] - den[1]) of the metric, both computed in each draw on the
        examples all rows share; a row in both (Vanilla in a share of its cost) is drawn once."""
        sides: list[Side] = []
        for s in (*num, *den):
            if all(s.key != x.key for x in sides):
                sides.append(s)
        at = {s.key: i for i, s in enumerate(sides)}
        key = ("share", metric, id(easy), *(s.key for s in (*num, *den)))
        if key not in self.cache:
            built = _arms(metric, sides, easy)
            if built is None:
                self.cache[key] = None
            else:
                arms, sums = built

                def contrast(pair: tuple[Side, Side]) -> dict[str, float]:
                    w: dict[str, float] = defaultdict(float)
                    for sign, s in ((1.0, pair[0]), (-1.0, pair[1])):
                        for k, v in sums[at[s.key]].items():
                            w[k] += sign * v
                    return dict(w)

                sh = ratio(arms, contrast(num), contrast(den), n_boot=self.n_boot, seed=self.seed)
                self.cache[key] = Ratio(sh, self._one_class(metric, sides, easy))
        return self.cache[key]
