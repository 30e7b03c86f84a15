"""The one place where a difference between trained models becomes words, for the summary and the
wins-back tables alike.

A difference is an effect (estimate and 95 % interval from `metrics.multiboot`) with what decides
how it may be read: which direction is better; whether a model in it has one seed (no seed
variance: "1 seed: no seed variance; not a finding", never "measurable"); and whether either side
of the comparison predicts one class on >= 90 % of a split it is measured on (‡: a constant
predictor's score, read neither as a gain nor as a cost). Everything else reads "a measurable
cost", "a measurable gain" or "no measurable change" by its interval."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..metrics.multiboot import NO_COST, NO_SEED_VARIANCE, Effect, Share, share_text

COST = "a measurable cost"
GAIN = "a measurable gain"
NO_CHANGE = "no measurable change"
ONE_CLASS = "‡"

# what each verdict is, before it is worded
ONE_SEED, NONE, UNREAD, IS_GAIN, IS_COST = "one seed", "none", "unread", "gain", "cost"

INTERVALS_NOTE = (
    "Differences are in points, each with a 95 % multi-bootstrap interval: every draw resamples "
    "the training seeds (paired where two rows share them) and the examples (one draw shared by "
    "every model evaluated on them), and computes the difference, or a share, inside the draw. "
    "The teacher, the model being compressed, is a fixed reference: only its examples are "
    f"resampled. A row with one seed has no seed variance: its interval is over examples only and "
    f"it reads '{NO_SEED_VARIANCE}'."
)
ONE_CLASS_NOTE = (
    "‡ the row or the row it is compared with predicts one class on ≥ 90 % of this split: the "
    "difference is (close to) a constant predictor's score; it is read neither as a gain nor as "
    "a cost."
)


@dataclass(frozen=True)
class Diff:
    """A difference a - b of a metric between two rows, with its interval (`effect`); for
    lower-is-better metrics (gap, reliance, ECE) a drop is the gain. one_class: the splits on which
    a or b predicts one class (>= 90 %)."""

    effect: Effect
    lower_is_better: bool = False
    one_class: tuple[str, ...] = ()

    @property
    def estimate(self) -> float:
        return self.effect.estimate

    @property
    def better(self) -> float:
        """> 0: a is better than b."""
        return -self.estimate if self.lower_is_better else self.estimate

    @property
    def one_seed(self) -> bool:
        return self.effect.one_seed


@dataclass(frozen=True)
class Ratio:
    """A share computed inside each draw (`multiboot.ratio`), with the one-class splits of every
    row in it."""

    share: Share
    one_class: tuple[str, ...] = ()


def points(e: Effect) -> str:
    """`+1.2 [+0.3, +2.1]` in points (the estimate alone when there is no interval)."""
    if math.isnan(e.lo) or math.isnan(e.hi):
        return f"{100 * e.estimate:+.1f}"
    return f"{100 * e.estimate:+.1f} [{100 * e.lo:+.1f}, {100 * e.hi:+.1f}]"


def shown(d: Diff) -> str:
    """The difference as printed: points, marked ‡ where a side predicts one class."""
    return points(d.effect) + (f" {ONE_CLASS}" if d.one_class else "")


def kind(d: Diff) -> str:
    """ONE_SEED | NONE | UNREAD | IS_GAIN | IS_COST: one seed first (never a finding), then the
    interval (includes 0: no change), then a one-class side (not read either way)."""
    if d.one_seed:
        return ONE_SEED
    if not d.effect.excludes_zero:
        return NONE
    if d.one_class:
        return UNREAD
    return IS_GAIN if d.better > 0 else IS_COST


def word(d: Diff) -> str:
    k = kind(d)
    if k == UNREAD:
        return f"not read: one class on ≥ 90 % of {', '.join(d.one_class)}"
    return {ONE_SEED: NO_SEED_VARIANCE, NONE: NO_CHANGE, IS_GAIN: GAIN, IS_COST: COST}[k]


def measurable(d: Diff | None) -> bool:
    """A gain or a cost that may be read: interval excludes 0, seed variance, no one-class side."""
    return d is not None and kind(d) in (IS_GAIN, IS_COST)


def one_seed(named: Iterable[tuple[str, Diff | None]]) -> str:
    """A comparison that has one seed, its differences listed without a verdict."""
    listed = "; ".join(f"{n} {shown(d)}" for n, d in named if d is not None)
    return f"{NO_SEED_VARIANCE} (intervals over examples only): {listed}"


def against(named: Iterable[tuple[str, Diff]]) -> str:
    """A row against its reference, metric by metric: `name ±x [lo, hi] (verdict)`."""
    return "; ".join(f"{n} {shown(d)} ({word(d)})" for n, d in named)


def recovery(
    change: Diff, cost: Diff | None, name: str, vs: str, share: Ratio | None = None
) -> str:
    """A loss's change of a metric against its compression's reference row (`vs`), read against
    what the compression cost of it (the reference against the teacher): a cost whose interval
    includes 0 is no measurable cost, a change whose interval includes 0 no measurable recovery.
    With a share (computed in the same draws): "wins back <share> of the <cost>", the cost and the
    gain printed beside it taken on the share's own examples and seeds."""
    text = f"{shown(change)} vs {vs}"
    k = kind(change)
    if k in (ONE_SEED, UNREAD) or cost is None:
        return f"{name} {text} ({word(change)})"
    if kind(cost) != IS_COST:
        if kind(cost) == NONE:
            return f"no measurable {name} cost to recover; {name} {text} ({word(change)})"
        return f"{name} {text} ({word(change)})"
    lost = 100 * abs(cost.estimate)
    if k == NONE:
        return f"no measurable recovery of the {lost:.1f}-point {name} cost ({text})"
    if k == IS_COST:
        return f"adds to the {lost:.1f}-point {name} cost ({text})"
    if share is not None and (s := share_text(share.share)) is not None and not share.one_class:
        own = 100 * abs(share.share.cost.estimate)
        return (
            f"wins back {s} of the {own:.1f}-point {name} cost ({points(share.share.gain)} vs {vs})"
        )
    gained = 100 * change.better
    if gained >= lost:
        return f"recovers all of the {lost:.1f}-point {name} cost, and more ({text})"
    return f"recovers {gained:.1f} of the {lost:.1f}-point {name} cost ({text})"


