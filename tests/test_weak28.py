"""Issue 28, the weak cases: a kill during a checkpoint's removal leaves a study that resumes;
--clean counts what it removed; a dead Ray address and Slurm options that would be ignored are one
line before any work; an unclosed CSV quote, a split name that is no file name, a folder as
speed's output are named as such; `evaluate MODEL --task OTHER` takes nothing task-bound from the
model's run_config.yaml."""

from __future__ import annotations

import time

import pytest
import yaml

from robust_compress.data.load import load_split
from robust_compress.data.tasks import load_task
from robust_compress.io import UserError, read_json, write_json
from robust_compress.models.load import load_model
from robust_compress.train.loop import TrainArgs, check_checkpoint, train
from robust_compress.train.losses import REGISTRY, make_loss

from .conftest import LABELS, make_examples, tiny_run_config
from .test_experiment import _exp
from .test_probe_data import _table_task
from .test_trust import cli

# ------------------------------------------- 1. a checkpoint whose removal a kill cut short


def test_a_half_removed_checkpoint_is_removed_not_refused(tmp_path):
    """What a kill during the cleanup after the artifact's rename leaves: the step record, part of
    the weights, no run record. Before: 'written by another run ... pass --no-resume' on every
    rerun (reproduce has no --no-resume, and --clean kept it)."""
    ckpt = tmp_path / "out.partial" / "checkpoint"
    ckpt.mkdir(parents=True)
    write_json(ckpt / "loop_state.json", {"step": 5})
    (ckpt / "model.safetensors").write_bytes(b"x" * 64)
    check_checkpoint(ckpt, {"seed": 0})
    assert not ckpt.exists()


def _train_killed(tiny_dir, tiny_tokenizer, work, run):
    from robust_compress.data.batching import EncodedSplit
    from robust_compress.train.loop import Hook

    data = EncodedSplit(make_examples(64), tiny_tokenizer, 64)
    args = TrainArgs(batch_size=16, max_steps=4, lr=1e-3, checkpoint_every=2)
    ce = make_loss(REGISTRY["ce"].Settings(name="ce"))

    class Stop(Exception):
        pass

    class Kill(Hook):
        def on_step_end(self, model, step):
            if step == 3:
                raise Stop

    with pytest.raises(Stop):
        train(load_model(str(tiny_dir), LABELS), data, args, ce, work, hooks=[Kill()], run=run)

    def again():
        return train(load_model(str(tiny_dir), LABELS), data, args, ce, work, run=run)

    return work / "checkpoint", again


def test_a_checkpoint_missing_a_file_it_lists_starts_over(tiny_dir, tiny_tokenizer, tmp_path):
    """A whole checkpoint resumes; one that lost a file of its completion record (a removal cut
    short) is removed and the run starts over in the same call. Before: 'unreadable checkpoint',
    exit 2, once more per such folder."""
    run = {"seed": 0}
    ckpt, again = _train_killed(tiny_dir, tiny_tokenizer, tmp_path / "whole", run)
    assert "optimizer.bin" in read_json(ckpt / "complete.json")["files"]
    assert again().resumed_from == 2
    ckpt, again = _train_killed(tiny_dir, tiny_tokenizer, tmp_path / "cut", run)
    (ckpt / "optimizer.bin").unlink()
    result = again()
    assert result.resumed_from == 0 and result.steps == 4


def test_clean_removes_a_done_stages_leftover_partial(tmp_path, tiny_dir, tiny_task, monkeypatch):
    """A finished stage never resumes: its `.partial` (a cleanup cut short) is dead weight that
    --clean removes; an unfinished stage keeps its own, to resume from."""
    from robust_compress.stages.graph import Stage
    from robust_compress.study.run import prepare, stale_leftovers

    exp, stages = prepare(_exp(tmp_path, tiny_dir, tiny_task))
    done, todo = stages[0], stages[1]
    arts = tmp_path / "exp" / "artifacts"
    arts.mkdir(parents=True)
    debris = arts / (done.path.name + ".partial")
    (debris / "checkpoint").mkdir(parents=True)
    mine = arts / (todo.path.name + ".partial")
    mine.mkdir()
    monkeypatch.setattr(Stage, "done", lambda s: s is done)
    assert stale_leftovers(exp, stages) == [debris]


# ------------------------------------------- 2. --clean counts only what it removed


def test_clean_leftovers_counts_only_what_it_removed(tmp_path, monkeypatch):
    import shutil

    from robust_compress.study import run as run_mod

    gone, stuck, file = tmp_path / "a.partial", tmp_path / "b.partial", tmp_path / ".c.tmp"
    for d in (gone, stuck):
        (d / "checkpoint").mkdir(parents=True)
        (d / "checkpoint" / "model.safetensors").write_bytes(b"x")
    file.write_bytes(b"y")
    real = shutil.rmtree

    def rmtree(path, ignore_errors=False, onerror=None, **kw):
        if str(path) == str(stuck):  # a folder this user may not delete
            err = PermissionError(13, "Permission denied", str(stuck / "checkpoint"))
            if ignore_errors:
                return
            if onerror is not None:
                return onerror(rmtree, str(stuck / "checkpoint"), (PermissionError, err, None))
            raise err
        return real(path, ignore_errors=ignore_errors, onerror=onerror, **kw)

    monkeypatch.setattr(run_mod.shutil, "rmtree", rmtree)
    removed, kept = run_mod.clean_leftovers([gone, stuck, file])
    assert removed == [gone, file]
    assert [p for p, _ in kept] == [stuck] and "permission denied" in kept[0][1].lower()
    assert stuck.exists() and not gone.exists() and not file.exists()


