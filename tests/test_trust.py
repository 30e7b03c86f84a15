"""The foundation's promises: the same config gives the same numbers in a new process; every epoch
sees its own batch order; a user's mistake or a broken file is one line naming it (exit 2), never a
traceback or a half-written artifact; nothing is silently wrong; the layers import one way."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robust_compress.data.batching import EncodedSplit, LengthGroupedSampler
from robust_compress.data.load import load_split
from robust_compress.data.tasks import BUILTIN
from robust_compress.io import UserError
from robust_compress.models.load import check_model_dir, load_model
from robust_compress.train.loop import TrainArgs, train
from robust_compress.train.losses import REGISTRY, make_loss

from .conftest import LABELS, ROOT, make_examples

MNLI = BUILTIN["mnli"]


def cli(*args, cwd=ROOT, env=None):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "robust_compress.cli", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# ---------------------------------------------------------------- the same config, the same numbers


def test_same_config_same_weights_in_two_processes(tiny_dir, tiny_task, tmp_path):
    """A new classification head is drawn from the config's seed: two processes agree bit for bit
    (before the fix every process started from its own random head)."""
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        r = cli(
            "finetune",
            "--model",
            str(tiny_dir),
            "--task",
            str(tiny_task),
            "-o",
            str(out),
            "-s",
            "max_steps=6",
            "-s",
            "batch_size=16",
            "-s",
            "max_length=32",
            "-s",
            f"cache_dir={tmp_path}/c",
        )
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(out)
    a, b = (load_file(str(o / "model.safetensors")) for o in outs)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (json.loads((o / "summary.json").read_text()) for o in outs)
    assert sa["splits"] == sb["splits"]
    c = cli(
        "finetune",
        "--model",
        str(tiny_dir),
        "--task",
        str(tiny_task),
        "-o",
        str(tmp_path / "seed7"),
        "-s",
        "max_steps=6",
        "-s",
        "batch_size=16",
        "-s",
        "max_length=32",
        "-s",
        "seed=7",
    )
    assert c.returncode == 0, c.stderr[-3000:]
    other = load_file(str(tmp_path / "seed7" / "model.safetensors"))
    assert not torch.equal(
        other["classifier.weight"], a["classifier.weight"]
    )  # the seed does choose


def test_new_head_follows_the_seed(tiny_dir):
    import shutil

    from transformers import BertForSequenceClassification

    bare = tiny_dir.parent / "bare"
    BertForSequenceClassification.from_pretrained(tiny_dir).bert.save_pretrained(
        bare
    )  # an encoder, no head
    for f in tiny_dir.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, bare / f.name)
    h1, h2 = (load_model(str(bare), LABELS, seed=3).classifier.weight for _ in range(2))
    h3 = load_model(str(bare), LABELS, seed=4).classifier.weight
    assert torch.equal(h1, h2) and not torch.equal(h1, h3)


class Recorder(torch.nn.Module):
    """A loss that remembers which training rows each optimizer step saw."""

    needs_hidden = False

    def __init__(self):
        super().__init__()
        self.inner = make_loss(REGISTRY["ce"].Settings(name="ce"))
        self.rows: list[list[int]] = []

    def forward(self, logits, batch, hidden=None):
        self.rows.append(batch["row"].tolist())
        return self.inner(logits, batch)


def test_every_epoch_sees_its_own_batch_order(tiny_dir, tiny_tokenizer, tmp_path):
    """accelerate's prepared loader owns the sampler's epoch; the loop must set it, or epoch 1
    repeats epoch 0 exactly. Each epoch must follow the sampler's order for that epoch."""
    data = EncodedSplit(make_examples(64), tiny_tokenizer, 64)
    args = TrainArgs(batch_size=16, epochs=3, lr=1e-3, seed=5, checkpoint_every=100)
    rec = Recorder()
    train(load_model(str(tiny_dir), LABELS), data, args, rec, tmp_path / "w")
    per_epoch = [[r for step in rec.rows[i * 4 : (i + 1) * 4] for r in step] for i in range(3)]
    assert per_epoch[0] != per_epoch[1] and per_epoch[1] != per_epoch[2]
    sampler = LengthGroupedSampler(data.lengths, 16, seed=5)
    for epoch, seen in enumerate(per_epoch):
        sampler.set_epoch(epoch)
        assert seen == list(sampler)


