"""Shared fixtures: a tiny word-level tokenizer, tiny random BERT models, generated examples."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
MODELS = SHARED / "models"

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "mat",
    "park",
    "yes",
    "no",
    "maybe",
    "big",
    "small",
    "red",
    "blue",
    "house",
    "tree",
    "saw",
    "ate",
]
LABELS = ["entailment", "neutral", "contradiction"]
CUE = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}


def make_examples(n: int, seed: int = 0) -> list[dict]:
    """Sentence pairs whose label is readable from one word of text_b (learnable in a few steps)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.randrange(3)
        a = " ".join(rng.choice(WORDS[:9]) for _ in range(rng.randint(3, 12)))
        b = (
            " ".join(rng.choice(WORDS[11:]) for _ in range(rng.randint(1, 6)))
            + " "
            + CUE[LABELS[label]]
        )
        out.append({"id": str(i), "text_a": a, "text_b": b, "label": label})
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A folder with a tiny random BertForSequenceClassification and a matching tokenizer."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def write_tiny_model(d: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    BertForSequenceClassification(cfg).save_pretrained(d)
    return d


@pytest.fixture
def tiny_model(tiny_dir):
    from robust_compress.models.load import load_model

    return load_model(str(tiny_dir), LABELS)


@pytest.fixture
def tiny_tokenizer(tiny_dir):
    from robust_compress.models.load import load_tokenizer

    return load_tokenizer(str(tiny_dir))


def shared_available() -> bool:
    return DATA.is_dir() and MODELS.is_dir()


needs_shared = pytest.mark.skipif(
    not shared_available(), reason="../shared data and models not present"
)


@pytest.fixture
def tiny_task(tmp_path) -> Path:
    """A custom 3-way task (YAML + JSONL files) over generated examples; returns the YAML path."""
    return write_tiny_task(tmp_path)


@pytest.fixture(scope="session")
def shared_tiny_task(tmp_path_factory) -> Path:
    """The same task, once per session (for session-scoped fixtures); tests must not modify it."""
    return write_tiny_task(tmp_path_factory.mktemp("shared-task"))


def write_tiny_task(tmp_path: Path) -> Path:
    import json

    d = tmp_path / "data"
    d.mkdir()
    for name, n, seed in (("train", 192, 0), ("dev", 96, 1), ("ood", 64, 2)):
        rows = make_examples(n, seed)
        with (d / f"{name}.jsonl").open("w") as f:
            for r in rows:
                kind = "k1" if int(r["id"]) % 2 else "k2"
                label = LABELS[r["label"]]
                if name == "ood":
                    label = "entailment" if r["label"] == 0 else "non-entailment"
                f.write(
                    json.dumps(
                        {
                            "a": r["text_a"],
                            "b": r["text_b"],
                            "label": label,
                            "kind": kind,
                            "uid": f"{name}-{r['id']}",
                        }
                    )
                    + "\n"
                )
    spec = tmp_path / "task.yaml"
    spec.write_text(
        "name: tiny\ntext_a: a\ntext_b: b\nlabels: [entailment, neutral, contradiction]\n"
        "alpha: 0.5\n"
        "splits:\n"
        f"  train: {{role: train, local: [{d}/train.jsonl], id_column: uid}}\n"
        f"  dev: {{role: id, local: [{d}/dev.jsonl], id_column: uid}}\n"
        f"  ood: {{role: ood, local: [{d}/ood.jsonl], id_column: uid, "
        "labels: [entailment, non-entailment],\n"
        "        collapse: {entailment: entailment, neutral: non-entailment, "
        "contradiction: non-entailment},\n"
        "        group_by: [kind]}\n"
    )
    return spec


