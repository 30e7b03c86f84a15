"""Issue 17, the study half: a stage is done only when everything it produces is there; every input
of a stage, the task file's content included, is in its key; a standalone resume only continues the
run that wrote the checkpoint; nothing a user owns is deleted without --overwrite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from robust_compress.io import UserError
from robust_compress.study.run import prepare, reproduce

from .conftest import tiny_run_config
from .test_experiment import _exp
from .test_trust import cli


def cli_killed_after_checkpoint(args: list[str]):
    """Start a CLI run, SIGKILL it once its first checkpoint is complete; the checkpoint folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import ROOT

    out = Path(args[args.index("-o") + 1])
    ckpt = out.with_name(out.name + ".partial") / "checkpoint"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "robust_compress.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.time()
    while not (ckpt / "loop_state.json").is_file():
        assert p.poll() is None and time.time() - t0 < 300, (
            "the run ended before its first checkpoint"
        )
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return ckpt


def _keys(path):
    return {s.name: s.key for s in prepare(path)[1]}


def test_the_task_files_content_is_in_every_key(tmp_path, tiny_dir, tiny_task):
    """Changing `alpha` or `ood_combine` in a custom task YAML changes the result of RMC and of Δ:
    every stage must rerun (before: every stage stayed [done])."""
    before = _keys(_exp(tmp_path, tiny_dir, tiny_task))
    text = tiny_task.read_text()
    tiny_task.write_text(text.replace("alpha: 0.5", "alpha: 0.3"))
    after_alpha = _keys(_exp(tmp_path, tiny_dir, tiny_task))
    assert all(after_alpha[n] != before[n] for n in before)
    tiny_task.write_text(text + "ood_combine: mean\n")
    after_combine = _keys(_exp(tmp_path, tiny_dir, tiny_task))
    assert all(after_combine[n] != before[n] for n in before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_dir, shared_tiny_task):
    """A small finished study with a bias model (its easy/hard split) and the speed stage."""
    tmp = tmp_path_factory.mktemp("finished")
    path = _exp(
        tmp,
        tiny_dir,
        shared_tiny_task,
        losses=["ce"],
        speed={"examples": 16, "repeats": 1},
        bias_model={"kind": "overlap", "easy_hard_split": "dev"},
        teacher={"model": str(tiny_dir), "train": {"epochs": 1}},
    )
    reproduce(path)
    return path


def test_a_lost_easy_hard_split_comes_back(finished, tmp_path):
    """Before: the split was written after the bias stage counted as done; deleting it (a kill right
    after the rename) left a study that reran nothing and reported no Table 4, with exit 0."""
    exp, _ = prepare(finished)
    study = tmp_path / "copy"
    shutil.copytree(exp.output_dir, study)
    shutil.rmtree(study / "easy_hard")
    r = cli("reproduce", str(finished), "--output-dir", str(study))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (study / "easy_hard" / "dev.parquet").is_file()
    assert "Table 4" in (study / "report" / "report.md").read_text()


def test_every_finished_stage_has_its_record_and_outputs(finished):
    _, stages = prepare(finished)
    for s in stages:
        assert s.done()
        assert (s.path / "stage.json").is_file(), s.name
        if s.kind == "bias":
            assert (s.path / "easy_hard.parquet").is_file()
        if s.kind in ("uncertainty", "speed"):
            assert s.output.is_file() and s.output.parent == s.path


def test_a_stage_without_its_record_is_not_done(finished, tmp_path):
    """A stage folder lacking stage.json (a kill between the artifact and its record, before) is
    rerun."""
    exp, _ = prepare(finished)
    study = tmp_path / "copy"
    shutil.copytree(exp.output_dir, study)
    _, stages = prepare(finished, study)
    victim = next(s for s in stages if s.kind == "compress")
    (victim.path / "stage.json").unlink()
    assert not victim.done()
    reproduce(finished, output_dir=study)
    assert victim.done()