# ----------------------------------------------------- one clear line, exit 2, nothing half-written


def _mnli_dir(tmp_path: Path, train_bytes: bytes) -> Path:
    """Every MNLI split present (a missing one would add its warning line to stderr)."""
    d = tmp_path / "data" / "mnli"
    d.mkdir(parents=True)
    (d / "train.jsonl").write_bytes(train_bytes)
    row = '{"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 1, "heuristic": "x"}\n'
    for f in ("mnli/dev_matched.jsonl", "mnli/dev_mismatched.jsonl", "hans/evaluation.jsonl"):
        (tmp_path / "data" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / f).write_text(row)
    return tmp_path / "data"


def test_non_utf8_data_names_file_and_line(tmp_path, tiny_dir):
    data = _mnli_dir(
        tmp_path,
        b'{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "caf\xe9", '
        b'"hypothesis": "b", "label": 0}\n',
    )
    with pytest.raises(UserError, match=r"train\.jsonl:2: not UTF-8 \(byte 0xe9"):
        load_split(MNLI, "train", data)
    r = cli(
        "finetune", "--model", str(tiny_dir), "--data-dir", str(data), "-o", str(tmp_path / "out")
    )
    assert (
        r.returncode == 2 and "train.jsonl:2: not UTF-8" in r.stderr and "Traceback" not in r.stderr
    )
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_non_utf8_dev_csv_and_a_missing_column_are_found_before_training(
    tmp_path, tiny_dir, tiny_task, monkeypatch
):
    """A broken ID dev file used to surface only after training; now it stops the run
    before step 1."""
    from robust_compress.stages import finetune

    from .conftest import tiny_run_config

    spec = tiny_task.read_text().replace("dev.jsonl", "dev.csv")
    tiny_task.write_text(spec)
    (tiny_task.parent / "data" / "dev.csv").write_text("a,label,uid\nx,entailment,1\n")
    monkeypatch.setattr(
        "robust_compress.stages.training.train", lambda *a, **k: pytest.fail("trained first")
    )
    with pytest.raises(UserError, match=r"dev\.csv:2: missing field 'b'"):
        finetune(tiny_run_config(tiny_dir, tiny_task, tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path):
    d = tmp_path / "mnli"
    d.mkdir()
    rows = [
        {"premise": "p", "hypothesis": "h", "label": 0, "idx": 7},
        {"premise": "q", "hypothesis": "h", "label": 1, "idx": 7},
    ]
    (d / "dev_matched.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        UserError,
        match=r"dev_matched\.jsonl:2: duplicate id '7' in column 'idx' \(first at line 1\)",
    ):
        load_split(MNLI, "dev_matched", tmp_path)


def test_unlabeled_rows_are_dropped_with_a_count(tmp_path, caplog):
    d = tmp_path / "mnli"
    d.mkdir()
    rows = [{"premise": "p", "hypothesis": "h", "label": -1}] * 3 + [
        {"premise": "p", "hypothesis": "h", "label": 2}
    ]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="robust_compress"):
        split = load_split(MNLI, "train", tmp_path)
    assert len(split) == 1
    assert "skipped 3 of 4 rows with label -1" in caplog.text and "train.jsonl" in caplog.text


