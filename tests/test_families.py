"""Every method on every supported encoder family, on tiny random configs.

Adding a family: one entry in `models/families.py` and one line in FAMILIES below. Each family is
fine-tuned, magnitude-pruned (exact sparsity kept after training and after reload), head- and
FFN-pruned (equal to its masked dense twin, reloading with `from_pretrained`), truncated,
distilled from a teacher of another family with another tokenizer, quantized, and trained with
every loss.
"""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as T
from transformers import AutoModelForSequenceClassification, BertTokenizer

from robust_compress.compress.magnitude import measured_sparsity
from robust_compress.models.families import (
    blocks,
    encoder_flops,
    family_of,
    ffn_width,
    get_path,
    head_size,
    n_heads,
)
from robust_compress.models.infer import model_inputs
from robust_compress.models.load import count_parameters, load_model
from robust_compress.models.overlap import OverlapModel
from robust_compress.models.pruned import keep_layers, prune_ffn_neurons, prune_heads
from robust_compress.stages import compress, evaluate_folder, finetune
from robust_compress.train.losses import REGISTRY

from .conftest import LABELS, WORDS, tiny_run_config

H, L, NH, FFN = 32, 2, 4, 37
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _config(family: str, vocab: int):
    common = {
        "vocab_size": vocab,
        "num_labels": 3,
        "id2label": dict(enumerate(LABELS)),
        "label2id": {n: i for i, n in enumerate(LABELS)},
    }
    bert_like = {
        "hidden_size": H,
        "num_hidden_layers": L,
        "num_attention_heads": NH,
        "intermediate_size": FFN,
    }
    return {
        "bert": lambda: T.BertConfig(**common, **bert_like, max_position_embeddings=64),
        "roberta": lambda: T.RobertaConfig(
            **common,
            **bert_like,
            max_position_embeddings=70,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            type_vocab_size=2,
        ),
        "electra": lambda: T.ElectraConfig(
            **common, **bert_like, embedding_size=16, max_position_embeddings=64
        ),
        "distilbert": lambda: T.DistilBertConfig(
            **common, dim=H, n_layers=L, n_heads=NH, hidden_dim=FFN, max_position_embeddings=64
        ),
        "deberta-v2": lambda: T.DebertaV2Config(
            **common,
            **bert_like,
            max_position_embeddings=64,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            share_att_key=False,
            type_vocab_size=0,
        ),
        "deberta-v3": lambda: T.DebertaV2Config(
            **common,
            **bert_like,
            max_position_embeddings=64,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            position_buckets=8,
            norm_rel_ebd="layer_norm",
            type_vocab_size=0,
        ),
        "mpnet": lambda: T.MPNetConfig(
            **common, **bert_like, max_position_embeddings=70, pad_token_id=0
        ),
    }[family]()


FAMILIES = ["bert", "roberta", "electra", "distilbert", "deberta-v2", "deberta-v3", "mpnet"]
TEACHER_OF = {
    f: FAMILIES[(i + 1) % len(FAMILIES)] for i, f in enumerate(FAMILIES)
}  # another family


def _make(root, family: str, shuffle_vocab: bool = False):
    """A tiny random classifier of `family` with a word-level tokenizer (a shuffled vocabulary makes
    another tokenizer: the same words, other ids)."""
    words = list(WORDS)
    if shuffle_vocab:
        random.Random(1).shuffle(words)
    vocab = SPECIAL + words
    d = root / (family + ("-shuffled" if shuffle_vocab else ""))
    if d.exists():
        return d
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(d)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(_config(family, len(vocab))).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {f: _make(root, f) for f in FAMILIES} | {
        f"{f}-shuffled": _make(root, f, True) for f in FAMILIES
    }


