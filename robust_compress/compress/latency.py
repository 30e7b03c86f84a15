"""What removing one attention head or one FFN neuron saves: encoder FLOPs (counted), or latency on
a named runtime (measured on this machine, cached).

Both are a `Costs`: the encoder costs fixed + head x (heads left) + neuron x (neurons left), summed
over layers. For FLOPs this is exact. For latency it is a per-layer latency table: copies of the
model whose every layer keeps the same number of heads and neurons (a small grid) are timed side by
side on the runtime (`models.runtimes.time_on`), and one layer's head and neuron costs are fitted
by least squares (ZipLM and Kwon et al. 2022 prune against such a table). Copies time the runtime's
whole path (embeddings, classifier, the runtime's own overhead: the fixed part), so the table
predicts what the speed stage will measure, not a micro-benchmark of one layer.

The table is cached as `<cache_dir>/latency/<key>.json`. Its key: the machine (platform, CPU model,
threads, GPU), the runtime and its library versions, the model's shape and the timing workload. A
changed runtime, machine or shape is another key: it is measured anew; the same one is read back.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.batching import EncodedSplit
from ..io import UserError, digest, read_json, write_json
from ..models.families import (
    blocks,
    encoder_flops,
    family_of,
    ffn_width,
    head_size,
    max_positions,
    n_heads,
    per_head_projections,
)
from ..models.pruned import prune_ffn_neurons, prune_heads
from ..models.runtimes import machine, runtime_versions, time_on

TABLE_EXAMPLES, TABLE_BATCH, TABLE_REPEATS = 128, 32, 3  # the timing workload (in the key)
# how the costs are fitted (in the key: a new fit re-measures)
FIT = "least squares, no negative part"


@dataclass(frozen=True)
class Costs:
    """Encoder cost = fixed + head x heads + neuron x neurons; `dense`: the unpruned model's
    cost."""

    head: float
    neuron: float
    fixed: float
    dense: float
    unit: str = "flops"  # or "seconds/example on <runtime>"

    def total(self, heads: float, neurons: float) -> float:
        return self.fixed + heads * self.head + neurons * self.neuron


def unit_counts(model) -> tuple[int, int]:
    """Heads and FFN neurons the model has now."""
    fam = family_of(model)
    return sum(n_heads(b, fam) for b in blocks(model)), sum(
        ffn_width(b, fam) for b in blocks(model)
    )


def flops_costs(model, seq_len: int = 128) -> Costs:
    """FLOPs of one head, one FFN neuron and of everything else in the encoder at `seq_len` tokens
    (`models.families.encoder_flops`' count: projections plus QK^T and AV)."""
    fam = family_of(model)
    block = blocks(model)[0]
    d, dh = model.config.hidden_size, head_size(block, fam)
    head = 2 * seq_len * per_head_projections(block, fam) * d * dh + 2 * 2 * seq_len * seq_len * dh
    neuron = 2 * seq_len * 2 * d  # in and out projections
    heads, neurons = unit_counts(model)
    dense = encoder_flops(model, seq_len)["flops_dense"]
    return Costs(head, neuron, dense - heads * head - neurons * neuron, dense)


# ---------------------------------------------------------------- the latency table


def shape(model) -> dict[str, Any]:
    """What a model's speed depends on besides its weights."""
    fam = family_of(model)
    c = model.config
    return {
        "type": getattr(c, "base_model_type", None) or c.model_type,
        "hidden": c.hidden_size,
        "vocab": c.vocab_size,
        "heads": [n_heads(b, fam) for b in blocks(model)],
        "head_size": head_size(blocks(model)[0], fam),
        "neurons": [ffn_width(b, fam) for b in blocks(model)],
        "labels": c.num_labels,
    }


def _workload(model, seq_len: int) -> tuple[EncodedSplit, dict[str, int]]:
    """Fixed synthetic inputs: TABLE_EXAMPLES sequences of `seq_len` tokens (capped by the
    positions)."""
    limit = max_positions(model.config)
    length = min(seq_len, limit) if limit else seq_len
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (TABLE_EXAMPLES, length), generator=g)
    split = EncodedSplit.__new__(EncodedSplit)
    split.features = [
        {
            "input_ids": r.tolist(),
            "attention_mask": [1] * length,
            "token_type_ids": [0] * length,
            "labels": 0,
            "row": i,
        }
        for i, r in enumerate(ids)
    ]
    split.lengths = [length] * TABLE_EXAMPLES
    return split, {
        "examples": TABLE_EXAMPLES,
        "tokens": length,
        "batch_size": TABLE_BATCH,
        "repeats": TABLE_REPEATS,
    }