def test_leftovers_of_a_killed_final_write_are_removed(finished, tmp_path):
    exp, _ = prepare(finished)
    study = tmp_path / "copy"
    shutil.copytree(exp.output_dir, study)
    _, stages = prepare(finished, study)
    victim = next(s for s in stages if s.kind == "compress")
    shutil.rmtree(victim.path)
    stale = victim.path.with_name(f".{victim.path.name}.abc123.tmp")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    reproduce(finished, output_dir=study)
    assert victim.done() and not stale.exists()


# ---------------------------------------------------------------- a standalone run's checkpoint


def test_resume_refuses_another_runs_checkpoint_and_keeps_it(tmp_path, tiny_dir, tiny_task):
    """Before: rerunning into the same -o with other settings 'resumed from step 2' of the other run
    and its run_config.yaml claimed settings for steps it did not run; with another --model a
    healthy checkpoint was deleted as 'unreadable'."""
    base = [
        "finetune",
        "--model",
        str(tiny_dir),
        "--task",
        str(tiny_task),
        "-o",
        str(tmp_path / "out"),
        "-s",
        "batch_size=16",
        "-s",
        "max_length=32",
        "-s",
        "checkpoint_every=2",
        "-s",
        f"cache_dir={tmp_path}/c",
        "-s",
        "epochs=40",
    ]
    ckpt = cli_killed_after_checkpoint(base)
    before = sorted(p.name for p in ckpt.iterdir())
    r = cli(*base, "-s", "lr=1e-3", "-s", "seed=7")
    assert r.returncode == 2 and "lr" in r.stderr and "checkpoint" in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1
    other = (
        tmp_path / "other-model"
    )  # another model: other weights (the same content would be the same run)
    shutil.copytree(tiny_dir, other)
    from safetensors.torch import load_file, save_file

    w = load_file(str(other / "model.safetensors"))
    w["classifier.bias"] = w["classifier.bias"] + 1
    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    r = cli(*[str(other) if a == str(tiny_dir) else a for a in base])
    assert r.returncode == 2 and "model" in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in ckpt.iterdir()) == before  # kept
    r = cli(*base)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed" in (r.stdout + r.stderr)


def test_a_corrupt_rng_state_is_not_swallowed(tmp_path, tiny_dir, tiny_task):
    """Before: accelerate logged 'Could not load random states' at info level and the run resumed
    with other dropout masks: exit 0, weights unlike an uninterrupted run's."""
    base = [
        "finetune",
        "--model",
        str(tiny_dir),
        "--task",
        str(tiny_task),
        "-o",
        str(tmp_path / "out"),
        "-s",
        "batch_size=16",
        "-s",
        "max_length=32",
        "-s",
        "checkpoint_every=2",
        "-s",
        f"cache_dir={tmp_path}/c",
        "-s",
        "epochs=40",
    ]
    ckpt = cli_killed_after_checkpoint(base)
    rng = next(ckpt.glob("random_states_*.pkl"))
    rng.write_bytes(rng.read_bytes()[:40])
    r = cli(*base)
    assert r.returncode == 2 and "random_states" in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------- settings that cannot be trained on


@pytest.mark.parametrize(
    "setting,match",
    [
        ("lr=.inf", "lr"),
        ("epochs=.inf", "epochs"),
        ("lr=.nan", "lr"),
        ("seed=-1", "seed"),
        ("seed=4294967296", "seed"),
        ("batch_size=1000000000000000000000000000000", "batch_size"),
        ("data_seed=-3", "data_seed"),
    ],
)
def test_impossible_settings_are_refused_by_the_config(
    tmp_path, tiny_dir, tiny_task, setting, match
):
    r = cli(
        "finetune",
        "--model",
        str(tiny_dir),
        "--task",
        str(tiny_task),
        "-o",
        str(tmp_path / "o"),
        "-s",
        setting,
    )
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "o").exists()


def test_a_study_refuses_impossible_seeds_in_its_dry_run(tmp_path, tiny_dir, tiny_task):
    for seeds in ([-1], [2**32]):
        with pytest.raises(UserError, match="seeds"):
            prepare(_exp(tmp_path, tiny_dir, tiny_task, seeds=seeds))