def share_cell(r: Ratio | None, none: str = NO_COST) -> str:
    """A share in a table: `none` where its cost's interval includes 0 (no share is printed),
    "≥ lo %" where its upper end passes 100 %, else "x % [lo, hi]"; ‡ where a row in it predicts one
    class, "(1 seed)" where a one-seed row enters it."""
    if r is None:
        return "–"
    s = share_text(r.share)
    if s is None:
        return none
    return s + (f" {ONE_CLASS}" if r.one_class else "") + (" (1 seed)" if r.share.one_seed else "")


def elsewhere(name: str, d: Diff) -> str:
    """What a loss that wins on one bias model's hard examples does on another's."""
    k = kind(d)
    if k in (IS_GAIN, IS_COST):
        how = "also on" if k == IS_GAIN else "but loses on"
        return f"{how} the {name} split's hard examples ({shown(d)})"
    if k == NONE:
        return f"not measurably on the {name} split's hard examples ({shown(d)})"
    return f"on the {name} split's hard examples {shown(d)} ({word(d)})"


def kept(label: str, r: Ratio) -> str | None:
    """What a compressed model keeps of its teacher's gain, the gain printed taken on the share's
    own examples (its denominator); None where there is no share to read."""
    s = share_text(r.share)
    if s is None or r.one_class or r.share.one_seed:
        return None
    gain = points(r.share.cost)
    if r.share.lo > 0:
        return f"{label}: keeps {s} of the teacher's {gain}"
    return f"{label}: keeps no measurable share of the teacher's {gain} ({s})"


def wins_back_verdict(
    eff: dict[str, Diff | None],
    cost: Diff | None,
    share: Ratio | None,
    cells: list[tuple[str, str]],
    others: dict[str, Diff | None],
    target: tuple[float, float] | None = None,
) -> str:
    """A loss's row of the wins-back table in words: the hard-example cost it wins back (or not),
    the ID change, the shortcut cells, cue reliance and ECE that changed measurably; one seed: no
    verdict at all. target: (share, ID cost) that "meets the target" asks for."""
    hard, acc = eff.get("hard"), eff.get("acc_id")
    if any(d is not None and d.one_seed for d in (hard, acc)):
        return one_seed([("Δ hard", hard), ("Δ ID", acc)])
    parts = []
    if hard is not None:
        parts.append(recovery(hard, cost, "hard-example", "Vanilla", share))
        if kind(hard) == IS_GAIN and cost is not None and kind(cost) == IS_COST:
            parts += [elsewhere(n, d) for n, d in others.items() if d is not None]
    if acc is not None:
        if measurable(acc):
            parts.append(f"ID {shown(acc)}")
        else:
            parts.append("no measurable ID change" if kind(acc) == NONE else f"ID {word(acc)}")
    unread = set()
    for m, label in cells:
        d = eff.get(m)
        if d is not None and kind(d) == UNREAD:
            unread.update(d.one_class)
        elif measurable(d):
            parts.append(f"{label} {shown(d)}")
    parts += [
        f"its {s} changes are not read: one class on {s} ({ONE_CLASS})" for s in sorted(unread)
    ]
    rel = eff.get("reliance")
    if measurable(rel):
        parts.append(f"cue reliance {'cut' if kind(rel) == IS_GAIN else 'raised'} ({shown(rel)})")
    ece = eff.get("ece")
    if measurable(ece):
        parts.append(f"ECE {shown(ece)}")
    s = share.share if share is not None else None
    if (
        target is not None
        and s is not None
        and share_text(s) is not None
        and not share.one_class
        and hard is not None
        and kind(hard) == IS_GAIN
        and s.estimate >= target[0]
        and s.lo > 0
        and acc is not None
        and acc.estimate >= -target[1]
    ):
        parts.append("meets the target")
    return "; ".join(parts)
