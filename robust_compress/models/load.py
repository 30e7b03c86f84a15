"""Load, check and save Hugging Face sequence-classification models and their tokenizers.

Every load goes through `check_model_dir` first: a folder must hold config.json and safetensors
weights that open; a `pytorch_model.bin`-only folder is refused (unpickling can run code), and
a truncated or corrupt weights file is named in one line instead of a traceback.
A new classification head is initialized under `torch.manual_seed(seed)`, so the same seed
gives the same starting model in every process.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from ..io import UserError, file_digest, read_json, read_yaml, write_json
from .families import dropout_overrides, family_of, max_positions
from .labels import align, permute_classifier
from .pruned import register_all

register_all()


def resolve_model_dir(name_or_path: str) -> Path:
    """A local folder for a model: the folder itself, or the hub snapshot (downloaded or cached)."""
    name_or_path = os.path.expanduser(name_or_path)
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if p.exists() or name_or_path.startswith((".", "/")) or name_or_path.count("/") > 1:
        raise UserError(f"{name_or_path}: model folder not found")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]
            )
        )
    except Exception as e:  # noqa: BLE001 -- offline, unknown id, ...: one line for the user
        raise UserError(
            f"{name_or_path}: not a local folder and not available from the hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(
        type(value), f"a {type(value).__name__}"
    )


def read_model_config(folder: str | Path) -> dict:
    """A model folder's config.json, checked for what transformers would otherwise trip over with a
    traceback (or a prompt): a JSON object, id2label/label2id mappings, and no `auto_map` (the
    model's own code, which this tool never runs)."""
    path = Path(folder) / "config.json"
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object, got {_kind(raw)}")
    for key in ("id2label", "label2id"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise UserError(
                f"{path}: {key} is {_kind(raw[key])}, not a mapping "
                + ("of output row -> label name" if key == "id2label" else "of label name -> row")
            )
    if raw.get("auto_map"):
        names = raw["auto_map"] if isinstance(raw["auto_map"], dict) else {}
        what = ", ".join(f"{k}: {v}" for k, v in names.items()) or str(raw["auto_map"])
        raise UserError(
            f"{path}: auto_map names the model's own code ({what}); robust-compress never runs "
            "code from a model folder: use a model whose model_type transformers implements"
        )
    return raw


def check_model_dir(folder: Path) -> None:
    """config.json and readable safetensors weights, or one line saying what is wrong."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json (not a saved model folder)")
    read_model_config(folder)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        if pickled:
            raise UserError(
                f"{folder}: only pickled weights ({', '.join(pickled)}); loading them could run "
                "code. Convert them to safetensors "
                "(model.save_pretrained(..., safe_serialization=True)) "
                "in a trusted environment"
            )
        raise UserError(f"{folder}: no *.safetensors weights")
    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                keys = list(f.keys())
                if keys:  # the last tensor's bytes must be there: catches a truncated file
                    f.get_slice(keys[-1])
        except (SafetensorError, OSError) as e:
            raise UserError(
                f"{w}: unreadable safetensors file ({e}); the file is truncated or corrupt"
            ) from None
        size = w.stat().st_size
        with open(w, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
            meta = json.loads(fh.read(header))
        end = max((v["data_offsets"][1] for k, v in meta.items() if k != "__metadata__"), default=0)
        if 8 + header + end != size:
            raise UserError(
                f"{w}: {size} bytes, but its header describes {8 + header + end}: "
                "the file is truncated or corrupt"
            )


def load_arch(folder: str | Path):
    """A model folder's config (its architecture), or one line: an unknown or missing `model_type`
    is the user's file, not a traceback."""
    folder = Path(folder)
    raw = read_model_config(folder)
    if not raw.get("model_type"):
        raise UserError(
            f"{folder / 'config.json'}: no model_type (not a transformers model config)"
        )
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if raw["model_type"] not in transformers.CONFIG_MAPPING:
            first = f"model_type {raw['model_type']!r} is not a model type this transformers knows"
        raise UserError(
            f"{folder / 'config.json'}: cannot load the model config ({first})"
        ) from None


def check_max_length(config, max_length: int, where: str) -> None:
    """Before any training: inputs longer than the position embeddings fail only at the first long
    batch."""
    limit = max_positions(config)
    if limit is not None and max_length > limit:
        raise UserError(
            f"{where}: max_length {max_length} is beyond the model's {limit} positions "
            f"(max_position_embeddings); use max_length <= {limit}"
        )


def model_digest(folder: str | Path) -> str:
    """Content hash of a saved model (weights, config, tokenizer files), independent of where it
    lives."""
    folder = Path(folder)
    check_model_dir(folder)
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in {".json", ".safetensors", ".txt", ".model"}
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + file_digest(f).encode())
    return h.hexdigest()[:16]


def model_labels(folder: str | Path) -> list[str]:
    """Label names of a saved classifier, in index order (empty for a bare encoder). A regression
    head or an id2label that is not indexed 0..n-1 is refused in one line."""
    path = Path(folder) / "config.json"
    config = read_model_config(folder)
    archs = config.get("architectures") or []
    if not any("ForSequenceClassification" in a for a in archs):
        return []
    id2label = config.get("id2label") or {}
    if (
        config.get("problem_type") == "regression"
        or config.get("num_labels") == 1
        or len(id2label) == 1
    ):
        raise UserError(
            f"{path}: a regression head (num_labels 1 / problem_type regression); "
            "robust-compress needs a classifier over the task's labels"
        )
    keys = sorted(id2label, key=lambda k: int(k) if str(k).isdigit() else -1)
    if keys != [str(i) for i in range(len(id2label))]:
        raise UserError(
            f"{path}: id2label keys {keys} are not 0..{len(id2label) - 1}: "
            "every output row needs exactly one label name"
        )
    return [str(id2label[str(i)]) for i in range(len(id2label))]


def label_order(
    folder: str | Path, labels: list[str], label_map: dict[str, str] | None = None
) -> list[int]:
    """How a saved classifier's output rows map onto `labels` (identity for a bare encoder, or for
    a model already in this order); an error naming `label_map` when they cannot be matched."""
    have = model_labels(folder)
    if not have:
        return list(range(len(labels)))
    return align(have, list(labels), unapplied_map(folder, label_map), where=str(folder))


def unapplied_map(folder: str | Path, label_map: dict[str, str] | None) -> dict[str, str] | None:
    """`label_map`, unless `folder` is a model this tool made in a run with this very map (its
    run_config.yaml says so): the map was applied to that run's start model, and the folder's
    id2label has been the task's since; applying it again would permute the rows twice."""
    made = Path(folder) / "run_config.yaml"
    if not label_map or not made.is_file():
        return label_map
    try:
        recorded = read_yaml(made).get("label_map")
    except UserError:
        return label_map
    return None if recorded == label_map else label_map


def head_tensors(config) -> list[str]:
    """The tensors of the classification head a *ForSequenceClassification checkpoint of `config`
    holds: its state-dict keys outside the encoder (`base_model_prefix`), read from the model class
    itself, built on the meta device (no memory, no initialization)."""
    with torch.device("meta"), _quiet_load_report():
        model = AutoModelForSequenceClassification.from_config(config)
    prefix = f"{model.base_model_prefix}."
    return [k for k in model.state_dict() if not k.startswith(prefix)]


def _saved_tensors(folder: Path) -> set[str]:
    """Every tensor name in a folder's safetensors files (a quantized tensor flattened into its
    parts counts under its own name: torchao's metadata lists them)."""
    names: set[str] = set()
    for w in sorted(folder.glob("*.safetensors")):
        with safe_open(str(w), framework="pt") as f:
            names.update(f.keys())
            meta = f.metadata() or {}
        with contextlib.suppress(ValueError, TypeError):
            names.update(json.loads(meta.get("tensor_names", "[]")))
    return names


def check_head(folder: str | Path, config=None, hint: str = "") -> None:
    """A folder whose config.json names a fine-tuned classifier (a *ForSequenceClassification with
    labels) must hold its head's tensors: from_pretrained would draw the missing ones at random,
    and every score of it would be a random head's. One line naming the weights and the tensors;
    `hint` says what to do instead."""
    folder = Path(folder)
    have = model_labels(folder)
    if not have:
        return
    config = config if config is not None else load_arch(folder)
    saved = _saved_tensors(folder)
    missing = [k for k in head_tensors(config) if k not in saved]
    if missing:
        weights = sorted(folder.glob("*.safetensors"))
        where = weights[0] if len(weights) == 1 else folder / "*.safetensors"
        arch = ", ".join(config.architectures or []) or type(config).__name__
        raise UserError(
            f"{where}: no classifier head (missing {', '.join(missing)}); its config.json names "
            f"{arch} with labels {have}, so it would be scored by a random head{hint}"
        )


@contextlib.contextmanager
def _quiet_load_report():
    """transformers reports a 'newly initialized' head, unsharded layers and a loading bar on every
    load: expected here (a new head is the point of fine-tuning), not errors. -v shows them."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if level < hf_logging.WARNING:  # the user asked for more (-v): show everything
        yield
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_model(
    name_or_path: str,
    labels: list[str],
    dropout: float | None = None,
    seed: int = 0,
    quiet: bool = True,
    label_map: dict[str, str] | None = None,
) -> PreTrainedModel:
    """A classifier over `labels`. A fine-tuned model's classes are matched by name (or `label_map`)
    and its output rows put in `labels`' order. A new head (and any weight the checkpoint lacks) is
    initialized from `seed`."""
    folder = resolve_model_dir(name_or_path)
    check_model_dir(folder)
    config = load_arch(folder)
    family_of(config)  # a clear refusal for a family we do not support, before any work
    perm = label_order(folder, labels, label_map)
    kwargs = {"num_labels": len(labels)}
    if dropout is not None:
        kwargs.update(dropout_overrides(config, dropout))
    transformers.set_seed(seed)  # python, numpy and torch: a new head's init is the seed's
    try:
        with _quiet_load_report() if quiet else contextlib.nullcontext():
            model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(
            f"{folder}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    permute_classifier(model, perm, list(labels))
    return model


TOKENIZER_DIGEST = "tokenizer_digest.json"
_SPECIAL = ("pad", "bos", "eos", "cls", "sep", "unk")


def _has_tokenizer_files(folder: Path) -> bool:
    """Without these, AutoTokenizer builds a tokenizer of the special tokens alone (no error)."""
    names = ("tokenizer.json", "vocab.txt", "vocab.json")
    return any((folder / n).is_file() for n in names) or any(folder.glob("*.model"))


def vocab_digest(tok) -> str:
    """sha256 of the token -> id mapping (sorted): equal exactly when every token keeps its id."""
    return hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()


def load_tokenizer(name_or_path: str, model: PreTrainedModel | None = None):
    """The model folder's tokenizer; with `model`, refuse one whose vocabulary is not the model's.
    A folder this tool saved records its vocabulary's digest: a changed vocabulary is refused."""
    folder = resolve_model_dir(name_or_path)
    if not _has_tokenizer_files(folder):
        raise UserError(
            f"{folder}: no tokenizer files (tokenizer.json / vocab.txt / vocab.json / *.model)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"{folder}: cannot load tokenizer ({str(e).splitlines()[0]})") from None
    if model is not None:
        check_vocab(tok, model, str(folder))
    if (folder / TOKENIZER_DIGEST).is_file():
        saved = read_json(folder / TOKENIZER_DIGEST)
        if not isinstance(saved, dict) or saved.get("vocab_sha256") != vocab_digest(tok):
            raise UserError(
                f"{folder}: tokenizer does not match the model (its vocabulary is "
                f"not the one saved with the model: {TOKENIZER_DIGEST} differs)"
            )
    return tok


def check_vocab(tok, model: PreTrainedModel, where: str) -> None:
    """A tokenizer belongs to a model when its ids fit the embedding and it covers (almost) all
    rows: checkpoints pad the embedding to a multiple of 8 or 128, never by thousands. A same-size
    vocabulary in another order passes that, so the special tokens the config names must agree."""
    rows = model.get_input_embeddings().num_embeddings
    n = len(tok)
    if n > rows or rows - n > max(128, rows // 100):
        raise UserError(
            f"{where}: tokenizer has {n} tokens but the model's embedding has {rows} rows: "
            "tokenizer and model do not match"
        )
    for name in _SPECIAL:
        want = getattr(model.config, f"{name}_token_id", None)
        have = getattr(tok, f"{name}_token_id", None)
        if isinstance(want, int) and isinstance(have, int) and want != have:
            raise UserError(
                f"{where}: tokenizer does not match the model (the config's "
                f"{name}_token_id is {want}, the tokenizer's is {have})"
            )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameters."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p).item())
    return total, nonzero


def save_model(model: PreTrainedModel, tokenizer, folder: Path) -> None:
    """Hugging Face format with safetensors weights (loadable without running any code)."""
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)


def save_tokenizer(tokenizer, folder: Path) -> None:
    """The tokenizer's files and its vocabulary digest (JSON), which `load_tokenizer` checks."""
    tokenizer.save_pretrained(folder)
    write_json(
        Path(folder) / TOKENIZER_DIGEST,
        {"vocab_sha256": vocab_digest(tokenizer), "vocab_size": len(tokenizer.get_vocab())},
    )


def set_threads() -> None:
    """Use every core for intra-op work unless the user pinned OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