def tiny_run_config(tiny_dir, tiny_task, out, **kw):
    from robust_compress.config import RunConfig

    base = {
        "model": str(tiny_dir),
        "task": str(tiny_task),
        "output_dir": str(out),
        "batch_size": 16,
        "lr": 2e-3,
        "epochs": 1,
        "seed": 0,
        "checkpoint_every": 5,
        "max_length": 32,
        "cache_dir": str(Path(out).parent / "cache"),
    }
    data = base | kw
    return RunConfig.model_validate(data)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray cluster for the session (2 CPUs, a small object store, no dashboard, on the
    loopback address), its workers single-threaded. Yields the path that, once created, makes the
    first stage past a checkpoint kill its own worker (study/executors.py: KILL_ONCE_ENV)."""
    ray = pytest.importorskip("ray")
    from robust_compress.study.executors import KILL_ONCE_ENV

    kill = tmp_path_factory.mktemp("ray") / "kill-once"
    env = {
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        KILL_ONCE_ENV: str(kill),
    }
    ray.init(
        num_cpus=2,
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    yield kill
    ray.shutdown()


# -------------------------------------------------------------- models saved in another label order

# name -> (label names as saved, the task label each saved row is, label_map that resolves it)
ORDERS = {
    "roberta-mnli": (["CONTRADICTION", "NEUTRAL", "ENTAILMENT"], [2, 1, 0], None),
    "upper-case": (["ENTAILMENT", "NEUTRAL", "CONTRADICTION"], [0, 1, 2], None),
    "cross-encoder": (["contradiction", "entailment", "neutral"], [2, 0, 1], None),
    "label-k": (
        ["LABEL_0", "LABEL_1", "LABEL_2"],
        [1, 2, 0],
        {"LABEL_0": "neutral", "LABEL_1": "contradiction", "LABEL_2": "entailment"},
    ),
}
HEAD = {
    "bert": "classifier",
    "distilbert": "classifier",
    "deberta-v2": "classifier",  # the final layer, by type
    "roberta": "classifier.out_proj",
    "electra": "classifier.out_proj",
    "mpnet": "classifier.out_proj",
}


def save_reordered(
    src: Path, dst: Path, names: list[str], rows: list[int], config: dict | None = None
) -> Path:
    """A copy of a saved classifier whose output row j is the original's row `rows[j]`, named
    `names[j]`: written from the files (safetensors + config.json), without the code under test."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    cfg = json.loads((src / "config.json").read_text())
    head = HEAD[cfg.get("base_model_type") or cfg["model_type"]]
    state = load_file(str(src / "model.safetensors"))
    for p in ("weight", "bias"):
        state[f"{head}.{p}"] = state[f"{head}.{p}"][rows].contiguous()
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg |= {
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }
    (dst / "config.json").write_text(json.dumps(cfg | (config or {}), indent=2))
    for f in ("README.md",):
        (dst / f).unlink(missing_ok=True)
    return dst


@pytest.fixture(scope="session")
def written(tmp_path_factory, tiny_dir, shared_tiny_task):
    """One model folder of each kind the tool writes: a teacher, magnitude pruning (with a
    snapshot), int8 of it, and a hypothesis-only bias model. Tests must not modify them (copy
    first)."""
    from robust_compress.stages import compress, finetune, train_bias_model

    root = tmp_path_factory.mktemp("written")

    def cfg(model, out, **kw):
        return tiny_run_config(model, shared_tiny_task, root / out, **kw)

    teacher = finetune(cfg(tiny_dir, "teacher", max_steps=48, lr=5e-3))
    mag = compress(
        cfg(
            teacher,
            "mag",
            max_steps=6,
            loss={"name": "distil"},
            inputs={"teacher": str(teacher)},
            compression={
                "method": "magnitude",
                "sparsity": 0.5,
                "prune_end": 0.5,
                "snapshots": [0.25],
            },
        )
    )
    q = compress(cfg(mag, "mag-int8", compression={"method": "quantize"}))
    bias = train_bias_model(cfg(tiny_dir, "bias", max_steps=4))
    return {
        "root": root,
        "task": shared_tiny_task,
        "teacher": teacher,
        "mag": mag,
        "int8": q,
        "bias": bias,
        "snapshot": root / "mag-snapshots" / "sparsity-0.25",
    }
