"""A controlled synthetic shortcut: a marker word appended to text_b that agrees with the gold label
for a fraction `rho` of training examples (random otherwise). Reliance on it is measured as
acc(marker = gold) - acc(marker = another label) on copies of an ID split.

Every choice is drawn from `random.Random(data_seed)`, so the same config gives the same cue.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from ..io import UserError

DEFAULT_MARKERS = ["zeta", "omega", "sigma", "kappa", "delta"]


class CueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rho: float = Field(
        0.8, ge=0, le=1, description="share of training pairs whose marker is the gold label's"
    )
    markers: list[str] | None = Field(
        None, description="one marker word per label; default: fixed rare words"
    )
    per_example: bool = Field(
        False,
        description="draw each example's marker from (data_seed, its id), not "
        "from one sequence: nested subsets then carry the same markers, so a bias "
        "model trained on more pairs saw the very texts a smaller run trains on",
    )


def cue_markers(cue: CueConfig, labels: list[str]) -> list[str]:
    markers = cue.markers or DEFAULT_MARKERS[: len(labels)]
    if len(markers) != len(labels) or len(set(markers)) != len(markers):
        raise UserError(
            f"cue.markers must be {len(labels)} distinct words (one per label), got {markers}"
        )
    return markers


def add_cue(
    examples: list[dict], markers: list[str], rho: float, seed: int, per_example: bool = False
) -> list[dict]:
    """Training transform: append the gold label's marker with probability rho, else a random
    one."""
    rng = random.Random(seed)
    out = []
    for e in examples:
        r = random.Random(f"{seed}:{e['id']}") if per_example else rng
        m = markers[e["label"]] if r.random() < rho else r.choice(markers)
        out.append(e | {"text_b": f"{e['text_b']} {m}"})
    return out


def cue_copies(
    examples: list[dict], markers: list[str], seed: int
) -> tuple[list[dict], list[dict]]:
    """Aligned (marker = gold) and conflicting (marker of another, random label) copies of
    examples."""
    rng = random.Random(seed)
    aligned = [e | {"text_b": f"{e['text_b']} {markers[e['label']]}"} for e in examples]
    conflicting = []
    for e in examples:
        other = rng.choice([i for i in range(len(markers)) if i != e["label"]])
        conflicting.append(e | {"text_b": f"{e['text_b']} {markers[other]}"})
    return aligned, conflicting