def test_a_non_finite_loss_stops_the_run_and_saves_nothing(tmp_path, tiny_dir, tiny_task):
    """Before: `-s lr=1e30`-like runs saved a model with NaN weights, exit 0."""
    from robust_compress.stages import finetune

    cfg = tiny_run_config(tiny_dir, tiny_task, tmp_path / "o", lr=1e30, max_steps=6, bf16=False)
    with pytest.raises(UserError, match="not finite"):
        finetune(cfg)
    assert not (tmp_path / "o").exists()


def test_max_length_beyond_the_models_positions_is_refused_before_training(
    tmp_path, tiny_dir, tiny_task
):
    r = cli(
        "finetune",
        "--model",
        str(tiny_dir),
        "--task",
        str(tiny_task),
        "-o",
        str(tmp_path / "o"),
        "-s",
        "max_length=100",
    )  # the tiny model has 64 positions
    assert r.returncode == 2 and "max_length" in r.stderr and "64" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("model_type", ["nonexistent-type", None])
def test_an_unknown_or_missing_model_type_is_one_line(tmp_path, tiny_dir, tiny_task, model_type):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    if model_type is None:
        cfg.pop("model_type")
    else:
        cfg["model_type"] = model_type
    (bad / "config.json").write_text(json.dumps(cfg))
    r = cli("finetune", "--model", str(bad), "--task", str(tiny_task), "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "model_type" in r.stderr, r.stderr[
        -2000:
    ]
    path = _exp(tmp_path, bad, tiny_task)
    r = cli("reproduce", str(path), "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "model_type" in r.stderr, r.stderr[
        -2000:
    ]


def test_compression_on_finetune_is_refused_not_dropped(tmp_path, tiny_dir, tiny_task):
    r = cli(
        "finetune",
        "--model",
        str(tiny_dir),
        "--task",
        str(tiny_task),
        "-o",
        str(tmp_path / "o"),
        "-s",
        "compression.method=magnitude",
    )
    assert r.returncode == 2 and "compress" in r.stderr, r.stderr[-2000:]


def test_loss_settings_of_an_unused_loss_are_refused(tmp_path, tiny_dir, tiny_task):
    with pytest.raises(UserError, match="loss_settings.*poe"):
        prepare(_exp(tmp_path, tiny_dir, tiny_task, loss_settings={"poe": {}}))


def test_an_unwritable_output_is_refused_in_the_dry_run(tmp_path, tiny_dir, tiny_task):
    path = _exp(tmp_path, tiny_dir, tiny_task)
    exp = yaml.safe_load(path.read_text())
    exp["output_dir"] = "/proc/robust-compress-probe"
    path.write_text(yaml.safe_dump(exp))
    r = cli("reproduce", str(path), "--dry-run")
    assert r.returncode == 2 and "/proc" in r.stderr, r.stderr[-2000:]


def test_config_errors_name_the_line(tmp_path, tiny_dir, tiny_task):
    path = _exp(tmp_path, tiny_dir, tiny_task, defaults={"batch_size": 16, "lrr": 3})
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "lrr" in t)
    with pytest.raises(UserError, match=rf"{path.name}:{line}: defaults\.lrr"):
        prepare(path)
    run = tmp_path / "run.yaml"
    run.write_text(f"model: {tiny_dir}\ntask: {tiny_task}\nbatch_size: 16\nepochs: -1\n")
    r = cli("finetune", "-c", str(run), "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "run.yaml:4: epochs" in r.stderr, r.stderr[-2000:]


# ---------------------------------------------------------------- nothing a user owns is deleted


def _folder_with(tmp_path, name="mine"):
    d = tmp_path / name
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    return d


def test_evaluate_never_deletes_a_folder(tmp_path, tiny_dir, tiny_task):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    before = sorted(p.name for p in model.iterdir())
    r = cli("evaluate", str(model), "--task", str(tiny_task), "-o", str(model))
    assert r.returncode == 2 and sorted(p.name for p in model.iterdir()) == before, r.stderr[-2000:]
    mine = _folder_with(tmp_path)
    r = cli("evaluate", str(model), "--task", str(tiny_task), "-o", str(mine))
    assert r.returncode == 2 and "--overwrite" in r.stderr and (mine / "precious.txt").is_file()
    r = cli("evaluate", str(model), "--task", str(tiny_task), "-o", str(mine), "--overwrite")
    assert r.returncode == 2 and (mine / "precious.txt").is_file()  # not the tool's: never replaced
    assert "did not write" in r.stderr and not (mine / "summary.json").exists()
    ours = tmp_path / "ours"
    for flags in ([], ["--overwrite"]):  # the tool's own earlier output: replaced with --overwrite
        r = cli("evaluate", str(model), "--task", str(tiny_task), "-o", str(ours), *flags)
        assert r.returncode == 0 and (ours / "summary.json").is_file(), r.stderr[-2000:]
    r = cli(
        "evaluate", str(model), "--task", str(tiny_task)
    )  # default: beside the model, not inside it
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in model.iterdir()) == before


