"""Label alignment: a saved classifier's label names and order, matched to a task's.

A model fine-tuned elsewhere names and orders its classes its own way (roberta-large-mnli:
CONTRADICTION, NEUTRAL, ENTAILMENT; cross-encoders: contradiction, entailment, neutral; many
models: LABEL_0..k). Names are matched case-insensitively and through synonyms (`data.labels`); a
`label_map` (model label -> task label) covers names that say nothing (it is used by a model that
names its keys, even one whose names match the task's: a map is never silently ignored; a model
whose names it does not mention and which matches on its own, e.g. beside a LABEL_k model in one
audit, is left alone with a warning; one that cannot match is mapped, by index keys too, or
refused). The classifier's output rows are then permuted at load (`permute_classifier`) and
id2label rewritten to the task's names, so every prediction, logit and saved model downstream is in
the task's order.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..data.labels import canonical
from ..io import UserError, log
from .families import classifier_out

_PLACEHOLDER = re.compile(r"^label_\d+$")


def _named_row(key: str, have: list[str]) -> int | None:
    """The output row a label_map key names by its label: as the model spells it, or in another
    case."""
    if key in have:
        return have.index(key)
    folded = [i for i, h in enumerate(have) if str(h).lower() == str(key).lower()]
    return folded[0] if len(folded) == 1 else None


def _row_of(key: str, have: list[str]) -> int | None:
    """The output row a label_map key names: by its label, or by its index."""
    i = _named_row(key, have)
    if i is None and str(key).isdigit() and int(key) < len(have):
        i = int(key)
    return i


_told: set[tuple] = set()


def _apply_map(
    have: list[str], label_map: dict[str, str], want: list[str], where: str
) -> list[str]:
    """The model's labels renamed by `label_map` (keys: the model's label names, or indices)."""
    names = list(have)
    wanted = {canonical(w) for w in want}
    for key, value in label_map.items():
        i = _row_of(key, have)
        if i is None:
            raise UserError(f"label_map: {where} has no label {key!r} (its labels: {have})")
        if canonical(value) not in wanted:
            raise UserError(
                f"label_map: {key!r} -> {value!r}, but {value!r} is not one of the labels {want}"
            )
        names[i] = value
    return names


def align(
    have: list[str], want: list[str], label_map: dict[str, str] | None = None, where: str = "model"
) -> list[int]:
    """perm with perm[i] = the model's output row that is `want[i]`; an error naming `label_map`
    when the names cannot be matched one to one."""
    if label_map and all(_named_row(k, have) is None for k in label_map):
        try:  # a map for other models (one audit, several models): names that match on their own
            perm = align(have, want, None, where)
        except UserError:
            pass  # refused below, naming the key this model lacks
        else:
            if (where, tuple(label_map.items())) not in _told:
                _told.add((where, tuple(label_map.items())))
                log.warning(
                    f"{where}: label_map {label_map} names none of its labels {have}: not used "
                    "for it (its names match the task's)"
                )
            return perm
    elif not label_map and list(have) == list(want):
        return list(range(len(want)))
    # a map that names this model's labels is applied, whether or not they match the task's
    names = _apply_map(have, label_map, want, where) if label_map else list(have)
    hint = (
        f"; say which is which with the label_map setting (model label -> task label), e.g. "
        f"-s 'label_map={{{have[0]}: {want[0]}, ...}}'"
        if have and want
        else ""
    )
    if len(names) != len(want):
        two_way = len(names) == 2 and "entailment" in {canonical(n) for n in names}
        why = (
            " (a 2-way entailment model: use it on 2-way sets such as HANS, "
            "e.g. -s 'eval_sets=[hans]')"
            if two_way
            else ""
        )
        raise UserError(
            f"{where}: model has {len(have)} labels {have}, but the task has {len(want)} labels "
            f"{want}{why}"
        )
    got = [canonical(n) for n in names]
    placeholder = any(_PLACEHOLDER.match(n.lower()) for n in names)
    if not placeholder and not set(got) & {canonical(w) for w in want}:
        raise UserError(
            f"{where}: a classifier over {have}, but the task has labels {want}: none of its "
            "labels is one of the task's (a model of another task: start from its encoder)"
            f"{hint.replace(';', '; or', 1)}"
        )
    perm = []
    for w in want:
        rows = [j for j, g in enumerate(got) if g == canonical(w)]
        if len(rows) != 1:
            what = (
                "names LABEL_k say nothing" if placeholder else f"no single model label means {w!r}"
            )
            raise UserError(
                f"{where}: model labels {have} cannot be matched to the labels {want} "
                f"({what}){hint}"
            )
        perm.append(rows[0])
    return perm


def is_identity(perm: list[int]) -> bool:
    return perm == list(range(len(perm)))


def _rows(t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Rows of a weight or bias reordered; a quantized tensor subclass (torchao int8) through its
    inner tensors (per-row data and scales), via the tensor-subclass flatten protocol."""
    if type(t) in (torch.Tensor, nn.Parameter):
        return t.detach()[perm].clone()
    if hasattr(t, "__tensor_flatten__"):
        names, ctx = t.__tensor_flatten__()
        n = t.shape[0]
        inner = {
            k: _rows(v, perm) if v.ndim and v.shape[0] == n else v
            for k, v in ((k, getattr(t, k)) for k in names)
        }
        return type(t).__tensor_unflatten__(inner, ctx, t.shape, t.stride())
    raise UserError(
        f"cannot reorder the classifier rows of a {type(t).__name__} weight; "
        "save the model with the task's label order"
    )


@torch.no_grad()
def permute_classifier(model: nn.Module, perm: list[int], labels: list[str]) -> None:
    """Reorder the final layer's output rows to `labels`' order and name them so in the config."""
    if not is_identity(perm):
        layer = classifier_out(model)
        idx = torch.tensor(perm)
        layer.weight = nn.Parameter(
            _rows(layer.weight, idx), requires_grad=layer.weight.requires_grad
        )
        if layer.bias is not None:
            layer.bias = nn.Parameter(
                _rows(layer.bias, idx), requires_grad=layer.bias.requires_grad
            )
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}


def eval_labels(
    have: list[str],
    task_labels: list[str],
    split_labels: dict[str, list[str]],
    label_map: dict[str, str] | None = None,
    where: str = "model",
) -> list[str]:
    """The label space a model is scored in: the task's, or, for a model whose classes are those of
    every chosen set (a 2-way entailment model on HANS), the sets' own."""
    try:
        align(have, task_labels, label_map, where)
        return list(task_labels)
    except UserError as first:
        spaces = {tuple(v) for v in split_labels.values()}
        if len(spaces) == 1 and len(have) == len(next(iter(spaces))) != len(task_labels):
            own = list(next(iter(spaces)))
            try:
                align(have, own, label_map, where)
                return own
            except UserError:
                pass
        wider = [s for s, v in split_labels.items() if len(v) != len(have)]
        if wider and len(have) < len(task_labels):
            raise UserError(
                f"{first}; sets {wider} need the task's {len(task_labels)} labels"
            ) from None
        raise