def _grid(heads: int, neurons: int) -> list[tuple[int, int]]:
    """Per-layer shapes to time: heads varied at full width, neurons varied at all heads."""
    points = [
        (heads, neurons),
        (max(1, heads // 2), neurons),
        (1, neurons),
        (heads, max(1, neurons // 2)),
        (heads, max(1, neurons // 8)),
    ]
    return list(dict.fromkeys(points))


def _uniform(model, heads: int, neurons: int):
    """A copy whose every layer keeps exactly `heads` heads and `neurons` neurons (which ones does
    not matter for speed: the last ones go)."""
    m = copy.deepcopy(model).cpu().eval()
    fam = family_of(m)
    prune_heads(
        m,
        {
            i: list(range(heads, n_heads(b, fam)))
            for i, b in enumerate(blocks(m))
            if n_heads(b, fam) > heads
        },
    )
    prune_ffn_neurons(
        m,
        {
            i: list(range(neurons, ffn_width(b, fam)))
            for i, b in enumerate(blocks(m))
            if ffn_width(b, fam) > neurons
        },
    )
    return m


def latency_table(
    model, runtime: str, seq_len: int = 128, cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """The model's per-layer latency table on `runtime` on this machine: read from the cache when
    this machine, runtime and shape were measured before, else measured (and cached)."""
    data, workload = _workload(model, seq_len)
    ident = {
        "machine": machine(),
        "runtime": runtime,
        "versions": runtime_versions(runtime),
        "shape": shape(model),
        "workload": workload,
        "fit_method": FIT,
    }
    key = digest(ident)
    path = Path(cache_dir) / "latency" / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        table = read_json(path)
        if isinstance(table, dict) and table.get("key") == key and "fit" in table:
            return table
    layers = len(blocks(model))
    have_heads, have_neurons = min(shape(model)["heads"]), min(shape(model)["neurons"])
    grid = _grid(have_heads, have_neurons)
    entries = {f"{h}x{f}": (_uniform(model, h, f), data) for h, f in grid}
    rates, missing = time_on(entries, runtime, batch_size=TABLE_BATCH, repeats=TABLE_REPEATS)
    if missing:
        raise UserError(
            f"latency table on {runtime}: the runtime cannot run this model "
            f"({next(iter(missing.values()))})"
        )
    rows = [
        {"heads": h, "neurons": f, "seconds_per_example": 1.0 / rates[f"{h}x{f}"]} for h, f in grid
    ]
    table = ident | {"key": key, "layers": layers, "rows": rows, "fit": _fit(rows, layers)}
    if path is not None:
        write_json(path, table)
    return table


def _fit(rows: list[dict], layers: int) -> dict[str, Any]:
    """seconds/example = fixed + layers x (head x heads + neuron x neurons), least squares with no
    negative part: a fixed part the fit puts below 0 is refitted at 0, a slope the noise makes
    non-positive is clamped to a tiny positive cost (each said so under `clamped`)."""
    a = np.array([[1.0, layers * r["heads"], layers * r["neurons"]] for r in rows])
    y = np.array([r["seconds_per_example"] for r in rows])
    (fixed, head, neuron), *_ = np.linalg.lstsq(a, y, rcond=None)
    clamped = []
    if fixed < 0:
        (head, neuron), *_ = np.linalg.lstsq(a[:, 1:], y, rcond=None)
        fixed, clamped = 0.0, ["fixed"]
    floor = 1e-6 * float(y.max()) / max(1.0, float(a[0, 1] + a[0, 2]))
    clamped += [k for k, v in (("head", head), ("neuron", neuron)) if v < floor]
    head, neuron = max(float(head), floor), max(float(neuron), floor)
    residual = float(np.abs(a @ np.array([fixed, head, neuron]) - y).max() / y.max())
    return {
        "fixed": float(fixed),
        "head": head,
        "neuron": neuron,
        "max_relative_residual": residual,
        "clamped": clamped,
    }


def table_costs(table: dict[str, Any], model) -> Costs:
    """The table's fit as `Costs` of `model` (seconds per example on the table's runtime)."""
    fit = table["fit"]
    heads, neurons = unit_counts(model)
    dense = fit["fixed"] + heads * fit["head"] + neurons * fit["neuron"]
    return Costs(
        fit["head"],
        fit["neuron"],
        fit["fixed"],
        dense,
        unit=f"seconds/example on {table['runtime']}",
    )


def speed_target(
    model, speedup: float, runtime: str, seq_len: int, cache_dir: str | Path | None
) -> tuple[Costs, float, dict[str, Any]]:
    """A speed-up on `runtime` as (latency costs, fraction of the dense latency to keep, record);
    refused when even one head and one neuron per layer would not reach it."""
    table = latency_table(model, runtime, seq_len, cache_dir)
    costs = table_costs(table, model)
    layers = table["layers"]
    best = costs.dense / costs.total(layers, layers)
    if speedup > best:
        raise UserError(
            f"a {speedup}x speed-up on {runtime} is beyond pruning heads and FFN neurons here: its "
            f"latency table predicts at most {best:.2f}x (one head and one neuron per layer; the "
            f"rest of the model is {costs.fixed / costs.dense:.0%} of the dense latency)"
        )
    return (
        costs,
        1.0 / speedup,
        {
            "runtime": runtime,
            "table": table["key"],
            "fit": table["fit"],
            "rows": table["rows"],
            "predicted_max_speedup": round(best, 3),
        },
    )


def predicted_speedup(costs: Costs, model) -> float:
    """The dense cost over this model's, by `costs` (a latency table's prediction for latency
    costs)."""
    heads, neurons = unit_counts(model)
    return (
        costs.dense / costs.total(heads, neurons) if costs.total(heads, neurons) > 0 else math.inf
    )