def test_report_and_export_never_delete_a_folder(finished, tmp_path):
    exp, _ = prepare(finished)
    mine = _folder_with(tmp_path)
    for args in (["-o", str(mine)], ["--export", str(mine)]):
        r = cli("report", exp.output_dir, *args)
        assert r.returncode == 2 and "--overwrite" in r.stderr, r.stderr[-2000:]
        assert (mine / "precious.txt").read_text() == "keep me"
    r = cli("report", exp.output_dir, "-o", exp.output_dir)
    assert r.returncode == 2 and (tmp_path / exp.output_dir).exists()
    r = cli("report", exp.output_dir, "--export", str(mine), "--overwrite")
    assert r.returncode == 2 and "did not write" in r.stderr  # --overwrite: only the tool's own
    assert sorted(p.name for p in mine.iterdir()) == ["precious.txt"]
    for flags in ([], ["--overwrite"]):
        r = cli("report", exp.output_dir, "--export", str(tmp_path / "ours"), *flags)
        assert r.returncode == 0 and (tmp_path / "ours" / "index.json").is_file(), r.stderr[-2000:]
    r = cli("report", exp.output_dir)  # its own report folder is replaced: the tool wrote it
    assert r.returncode == 0, r.stderr[-2000:]


def test_evaluate_refuses_a_bare_encoder(tmp_path, tiny_dir, tiny_task):
    """Before: a folder with no classifier was scored with a random head, exit 0."""
    from transformers import BertForSequenceClassification

    bare = tmp_path / "bare"
    BertForSequenceClassification.from_pretrained(tiny_dir).bert.save_pretrained(bare)
    for f in tiny_dir.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, bare / f.name)
    r = cli("evaluate", str(bare), "--task", str(tiny_task), "-o", str(tmp_path / "e"))
    assert r.returncode == 2 and "classifier" in r.stderr, r.stderr[-2000:]
    r = cli(
        "evaluate", str(bare), "--task", str(tiny_task), "-o", str(tmp_path / "e"), "--new-head"
    )
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------ a full disk: one line, nothing half-written


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size (root in a container may mount one; else the test skips)."""
    import subprocess

    mounted = []

    def make(size: str) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
            capture_output=True,
            check=False,
        )
        if r.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", str(d)], capture_output=True, check=False)


@pytest.mark.parametrize("size,where", [("150k", "checkpoint"), ("120k", "final write")])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(
    small_disk, tiny_dir, tiny_task, size, where
):
    """Before: a traceback, exit 1, and a checkpoint.tmp left behind."""
    disk = small_disk(size)
    every = "2" if where == "checkpoint" else "1000"
    r = cli(
        "finetune",
        "--model",
        str(tiny_dir),
        "--task",
        str(tiny_task),
        "-o",
        str(disk / "out"),
        "-s",
        "batch_size=16",
        "-s",
        "max_length=32",
        "-s",
        f"checkpoint_every={every}",
        "-s",
        f"cache_dir={disk.parent}/c",
    )
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "no space left on device" in r.stderr
    err = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and str(disk) in err[0]
    left = [p.name for p in disk.rglob("*")]
    assert not [n for n in left if n.endswith(".tmp") or ".tmp." in n], left
    assert not (disk / "out").exists()


def test_a_full_disk_in_a_study_is_one_line_and_the_rerun_finishes(
    small_disk, tmp_path, tiny_dir, tiny_task
):
    disk = small_disk("200k")
    path = _exp(
        tmp_path,
        tiny_dir,
        tiny_task,
        losses=["ce"],
        uncertainty={"source": "dynamics"},
        teacher={"model": str(tiny_dir), "train": {"epochs": 2}},
    )
    exp = yaml.safe_load(path.read_text())
    exp["defaults"]["checkpoint_every"] = 1000
    path.write_text(yaml.safe_dump(exp))
    r = cli("reproduce", str(path), "--output-dir", str(disk / "study"))
    assert (
        r.returncode == 2 and "no space left on device" in r.stderr and "Traceback" not in r.stderr
    ), r.stderr[-3000:]
    assert not [
        p
        for p in (disk / "study").rglob("stage.json")
        if not (p.parent / "summary.json").is_file()
        and p.parent.name.startswith(("teacher", "compress"))
    ]
    r = cli("reproduce", str(path), "--output-dir", str(tmp_path / "roomy"))
    assert r.returncode == 0, r.stderr[-3000:]


def test_stale_partials_are_reported_and_cleaned_only_on_request(finished, tmp_path):
    """Before: partial checkpoints of stages whose key changed (133 MB + 42 MB) stayed forever."""
    exp, stages = prepare(finished)
    study = tmp_path / "copy"
    shutil.copytree(exp.output_dir, study)
    stale = study / "artifacts" / "compress-0123456789ab.partial"
    (stale / "checkpoint").mkdir(parents=True)
    (stale / "checkpoint" / "model.safetensors").write_bytes(b"x" * 2048)
    tmp_left = study / "artifacts" / ".teacher-ba9876543210.abc.tmp"
    tmp_left.mkdir()
    # a finished stage never resumes: its own `.partial` (a cleanup cut short) is dead weight too
    # (issue 28; an unfinished stage keeps its own: test_weak28)
    done = study / "artifacts" / (stages[-1].path.name + ".partial")
    done.mkdir()
    r = cli("reproduce", str(finished), "--output-dir", str(study), "--dry-run")
    assert r.returncode == 0 and "3 partial checkpoint(s)" in r.stdout and "--clean" in r.stdout, (
        r.stdout
    )
    assert stale.exists() and tmp_left.exists() and done.exists()
    r = cli("reproduce", str(finished), "--output-dir", str(study), "--clean", "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not stale.exists() and not tmp_left.exists() and not done.exists()


def test_checkpoint_files_get_the_umask_permissions(tmp_path, tiny_dir, tiny_task):
    """Before: accelerate's checkpoint weights were created 0600, unlike every other artifact."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        ckpt = cli_killed_after_checkpoint(
            [
                "finetune",
                "--model",
                str(tiny_dir),
                "--task",
                str(tiny_task),
                "-o",
                str(tmp_path / "out"),
                "-s",
                "batch_size=16",
                "-s",
                "max_length=32",
                "-s",
                "checkpoint_every=2",
                "-s",
                "epochs=40",
                "-s",
                f"cache_dir={tmp_path}/c",
            ]
        )
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ckpt.iterdir() if p.is_file()}
    assert modes and all(m == 0o644 for m in modes.values()), modes


