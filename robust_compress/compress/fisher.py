"""`fisher`: retraining-free structured pruning (Kwon et al. 2022, "A Fast Post-Training Pruning
Framework for Transformers"), and the start `structured` recovers from with `init: fisher`.

1. Importance: the diagonal empirical Fisher information of a mask variable on every head and FFN
   neuron, I_u = E_x (dL(x)/dm_u)^2 at m = 1, from per-example gradients (per-example gates: one
   backward per batch) of the cross-entropy with the gold labels, on `samples` training examples, no
   dropout. Removing a set Z of units costs about 1/2 sum_{u in Z} I_u of loss (second order,
   diagonal), so heads and neurons are ranked on one scale.
2. Mask search to a budget: each layer keeps its most important head and neuron (the surgery needs
   one of each); the rest are ranked globally, and for every count of heads kept the neurons fill
   what the budget leaves; the count keeping the most importance wins. The budget is a fraction of
   the encoder's FLOPs, or of its latency on a runtime (`compress.latency`): the cost kept is at
   most the budget and within one neuron's cost of it.
3. Mask rescaling: layer by layer, in order, the kept heads (then neurons) of each sub-layer get one
   scale each: the least-squares fit of the pruned sub-layer's output plus residual (the input of
   the LayerNorm it ends in) to the dense model's, on the pruned model's own inputs so later layers
   make up for earlier ones. The last FFN is fitted on the first token only (all the classifier
   reads). An unsolvable system or a scale outside [-10, 10] leaves that sub-layer as it was. Scales
   fold into the output projection's columns: the result is a plain pruned model.
Units are removed physically (`models.pruned`) for every family (`models.families`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from ..data.batching import EncodedSplit
from ..io import UserError
from ..models.families import blocks, encoder_flops, family_of, ffn_width, get_path, n_heads
from ..models.infer import model_inputs
from ..models.pruned import prune_ffn_neurons, prune_heads
from ..settings.methods import FISHER_BATCH as BATCH
from ..settings.methods import FisherConfig
from .base import Method, Prepare
from .latency import Costs, flops_costs, predicted_speedup, speed_target, unit_counts
from .structured import _gate_importance, train_batches

MAX_SCALE = 10.0


# ---------------------------------------------------------------- importance and search


def fisher_importance(model, batches: list[dict]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, E_x (dL/dm)^2 of each head's and each FFN neuron's mask (the diagonal empirical
    Fisher)."""
    fam = family_of(model)
    bl = blocks(model)
    sites = [(get_path(b, fam.attn_out), n_heads(b, fam)) for b in bl] + [
        (get_path(b, fam.ffn_out), ffn_width(b, fam)) for b in bl
    ]
    imp = _gate_importance(model, batches, sites, None, len(batches), power=2)
    return imp[: len(bl)], imp[len(bl) :]


def _ranked(importance: list[torch.Tensor]) -> tuple[list[int], list[tuple[float, int, int]]]:
    """Each layer's most important unit (always kept), and every other unit, most important
    first."""
    base = [int(torch.argmax(t)) for t in importance]
    rest = sorted(
        (
            (-float(t[u]), layer, u)
            for layer, t in enumerate(importance)
            for u in range(len(t))
            if u != base[layer]
        )
    )
    return base, [(-v, layer, u) for v, layer, u in rest]


