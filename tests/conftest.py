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

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "park", "yes", "no", "maybe", "big", "small",
         "red", "blue", "house", "tree", "saw", "ate"]
LABELS = ["entailment", "neutral", "contradiction"]
CUE = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}


def make_examples(n: int, seed: int = 0) -> list[dict]:
    """Sentence pairs whose label is readable from one word of text_b (learnable in a few steps)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.randrange(3)
        a = " ".join(rng.choice(WORDS[:9]) for _ in range(rng.randint(3, 12)))
        b = " ".join(rng.choice(WORDS[11:]) for _ in range(rng.randint(1, 6))) + " " + CUE[LABELS[label]]
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
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3,
                     id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
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


needs_shared = pytest.mark.skipif(not shared_available(), reason="../shared data and models not present")


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
                f.write(json.dumps({"a": r["text_a"], "b": r["text_b"], "label": label,
                                    "kind": kind, "uid": f"{name}-{r['id']}"}) + "\n")
    spec = tmp_path / "task.yaml"
    spec.write_text(
        "name: tiny\ntext_a: a\ntext_b: b\nlabels: [entailment, neutral, contradiction]\nalpha: 0.5\n"
        "splits:\n"
        f"  train: {{role: train, local: [{d}/train.jsonl], id_column: uid}}\n"
        f"  dev: {{role: id, local: [{d}/dev.jsonl], id_column: uid}}\n"
        f"  ood: {{role: ood, local: [{d}/ood.jsonl], id_column: uid, labels: [entailment, non-entailment],\n"
        "        collapse: {entailment: entailment, neutral: non-entailment, contradiction: non-entailment},\n"
        "        group_by: [kind]}\n")
    return spec


def tiny_run_config(tiny_dir, tiny_task, out, **kw):
    from robust_compress.config import RunConfig

    base = {"model": str(tiny_dir), "task": str(tiny_task), "output_dir": str(out), "batch_size": 16, "lr": 2e-3,
                "epochs": 1, "seed": 0, "checkpoint_every": 5, "max_length": 32, "cache_dir": str(Path(out).parent / "cache")}
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
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", KILL_ONCE_ENV: str(kill)}
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": env}, log_to_driver=False)
    yield kill
    ray.shutdown()