# ------------------------------------------- 3, 4. executor options checked before any work


def test_a_ray_address_nobody_answers_is_one_line_fast(monkeypatch):
    ray = pytest.importorskip("ray")
    from robust_compress.study.executors import make_executor

    def no_init(*a, **k):
        raise AssertionError("ray.init must not be reached")

    monkeypatch.setattr(ray, "init", no_init)
    t0 = time.perf_counter()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(
            UserError, match=rf"^--address {address}: no Ray cluster answers there \("
        ):
            make_executor("ray", address=address)
    assert time.perf_counter() - t0 < 15


def test_a_dead_ray_address_from_the_command_line(tmp_path, tiny_dir, tiny_task):
    pytest.importorskip("ray")
    path = _exp(tmp_path, tiny_dir, tiny_task, name="dead")
    t0 = time.perf_counter()
    r = cli("reproduce", str(path), "--executor", "ray", "--address", "127.0.0.1:1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().startswith("error: --address 127.0.0.1:1: no Ray cluster answers")
    assert len(r.stderr.strip().splitlines()) == 1
    assert time.perf_counter() - t0 < 100
    assert not (tmp_path / "dead").exists()


def test_slurm_options_that_would_be_ignored_are_refused(monkeypatch):
    submitit = pytest.importorskip("submitit")
    from robust_compress.study.executors import make_executor

    with pytest.raises(UserError, match=r"^--slurm-gpus -3: must be 0 or more$"):
        make_executor("submitit", slurm_gpus=-3)
    monkeypatch.setattr(submitit.AutoExecutor, "which", staticmethod(lambda: "local"))
    for opts, flag in (
        ({"slurm_partition": "gpu"}, "--slurm-partition"),
        ({"slurm_gpus": 2}, "--slurm-gpus"),
    ):
        with pytest.raises(UserError, match=rf"^{flag}: no Slurm here .*ignore"):
            make_executor("submitit", **opts)
    make_executor("submitit", slurm_gpus=0)  # nothing asked of Slurm: fine anywhere
    monkeypatch.setattr(submitit.AutoExecutor, "which", staticmethod(lambda: "slurm"))
    ex = make_executor("submitit", slurm_partition="gpu", slurm_gpus=2)
    assert (ex.partition, ex.gpus) == ("gpu", 2)


# ------------------------------------------- 5. an unclosed CSV quote


@pytest.mark.parametrize(
    "text,line",
    [
        ('s1,s2,label\nx,y,neg\n"unclosed,y,pos\nz,w,neg\n', 3),  # before: 'row has 1 fields'
        ('s1,s2,label\nx,y,neg\nz,w,"pos\nq,r,neg\n', 3),  # before: read as one long label
        ('s1\ts2\tlabel\nx\ty\tneg\nz\t"w\tpos\n', 3),
    ],
)
def test_an_unclosed_quote_is_named(tmp_path, text, line):
    suffix = ".tsv" if "\t" in text else ".csv"
    with pytest.raises(UserError, match=rf"d\{suffix}:{line}: unclosed quote"):
        load_split(_table_task(tmp_path, text, suffix), "train")


# ------------------------------------------- 6. split names are file names


@pytest.mark.parametrize("name", ["dev/x", "..", ".hidden", "a\\b"])
def test_a_split_name_that_is_no_file_name_is_refused_on_load(tiny_task, name):
    spec = yaml.safe_load(tiny_task.read_text())
    spec["splits"][name] = spec["splits"].pop("dev")
    tiny_task.write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError) as e:
        load_task(str(tiny_task))
    msg = str(e.value)
    assert msg.startswith(f"{tiny_task}: ") and f"splits: {name!r}" in msg and "file name" in msg
    assert "\n" not in msg


def test_ordinary_split_names_still_load():
    for task in ("mnli", "qqp", "fever"):
        load_task(task)


# ------------------------------------------- 7. evaluate --task OTHER


def test_evaluate_inherits_task_bound_settings_only_for_the_same_task(tmp_path, tiny_task):
    from robust_compress.stages.evaluate import saved_settings

    model = tmp_path / "m"
    model.mkdir()
    saved = {
        "task": str(tiny_task),
        "max_length": 48,
        "data_dir": "/data",
        "eval_sets": ["dev"],
        "cue": {"rho": 0.9},
        "seed": 3,
        "lr": 0.1,
    }
    (model / "run_config.yaml").write_text(yaml.safe_dump(saved))
    inherit = {k: v for k, v in saved.items() if k not in ("seed", "lr")}
    assert saved_settings(model, None) == inherit
    assert saved_settings(model, str(tiny_task)) == inherit
    other = saved_settings(model, "mnli")
    assert other == {"max_length": 48, "data_dir": "/data"}
    assert saved_settings(tmp_path / "hub-id-or-bare", "mnli") == {}


# ------------------------------------------- 8. speed -o a folder


def test_speed_refuses_a_folder_as_its_output_before_timing(tmp_path, tiny_dir, tiny_task):
    from robust_compress.stages import measure_speed

    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "o")
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(UserError, match=r"out: a folder; speed writes one JSON file"):
        measure_speed({"m": tmp_path / "no-such-model"}, cfg, folder)