def test_a_run_config_given_to_reproduce_points_to_finetune():
    r = cli("reproduce", "configs/teacher-minilm-l6.yaml", "--dry-run")
    assert r.returncode == 2 and "finetune -c configs/teacher-minilm-l6.yaml" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_permission_denied_is_one_line_even_when_the_suite_runs_as_root(tmp_path, monkeypatch):
    """The permission branch used to be skipped as root, and CI runs as root. Now: a read-only file
    system refuses root too (a real EROFS through the write probe, on a tmpfs mounted read-only),
    and a folder the user may not write is refused — really for a non-root user, and for root by
    giving `os.access` a non-root user's answer (root bypasses the permission bits)."""
    import os
    import subprocess

    from robust_compress.io import check_writable

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(ro)))
        with pytest.raises(UserError, match="permission denied"):
            check_writable(ro / "study")
    finally:
        ro.chmod(0o755)
        monkeypatch.undo()
    mnt = tmp_path / "rofs"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)],
            capture_output=True,
            check=False,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        with pytest.raises(UserError, match="read-only file system"):
            check_writable(mnt / "study")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)


def test_a_fully_cached_study_says_what_it_reused(finished, tmp_path):
    """Before: "0/0 stages" on a terminal and nothing at all in a log."""
    exp, stages = prepare(finished)
    study = tmp_path / "copy"
    shutil.copytree(exp.output_dir, study)
    r = cli("reproduce", str(finished), "--output-dir", str(study), "--no-report")
    assert (
        r.returncode == 0 and f"{len(stages)} stages: {len(stages)} reused, 0 to run" in r.stdout
    ), r.stdout