def _batch(seed=0, n=4, length=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), len(SPECIAL) + len(WORDS), (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, 6:] = 0
    ids[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _logits(model, batch):
    with torch.no_grad():
        return model(**model_inputs(model, batch)).logits


def _gate(model, heads: dict[int, list[int]], neurons: dict[int, list[int]]):
    """The dense twin: zero the chosen heads' / neurons' inputs of the attention-out / FFN-out
    projections."""
    fam = family_of(model)
    handles = []
    for layer, block in enumerate(blocks(model)):
        size = head_size(block, fam)
        for site, idx, _width in (
            (fam.attn_out, [i * size + j for i in heads.get(layer, []) for j in range(size)], None),
            (fam.ffn_out, neurons.get(layer, []), None),
        ):
            if idx:

                def hook(module, args, idx=idx):
                    x = args[0].clone()
                    x[..., idx] = 0
                    return (x, *args[1:])

                handles.append(get_path(block, site).register_forward_pre_hook(hook))
    return handles


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_equals_its_masked_dense_twin_and_reloads(family, zoo, tmp_path):
    heads, neurons = {0: [1], 1: [0, 2]}, {0: [3, 5, 30], 1: [0]}
    dense = load_model(str(zoo[family]), LABELS).eval()
    pruned = load_model(str(zoo[family]), LABELS).eval()
    fam = family_of(pruned)
    before, _ = count_parameters(pruned)
    flops = encoder_flops(pruned)["flops_dense"]
    prune_heads(pruned, heads)
    prune_ffn_neurons(pruned, neurons)
    assert [n_heads(b, fam) for b in blocks(pruned)] == [3, 2]  # uneven heads per layer
    assert [ffn_width(b, fam) for b in blocks(pruned)] == [FFN - 3, FFN - 1]
    assert count_parameters(pruned)[0] < before
    assert encoder_flops(pruned)["flops_dense"] < flops
    batch = _batch()
    _gate(dense, heads, neurons)
    torch.testing.assert_close(_logits(pruned, batch), _logits(dense, batch), atol=1e-5, rtol=1e-5)
    pruned.save_pretrained(tmp_path / "p")
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert (
        saved["model_type"] == f"pruned_{pruned.config.base_model_type}" and "auto_map" not in saved
    )
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "p").eval()
    torch.testing.assert_close(
        _logits(reloaded, batch), _logits(pruned, batch), atol=1e-6, rtol=1e-6
    )
    prune_heads(reloaded, {1: [0]})  # iterative pruning after a reload keeps the original numbering
    assert reloaded.config.pruned_heads["1"] == [0, 1, 2]
    keep_layers(reloaded, [1])
    reloaded.save_pretrained(tmp_path / "q")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "q").eval()
    torch.testing.assert_close(
        _logits(again, batch), _logits(reloaded, batch), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_runs_end_to_end(family, zoo, tiny_task, tmp_path):
    base = zoo[family]

    def run(name, model, **kw):
        return tiny_run_config(model, tiny_task, tmp_path / name, max_steps=6, **kw)

    teacher = finetune(run("teacher", base))
    assert (teacher / "summary.json").is_file()

    mag = compress(
        run("mag", teacher, compression={"method": "magnitude", "sparsity": 0.5, "prune_end": 0.5})
    )
    rec = json.loads((mag / "compression.json").read_text())
    assert rec["measured_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert measured_sparsity(load_model(str(mag), LABELS)) == pytest.approx(
        rec["measured_sparsity"], abs=0
    )

    heads = compress(
        run(
            "heads",
            teacher,
            compression={"method": "heads", "heads": 3, "ffn": 0.25, "importance_batches": 2},
        )
    )
    rec = json.loads((heads / "compression.json").read_text())
    assert rec["heads_removed"] == 3 and rec["ffn_neurons_removed"] == round(0.25 * L * FFN)
    assert (
        rec["parameters"] < rec["parameters_before"]
        and rec["flops_dense"] < encoder_flops(load_model(str(teacher), LABELS))["flops_dense"]
    )
    reloaded = AutoModelForSequenceClassification.from_pretrained(heads)
    assert sum(n_heads(b, family_of(reloaded)) for b in blocks(reloaded)) == L * NH - 3
    again = evaluate_folder(
        heads, tiny_run_config(heads, tiny_task, tmp_path / "x"), tmp_path / "heads-eval"
    )
    own = pd.read_parquet(heads / "predictions" / "dev.parquet")["p_entailment"].to_numpy()
    np.testing.assert_allclose(
        pd.read_parquet(tmp_path / "heads-eval" / "predictions" / "dev.parquet")[
            "p_entailment"
        ].to_numpy(),
        own,
        atol=1e-5,
    )
    assert again["splits"]["dev"]["n"] == len(own)

    st = compress(
        run(
            "structured",
            teacher,
            loss={"name": "distil"},
            inputs={"teacher": str(teacher)},
            compression={
                "method": "structured",
                "target_flops": 0.6,
                "prune_every": 2,
                "importance_batches": 1,
            },
        )
    )
    rec = json.loads((st / "compression.json").read_text())
    assert rec["flops_kept"] <= 0.6 + 1e-9 and rec["heads_removed"] > 0
    assert (
        encoder_flops(AutoModelForSequenceClassification.from_pretrained(st))["flops_dense"]
        == rec["flops_dense"]
    )

    trunc = compress(run("trunc", teacher, compression={"method": "truncate", "layers": 1}))
    assert load_model(str(trunc), LABELS).config.to_dict()[family_of(reloaded).n_layers_key] == 1

    other = finetune(
        run("other-teacher", zoo[f"{TEACHER_OF[family]}-shuffled"])
    )  # another family and tokenizer
    kd = compress(
        run(
            "kd",
            base,
            loss={"name": "kd", "temperature": 2.0},
            inputs={"teacher": str(other)},
            compression={"method": "distill"},
        )
    )
    assert json.loads((kd / "summary.json").read_text())["splits"]["dev"]["n"] > 0

    q = compress(run("int8", teacher, compression={"method": "quantize"}))
    assert json.loads((q / "compression.json").read_text())["flops_dense"] > 0


@pytest.fixture(scope="module")
def loss_inputs(tmp_path_factory, zoo, shared_tiny_task):
    """Sources for every loss input: a fine-tuned teacher, an uncertainty file, a bias model."""
    from robust_compress.data.load import load_split
    from robust_compress.data.tasks import load_task

    root = tmp_path_factory.mktemp("inputs")
    teacher = finetune(
        tiny_run_config(zoo["bert"], shared_tiny_task, root / "teacher", max_steps=4)
    )
    ex = load_split(load_task(str(shared_tiny_task)), "train", None).examples
    pd.DataFrame({"id": [e["id"] for e in ex], "v": np.linspace(0, 1, len(ex))}).to_parquet(
        root / "u.parquet"
    )
    OverlapModel.fit(ex, LABELS).save(root / "bias")
    return {
        "teacher": str(teacher),
        "uncertainty": str(root / "u.parquet"),
        "bias_model": str(root / "bias"),
        "reference_model": str(teacher),
    }


@pytest.mark.parametrize("loss", list(REGISTRY))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_loss_trains_every_family(family, loss, zoo, shared_tiny_task, tmp_path, loss_inputs):
    cfg = tiny_run_config(
        zoo[family],
        shared_tiny_task,
        tmp_path / "out",
        max_steps=2,
        eval_sets=["dev"],
        loss={"name": loss},
        inputs=loss_inputs,
        compression={"method": "distill"},
    )
    out = compress(cfg)
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == 2 and all(np.isfinite(metrics["loss_curve"]))
    # the loss can train the model: on a batch with its real inputs, its gradient reaches the
    # encoder
    # (a constant loss, or one detached from the logits, trains nothing; weight decay alone still
    # moves the weights, so this is checked on the gradient, not on the saved weights)
    from robust_compress.data.batching import Collator, EncodedSplit
    from robust_compress.data.load import load_train_split
    from robust_compress.models.load import load_tokenizer
    from robust_compress.train.extras import Context, LiveTeacher, build_extras, build_live
    from robust_compress.train.loop import loss_on_batch
    from robust_compress.train.losses import make_loss

    model = load_model(str(zoo[family]), LABELS, seed=0)
    examples = load_train_split(cfg.data_args()).examples[:8]
    ctx = Context(labels=LABELS, alpha=0.5, cache_dir=cfg.cache_dir, max_length=32)
    data = EncodedSplit(
        examples,
        load_tokenizer(str(zoo[family]), model),
        32,
        extras=build_extras(cfg.loss, cfg.inputs, examples, ctx),
    )
    live = build_live(cfg.loss, cfg.inputs, ctx)  # the loop's own per-batch inputs (a live teacher)
    teacher = next((x for x in live.values() if isinstance(x, LiveTeacher)), None)
    batch = Collator(model.config.pad_token_id or 0)([data[i] for i in range(len(data))])
    fn = make_loss(
        cfg.loss,
        hidden_size=model.config.hidden_size,
        num_labels=3,
        teacher_hidden_size=teacher.hidden_size if teacher else 0,
    )
    loss_on_batch(model, fn, batch, live)[1].backward()  # exactly what the loop computes
    grads = [
        p.grad for n, p in model.named_parameters() if "classifier" not in n and p.grad is not None
    ]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_a_study_on_a_non_bert_teacher_finishes(zoo, tiny_task, tmp_path):
    """The methods that used to crash after saving on other families (FLOPs assumed BERT names)."""
    import yaml

    from robust_compress.study.run import reproduce

    exp = {
        "name": "mpnet-tiny",
        "task": str(tiny_task),
        "output_dir": str(tmp_path / "s"),
        "seeds": [0],
        "defaults": {
            "batch_size": 16,
            "lr": 2e-3,
            "max_length": 32,
            "max_steps": 4,
            "cache_dir": str(tmp_path / "c"),
        },
        "teacher": {"model": str(zoo["mpnet"])},
        "compressions": [
            {"name": "heads", "method": "heads", "settings": {"heads": 2, "importance_batches": 1}},
            {"name": "mag", "method": "magnitude", "settings": {"sparsity": 0.4}},
            {"name": "l1", "method": "truncate", "settings": {"layers": 1}},
            {"name": "int8", "method": "quantize"},
        ],
        "losses": ["ce", "distil"],
        "speed": {"examples": 16, "repeats": 1},
    }
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    stages = reproduce(tmp_path / "e.yaml")
    assert all(s.done() for s in stages)
    shutil.rmtree(tmp_path / "s")