def search(
    head_imp: list[torch.Tensor], neuron_imp: list[torch.Tensor], costs: Costs, budget: float
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Heads and neurons to REMOVE per layer (current numbering): the most Fisher importance kept at
    a cost of at most `budget` (one head and one neuron per layer always stay)."""
    layers = len(head_imp)
    base_h, rest_h = _ranked(head_imp)
    base_n, rest_n = _ranked(neuron_imp)
    floor = costs.total(layers, layers)
    if budget < floor:
        raise UserError(
            f"fisher: a budget of {budget / costs.dense:.3f} of the dense cost is below what one "
            f"head and one neuron per layer cost ({floor / costs.dense:.3f})"
        )
    kept_h = np.concatenate([[0.0], np.cumsum([v for v, _, _ in rest_h])])
    kept_n = np.concatenate([[0.0], np.cumsum([v for v, _, _ in rest_n])])
    best = (-1.0, 0, 0)
    for k in range(len(rest_h) + 1):
        left = budget - costs.total(layers + k, layers)
        if left < 0:
            break
        f = min(len(rest_n), int(left // costs.neuron))
        while f > 0 and costs.total(layers + k, layers + f) > budget:  # floor division's rounding
            f -= 1
        if kept_h[k] + kept_n[f] > best[0]:
            best = (float(kept_h[k] + kept_n[f]), k, f)
    _, k, f = best
    keep_h = {(layer, u) for layer, u in enumerate(base_h)} | {
        (layer, u) for _, layer, u in rest_h[:k]
    }
    keep_n = {(layer, u) for layer, u in enumerate(base_n)} | {
        (layer, u) for _, layer, u in rest_n[:f]
    }
    drop_h = {
        layer: [u for u in range(len(t)) if (layer, u) not in keep_h]
        for layer, t in enumerate(head_imp)
    }
    drop_n = {
        layer: [u for u in range(len(t)) if (layer, u) not in keep_n]
        for layer, t in enumerate(neuron_imp)
    }
    return {k_: v for k_, v in drop_h.items() if v}, {k_: v for k_, v in drop_n.items() if v}


# ---------------------------------------------------------------- rescaling


class _Stop(Exception):
    """Raised by a hook once what a pass needs is captured: the rest of the forward is skipped."""


def _forward(model, batch: dict, hooks: list[tuple[torch.nn.Module, Any]]) -> None:
    handles = [m.register_forward_pre_hook(h) for m, h in hooks]
    try:
        model(**model_inputs(model, batch))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()


def _capture(out: dict, key: str, stop: bool = False):
    def hook(module, args):
        out[key] = args[0].detach().float()
        if stop:
            raise _Stop

    return hook


def _tokens(batch: dict, first_only: bool) -> torch.Tensor:
    """[batch, length] bool: the tokens a fit uses (the first one only where nothing else is
    read)."""
    mask = batch["attention_mask"].bool()
    if first_only:
        mask = torch.zeros_like(mask)
        mask[:, 0] = True
    return mask


@torch.no_grad()
def rescale(pruned, dense, batches: list[dict]) -> dict[str, Any]:
    """Fit one scale per kept head and neuron, sub-layer by sub-layer (see module doc). Returns the
    summed squared error of the sub-layers' outputs before and after (each on its fitted inputs)."""
    fam = family_of(pruned)
    pruned.eval()
    dense.eval()
    pb, db = blocks(pruned), blocks(dense)
    record = {"sublayers": 0, "skipped": 0, "error_before": 0.0, "error_after": 0.0}
    for layer in range(len(pb)):
        targets = []  # the dense model's LayerNorm inputs in this layer, per batch
        for b in batches:
            got: dict[str, torch.Tensor] = {}
            _forward(
                dense,
                b,
                [
                    (get_path(db[layer], fam.attn_norm), _capture(got, "attn")),
                    (get_path(db[layer], fam.ffn_norm), _capture(got, "ffn", stop=True)),
                ],
            )
            targets.append(got)
        for kind, out_path, norm_path in (
            ("attn", fam.attn_out, fam.attn_norm),
            ("ffn", fam.ffn_out, fam.ffn_norm),
        ):
            proj = get_path(pb[layer], out_path)
            units = n_heads(pb[layer], fam) if kind == "attn" else ffn_width(pb[layer], fam)
            w = proj.weight.double().view(proj.out_features, units, -1)  # [d, units, unit width]
            ww = torch.einsum("du,dv->uv", w[..., 0], w[..., 0]) if kind == "ffn" else None
            gram = torch.zeros(units, units, dtype=torch.float64)
            rhs = torch.zeros(units, dtype=torch.float64)
            rr = 0.0
            for b, t in zip(batches, targets, strict=True):
                m = _tokens(b, first_only=kind == "ffn" and layer == len(pb) - 1)
                got = {}
                _forward(
                    pruned,
                    b,
                    [
                        (proj, _capture(got, "z")),
                        (get_path(pb[layer], norm_path), _capture(got, "s", stop=True)),
                    ],
                )
                z = (
                    got["z"][m].double().view(int(m.sum()), units, -1)
                )  # [tokens, units, unit width]
                g, c, total = _normal_equations(z, w, ww)
                r = t[kind][m].double() - (
                    got["s"][m].double() - total
                )  # what the kept units should add up to
                gram += g
                rhs += (
                    torch.einsum("nud,nd->u", c, r)
                    if ww is None
                    else ((r @ w[..., 0]) * z[..., 0]).sum(0)
                )
                rr += float((r * r).sum())
            scale = _solve(gram, rhs)
            ones = torch.ones(units, dtype=torch.float64)
            before = float(ones @ gram @ ones - 2 * ones @ rhs + rr)
            record["sublayers"] += 1
            record["error_before"] += before
            if scale is None:
                record["skipped"] += 1
                record["error_after"] += before
                continue
            record["error_after"] += float(scale @ gram @ scale - 2 * scale @ rhs + rr)
            proj.weight.view(proj.out_features, units, -1).mul_(
                scale.to(proj.weight.dtype).view(1, units, 1)
            )
    return record


def _normal_equations(z: torch.Tensor, w: torch.Tensor, ww: torch.Tensor | None):
    """C^T C for the units' contributions C[n, u] = W_u z_nu (their outputs, summed by the
    projection), the contributions themselves when small (heads: C is [tokens, heads, d]; None for
    neurons, where C^T C = (Z^T Z) * (W^T W) and C^T r = sum_n z_n * (W^T r_n) avoid a [tokens,
    neurons, d] tensor), and the projection's output without its bias (sum_u C[n, u])."""
    if ww is None:
        c = torch.einsum("nuk,duk->nud", z, w)
        return torch.einsum("nud,nvd->uv", c, c), c, c.sum(1)
    a = z[..., 0]
    return (a.T @ a) * ww, None, a @ w[..., 0].T


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor | None:
    """argmin_m |C m - r|^2 from C^T C and C^T r (lightly damped); None when not a usable
    scaling."""
    k = len(rhs)
    damp = 1e-9 * float(torch.diagonal(gram).mean().clamp_min(1e-30))
    try:
        m = torch.linalg.solve(gram + damp * torch.eye(k, dtype=gram.dtype), rhs)
    except RuntimeError:
        return None
    if not torch.isfinite(m).all() or float(m.abs().max()) > MAX_SCALE:
        return None
    return m


# ---------------------------------------------------------------- the method


def fisher_work(
    samples: int, rescale_on: bool, rescale_examples: int, n_train: int, layers: int
) -> dict[str, float]:
    """A backward pass per sample; the rescaling about 3 forward passes of its examples per layer,
    each stopping at that layer (1.5 x layers full passes)."""
    n = min(samples, n_train)
    return {"train": n, "infer": 1.5 * layers * min(rescale_examples, n) if rescale_on else 0}


def fisher_prune(
    model,
    data: EncodedSplit,
    seed: int,
    target: float,
    costs: Costs,
    samples: int = 2048,
    rescale_on: bool = True,
    rescale_examples: int = 512,
) -> tuple[Any, dict[str, Any]]:
    """Prune `model` in place to `target` of its dense cost (`costs`: FLOPs or a runtime's latency)
    by the Fisher mask search, then rescale; returns the model (now its pruned type) and a
    record."""
    if data is None or len(data) == 0:
        raise UserError("fisher pruning needs training examples")
    batches = train_batches(data, BATCH, math.ceil(samples / BATCH), seed)
    head_imp, neuron_imp = fisher_importance(model, batches)
    drop_h, drop_n = search(head_imp, neuron_imp, costs, target * costs.dense)
    dense = copy.deepcopy(model).eval() if rescale_on else None
    prune_heads(model, drop_h)
    prune_ffn_neurons(model, drop_n)
    heads, neurons = unit_counts(model)
    record: dict[str, Any] = {
        "samples": sum(len(b["labels"]) for b in batches),
        "heads_kept": heads,
        "neurons_kept": neurons,
        "cost_kept": costs.total(heads, neurons) / costs.dense,
        "cost_unit": costs.unit,
    }
    if rescale_on:
        record["rescale"] = rescale(model, dense, batches[: math.ceil(rescale_examples / BATCH)])
    return model, record


class Fisher(Method):
    """Retraining-free: Fisher mask search to a FLOPs or latency budget, rescaling, removal (module
    doc)."""

    name = "fisher"
    Config = FisherConfig
    trains = False
    needs_data = True

    def apply(self, model, ctx: Prepare):
        c = self.cfg
        self.flops_before = encoder_flops(model, c.seq_len)["flops_dense"]
        self.costs, self.target, self.calibration = (
            flops_costs(model, c.seq_len),
            c.target_flops,
            None,
        )
        if c.target_speedup is not None:
            self.costs, self.target, self.calibration = speed_target(
                model, c.target_speedup, c.target_runtime, c.seq_len, ctx.cache_dir
            )
        model, self.fisher = fisher_prune(
            model,
            ctx.data,
            ctx.seed,
            self.target,
            self.costs,
            c.samples,
            c.rescale,
            c.rescale_examples,
        )
        return model.eval()

    def extra_work(self, n_train, layers):
        return fisher_work(
            self.cfg.samples, self.cfg.rescale, self.cfg.rescale_examples, n_train, layers
        )

    def record(self, model):
        cfg = model.config
        out = {
            "flops_kept": encoder_flops(model, self.cfg.seq_len)["flops_dense"] / self.flops_before,
            "heads_removed": sum(
                len(v) for v in (getattr(cfg, "pruned_heads", None) or {}).values()
            ),
            "ffn_neurons_removed": sum(
                len(v) for v in (getattr(cfg, "pruned_ffn_neurons", None) or {}).values()
            ),
            "fisher": self.fisher,
        }
        if self.cfg.target_speedup is None:
            return {"target_flops": self.target} | out
        return {
            "target_latency": self.target,
            "target_runtime": self.cfg.target_runtime,
            "predicted_speedup": predicted_speedup(self.costs, model),
            "calibration": self.calibration,
        } | out