def test_a_missing_teacher_path_is_fine_tuned_first_from_its_run_config(
    tmp_path, tiny_dir, tiny_task
):
    """The presets' headers said they train the README teacher when it is missing; they refused."""
    teacher = tmp_path / "teacher"
    run = tmp_path / "teacher.yaml"
    run.write_text(
        yaml.safe_dump(
            {
                "model": str(tiny_dir),
                "task": str(tiny_task),
                "output_dir": str(teacher),
                "max_steps": 4,
                "batch_size": 16,
                "max_length": 32,
                "cache_dir": str(tmp_path / "cache"),
            }
        )
    )
    path = _exp(
        tmp_path,
        tiny_dir,
        tiny_task,
        losses=["ce"],
        uncertainty={"source": "dynamics"},
        teacher={"model": str(tiny_dir), "path": str(teacher), "config": str(run)},
    )
    r = cli("reproduce", str(path), "--dry-run")
    assert r.returncode == 0 and "is missing: the study fine-tunes it first" in r.stdout, r.stderr[
        -2000:
    ]
    assert not teacher.exists()
    r = cli("reproduce", str(path), "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (teacher / "model.safetensors").is_file()
    _, stages = prepare(path)
    assert all(s.done() for s in stages) and stages[0].external["model"] != "pending"
    bad = tmp_path / "elsewhere.yaml"
    bad.write_text(run.read_text().replace(str(teacher), str(tmp_path / "other")))
    with pytest.raises(UserError, match="writes to"):
        prepare(
            _exp(
                tmp_path,
                tiny_dir,
                tiny_task,
                name="x2",
                losses=["ce"],
                teacher={
                    "model": str(tiny_dir),
                    "path": str(tmp_path / "nowhere"),
                    "config": str(bad),
                },
            )
        )


def test_artifact_files_are_validated_by_their_writer_and_every_reader(tmp_path, finished):
    """One schema per artifact file (robust_compress/schemas.py): a writer cannot write a broken
    one, and a broken one on disk is one line naming the file and the key, wherever it is read."""
    from robust_compress import schemas
    from robust_compress.report import build_report
    from robust_compress.stages.artifact import write_artifact

    with pytest.raises(UserError, match="summary.json: splits: Field required"):
        write_artifact(tmp_path / "a", files={"summary.json": {"no": "splits"}})
    assert not (tmp_path / "a").exists()
    exp, _ = prepare(finished)
    study = tmp_path / "copy"
    shutil.copytree(exp.output_dir, study)
    entry = json.loads((study / "index.json").read_text())[
        1
    ]  # (paths point at the shared study: copy it)
    data = json.loads((Path(entry["path"]) / "summary.json").read_text())
    data["splits"]["dev"]["role"] = "testing"
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(
        UserError, match=r"summary.json: splits.dev.role: Input should be 'id', 'ood' or 'cue'"
    ):
        schemas.read(tmp_path / "summary.json")
    index = json.loads((study / "index.json").read_text())
    index[0]["seed"] = "forty-two"
    (study / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"index.json: 0.seed: Input should be a valid integer"):
        build_report(study)