def test_broken_model_folders_are_one_line(tmp_path, tiny_dir):
    import shutil

    trunc = tmp_path / "truncated"
    shutil.copytree(tiny_dir, trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(UserError, match=r"model\.safetensors: .*truncated or corrupt"):
        check_model_dir(trunc)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(
        UserError, match=r"only pickled weights \(pytorch_model\.bin\); loading them could run code"
    ):
        check_model_dir(pickled)
    for folder, what in ((trunc, "truncated or corrupt"), (pickled, "only pickled weights")):
        r = cli("finetune", "--model", str(folder), "-o", str(tmp_path / "out"), "--task", "mnli")
        assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr, r.stderr[
            -2000:
        ]
        assert len(r.stderr.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_one_line_and_removed(tiny_dir, tiny_tokenizer, tmp_path):
    data = EncodedSplit(make_examples(64), tiny_tokenizer, 64)
    args = TrainArgs(batch_size=16, max_steps=4, lr=1e-3, checkpoint_every=2)
    ce = make_loss(REGISTRY["ce"].Settings(name="ce"))

    class Stop(Exception):
        pass

    from robust_compress.train.loop import Hook

    class Kill(Hook):
        def on_step_end(self, model, step):
            if step == 3:
                raise Stop

    with pytest.raises(Stop):
        train(load_model(str(tiny_dir), LABELS), data, args, ce, tmp_path / "w", hooks=[Kill()])
    ckpt = tmp_path / "w" / "checkpoint"
    (ckpt / "optimizer.bin").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"checkpoint: unreadable checkpoint .* removed: run again"):
        train(load_model(str(tiny_dir), LABELS), data, args, ce, tmp_path / "w")
    assert not ckpt.exists()
    result = train(
        load_model(str(tiny_dir), LABELS), data, args, ce, tmp_path / "w"
    )  # the rerun starts over
    assert result.steps == 4 and result.resumed_from == 0


@pytest.mark.parametrize(
    "err,text", [(errno.ENOSPC, "no space left on device"), (errno.EACCES, "permission denied")]
)
def test_os_errors_are_one_line_exit_2(monkeypatch, capsys, err, text):
    """Disk full or permission denied anywhere in a command: the file and the problem, no
    traceback."""
    from robust_compress import cli as cli_mod

    def boom(*a, **k):
        raise OSError(err, os.strerror(err), "/some/artifact/model.safetensors")

    monkeypatch.setattr(cli_mod, "app", boom)
    with pytest.raises(SystemExit) as e:
        cli_mod.main()
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: /some/artifact/model.safetensors: {text}"


def test_an_unsupported_family_is_refused_before_any_work(tmp_path):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    folder = tmp_path / "albert"
    AlbertForSequenceClassification(
        AlbertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            embedding_size=16,
        )
    ).save_pretrained(folder)
    with pytest.raises(
        UserError, match=r"model type 'albert' is not supported; supported encoder families: .*bert"
    ):
        load_model(str(folder), ["a", "b"])


def test_artifacts_are_group_readable(tiny_dir, tiny_task, tmp_path):
    """Written under the umask, not tempfile's 0700/0600: a shared study folder stays shared."""
    from robust_compress.io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "a") as tmp:
            write_json(tmp / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "x.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- the shape


def test_layers_import_one_way():
    """The import-linter layers contract in pyproject.toml (no upward import, no cycle between
    layers)."""
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run(
        [str(exe)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert "3 kept, 0 broken" in r.stdout


def test_no_import_cycles_between_modules():
    import grimp

    graph = grimp.build_graph("robust_compress")
    mods = [m for m in graph.modules if m.startswith("robust_compress.")]
    for m in mods:
        for dep in graph.find_modules_directly_imported_by(m):
            if dep.startswith("robust_compress.") and dep != m:
                assert not graph.chain_exists(importer=dep, imported=m), f"cycle: {m} <-> {dep}"


def test_cli_flags_are_config_fields_with_their_help():
    from typer.testing import CliRunner

    from robust_compress import cli as cli_mod
    from robust_compress.config import field_help

    runner = CliRunner()
    for flag, dotted in cli_mod.FLAGS.items():
        if flag in ("loss", "method"):
            continue
        assert field_help(dotted), f"--{flag} maps to {dotted}, which has no description"
    out = runner.invoke(cli_mod.app, ["compress", "--help"], terminal_width=200).output
    assert "<bool>" not in out and "--overwrite" in out
    assert field_help("compression.sparsity")[:40] in " ".join(out.split())
    version = runner.invoke(cli_mod.app, ["--version"]).output
    assert version.startswith("robust-compress ") and "code " in version


@pytest.mark.parametrize(
    "args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"]
)
def test_ruff_passes_with_the_projects_rules(args):
    """pyproject.toml's ruff rules (line length 100, bugbear, simplify, pyupgrade, complexity)."""
    exe = Path(sys.executable).with_name("ruff")
    r = subprocess.run(
        [str(exe), *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-3000:]
