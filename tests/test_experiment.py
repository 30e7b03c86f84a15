import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from robust_compress.io import UserError
from robust_compress.study.plan import plan
from robust_compress.study.run import prepare, reproduce
from robust_compress.study.spec import load_experiment

from .conftest import ROOT


def _exp(tmp_path, tiny_dir, tiny_task, name="exp", **over):
    exp = {
        "name": "tiny",
        "task": str(tiny_task),
        "output_dir": str(tmp_path / name),
        "seeds": [0],
        "defaults": {
            "batch_size": 16,
            "lr": 2e-3,
            "max_length": 32,
            "checkpoint_every": 5,
            "cache_dir": str(tmp_path / "cache"),
        },
        "teacher": {"model": str(tiny_dir), "train": {"epochs": 4}},
        "compressions": [{"name": "mag-0.5", "method": "magnitude", "settings": {"sparsity": 0.5}}],
        "losses": ["ce", "distil", "rmc"],
        "uncertainty": {"source": "snapshots", "sparsities": [0.3, 0.6]},
        "speed": None,
    }
    for k, v in over.items():
        exp[k] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_plan_graph(tmp_path, tiny_dir, tiny_task):
    _, stages = prepare(_exp(tmp_path, tiny_dir, tiny_task))
    kinds = [(s.kind, s.name) for s in stages]
    assert kinds[0] == ("teacher", "teacher")
    by = {s.name: s for s in stages}
    assert [d.name for d in by["mag-0.5/rmc/seed0"].deps] == ["teacher", "uncertainty"]
    assert [d.name for d in by["uncertainty"].deps] == ["uncertainty-pruning"]
    assert by["uncertainty-pruning"].deps[0].name == "teacher"
    assert len({s.path for s in stages}) == len(stages)  # distinct artifacts


def test_paper_uncertainty_source_runs_one_pruning_per_sparsity(tmp_path, tiny_dir, tiny_task):
    _, stages = prepare(
        _exp(
            tmp_path, tiny_dir, tiny_task, uncertainty={"source": "runs", "sparsities": [0.3, 0.6]}
        )
    )
    runs = [s for s in stages if s.kind == "uncertainty-run"]
    assert [s.config.compression.sparsity for s in runs] == [0.3, 0.6]
    assert [d.name for d in next(s for s in stages if s.kind == "uncertainty").deps] == [
        s.name for s in runs
    ]


def test_quantization_trains_nothing_so_it_gets_one_row(tmp_path, tiny_dir, tiny_task):
    """int8 has no training: one run (first seed, no loss variants), however many seeds and
    losses."""
    _, stages = prepare(
        _exp(
            tmp_path,
            tiny_dir,
            tiny_task,
            seeds=[0, 1, 2],
            compressions=[
                {"name": "mag", "method": "magnitude", "settings": {"sparsity": 0.5}},
                {"name": "q", "method": "quantize"},
            ],
        )
    )
    assert [s.name for s in stages if s.name.startswith("q/")] == ["q/ce/seed0"]
    assert len([s for s in stages if s.name.startswith("mag/")]) == 3 * 3  # 3 losses x 3 seeds


def test_changed_setting_changes_only_dependents(tmp_path, tiny_dir, tiny_task):
    a = {s.name: s.key for s in prepare(_exp(tmp_path, tiny_dir, tiny_task))[1]}
    b = {
        s.name: s.key
        for s in prepare(
            _exp(
                tmp_path,
                tiny_dir,
                tiny_task,
                name="exp2",
                uncertainty={"source": "snapshots", "sparsities": [0.3, 0.7]},
            )
        )[1]
    }
    changed = {n for n in a if a[n] != b[n]}
    assert changed == {"uncertainty-pruning", "uncertainty", "mag-0.5/rmc/seed0"}


def test_a_given_teacher_is_part_of_every_downstream_key(tmp_path, tiny_dir, tiny_task):
    """Adding `teacher.path` (another teacher) must rerun everything trained against it; so must a
    changed teacher folder, even under the same path."""
    given = tmp_path / "given-teacher"
    shutil.copytree(tiny_dir, given)
    trained = {s.name: s.key for s in prepare(_exp(tmp_path, tiny_dir, tiny_task))[1]}
    with_path = {
        s.name: s.key
        for s in prepare(
            _exp(
                tmp_path, tiny_dir, tiny_task, teacher={"model": str(tiny_dir), "path": str(given)}
            )
        )[1]
    }
    assert all(with_path[n] != trained[n] for n in trained), (
        "a stage kept its key under another teacher"
    )
    (given / "config.json").write_text(
        (given / "config.json").read_text().replace('"hidden_act"', '"hidden_act" ')
    )
    from safetensors.torch import load_file, save_file

    w = load_file(str(given / "model.safetensors"))
    w["classifier.bias"] = w["classifier.bias"] + 1
    save_file(w, str(given / "model.safetensors"), metadata={"format": "pt"})
    changed = {
        s.name: s.key
        for s in prepare(
            _exp(
                tmp_path, tiny_dir, tiny_task, teacher={"model": str(tiny_dir), "path": str(given)}
            )
        )[1]
    }
    assert all(changed[n] != with_path[n] for n in trained)


def test_a_changed_data_file_changes_every_key(tmp_path, tiny_dir, tiny_task):
    before = {s.name: s.key for s in prepare(_exp(tmp_path, tiny_dir, tiny_task))[1]}
    dev = tmp_path / "data" / "dev.jsonl"
    lines = dev.read_text().splitlines()
    row = json.loads(lines[0])
    row["b"] = row["b"] + " changed"
    dev.write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    after = {s.name: s.key for s in prepare(_exp(tmp_path, tiny_dir, tiny_task))[1]}
    assert all(after[n] != before[n] for n in before)


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"compressions": [{"name": "x", "method": "bogus"}]}, r"compressions\.0\.method"),
        ({"task": "nonexistent-task"}, "unknown task"),
        (
            {"compressions": [{"name": "x", "method": "magnitude", "settings": {"sparsity": 1.5}}]},
            r"\(x\) settings\.sparsity",
        ),
        ({"losses": ["ce", "poe"]}, "bias_model"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"defaults": {"lrr": 3}}, r"defaults\.lrr"),
        ({"bias_model": {"kind": "overlap", "train": {"lrr": 3}}}, r"bias_model\.train\.lrr"),
        (
            {
                "compressions": [
                    {
                        "name": "x",
                        "method": "magnitude",
                        "settings": {"sparsity": 0.5},
                        "train": {"lrr": 3},
                    }
                ]
            },
            r"compressions\.0\.train\.lrr",
        ),
        ({"loss_settings": {"rmc": {"alhpa": 0.3}}}, r"loss_settings\.rmc\.alhpa"),
        ({"uncertainty": {"sparsities": [0.3, 1.2]}}, r"uncertainty\.sparsities"),
        (
            {"compressions": [{"name": "h", "method": "heads", "settings": {"heads": 99}}]},
            r"stage h/ce/seed0: heads: cannot remove 99 of 8 heads",
        ),
        (
            {"compressions": [{"name": "t", "method": "truncate", "settings": {"layers": 5}}]},
            "cannot keep layers",
        ),
        ({"bias_model": {"kind": "overlap", "easy_hard_split": "nope"}}, "easy_hard_split 'nope'"),
    ],
)
def test_malformed_experiment_fails_before_work(tmp_path, tiny_dir, tiny_task, patch, match):
    path = _exp(tmp_path, tiny_dir, tiny_task, **patch)
    with pytest.raises(UserError, match=match):
        prepare(path)
    assert not (tmp_path / "exp").exists()


def test_bad_data_and_unwritable_output_are_found_before_work(tmp_path, tiny_dir, tiny_task):
    bad = tmp_path / "data" / "ood.jsonl"
    bad.write_text(
        bad.read_text() + '{"a": "x", "b": "y", "label": "maybe", "kind": "k1", "uid": "z"}\n'
    )
    with pytest.raises(UserError, match=r"ood\.jsonl:65: unknown label 'maybe'"):
        prepare(_exp(tmp_path, tiny_dir, tiny_task))
    bad.write_text("\n".join(bad.read_text().splitlines()[:-1]) + "\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="a-file: not a folder"):
        prepare(_exp(tmp_path, tiny_dir, tiny_task, output_dir=str(blocker / "study")))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(
            ro, os.W_OK
        ):  # (root can write anywhere: then only the case above applies)
            with pytest.raises(UserError, match="permission denied"):
                prepare(_exp(tmp_path, tiny_dir, tiny_task, output_dir=str(ro / "study")))
    finally:
        ro.chmod(0o700)


def test_dry_run_writes_nothing(tmp_path, tiny_dir, tiny_task):
    path = _exp(tmp_path, tiny_dir, tiny_task)
    r = subprocess.run(
        [sys.executable, "-m", "robust_compress.cli", "reproduce", str(path), "--dry-run"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"\d+ stages; \d+ stages to run, about \d+m\d\ds on this machine", r.stdout), (
        r.stdout[-500:]
    )
    assert not (tmp_path / "exp").exists()


def _reproduce(path, env):
    return subprocess.Popen(
        [sys.executable, "-m", "robust_compress.cli", "reproduce", str(path), "--no-report"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkilled_study_resumes_to_identical_results(tmp_path, tiny_dir, tiny_task):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    kw = {"losses": ["ce"], "teacher": {"model": str(tiny_dir), "train": {"max_steps": 150}}}
    clean = _exp(tmp_path, tiny_dir, tiny_task, name="clean", **kw)
    p = _reproduce(clean, env)
    assert p.wait(timeout=600) == 0, p.stdout.read()[-3000:]

    killed = _exp(tmp_path, tiny_dir, tiny_task, name="killed", **kw)
    p = _reproduce(killed, env)
    deadline = time.time() + 300
    while not list(
        (tmp_path / "killed" / "artifacts").glob("*.partial/checkpoint/loop_state.json")
    ):
        assert time.time() < deadline and p.poll() is None, (
            "no checkpoint appeared before the run ended"
        )
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p = _reproduce(killed, env)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    assert "resumed from step" in out

    def results(root):
        rows = {}
        for summary in sorted((root / "artifacts").glob("*/summary.json")):
            preds = pd.read_parquet(summary.parent / "predictions" / "dev.parquet")
            rows[summary.parent.name] = (
                json.loads(summary.read_text())["splits"]["dev"]["accuracy"],
                preds["p_entailment"].round(6).tolist(),
            )
        return rows

    a, b = results(tmp_path / "clean"), results(tmp_path / "killed")
    assert a.keys() == b.keys() and len(a) == 2
    assert a == b


def test_shards_partition_the_compressed_runs(tmp_path, tiny_dir, tiny_task, monkeypatch):
    """--shard i/n: each compressed run is done by exactly one shard; shared prerequisites by
    any."""
    from robust_compress.study import run

    path = _exp(
        tmp_path,
        tiny_dir,
        tiny_task,
        losses=["ce", "distil"],
        compressions=[
            {"name": f"m{i}", "method": "magnitude", "settings": {"sparsity": 0.1 * i}}
            for i in range(1, 4)
        ],
    )
    ran: dict[int, list[str]] = {0: [], 1: []}
    for shard in (0, 1):
        monkeypatch.setattr(run, "run_stage", lambda s, r, shard=shard: ran[shard].append(s.name))
        reproduce(path, shard=(shard, 2))
    compressed = [n for n in ran[0] + ran[1] if n.startswith("m")]
    assert sorted(compressed) == sorted(set(compressed)) and len(compressed) == 6
    assert "teacher" in ran[0] and "teacher" in ran[1]


def test_full_tiny_study_with_rmc_bias_speed_and_report(tmp_path, tiny_dir, tiny_task):
    """Every stage kind runs for real (teacher, bias model, snapshot uncertainty, ce/distil/rmc/poe,
    speed), then the report is built from the saved predictions; a rerun finds everything done."""
    from robust_compress.report import build_report

    path = _exp(
        tmp_path,
        tiny_dir,
        tiny_task,
        losses=["ce", "distil", "rmc", "poe"],
        speed={"examples": 32, "repeats": 1},
        bias_model={"kind": "overlap", "easy_hard_split": "dev"},
    )
    stages = reproduce(path)
    assert all(s.done() for s in stages)
    root = tmp_path / "exp"
    index = json.loads((root / "index.json").read_text())
    assert {e["loss"] for e in index if not e["is_teacher"]} == {"ce", "distil", "rmc", "poe"}
    assert (root / "easy_hard" / "dev.parquet").is_file()
    agree = json.loads((root / "analysis" / "agreement.json").read_text())
    # by hand: the |easy| lowest-uncertainty training examples against the bias model's easy set
    import numpy as np

    from robust_compress.data.load import load_train_split

    unc = next(s for s in stages if s.kind == "uncertainty")
    bias = next(s for s in stages if s.kind == "bias")
    examples = load_train_split(unc.resolve().data_args()).examples
    v = pd.read_parquet(unc.output).set_index("id").loc[[e["id"] for e in examples], "v"].to_numpy()
    probs = (
        pd.read_parquet(bias.path / "train_probs.parquet")
        .set_index("id")
        .loc[[e["id"] for e in examples]]
    )
    gold = np.array([e["label"] for e in examples])
    easy = probs[[f"crossfit_p{j}" for j in range(3)]].to_numpy().argmax(1) == gold
    low = np.zeros(len(v), bool)
    low[np.argsort(v, kind="stable")[: easy.sum()]] = True
    assert agree["agreement"] == pytest.approx(float((low == easy).mean()), abs=1e-12)
    assert agree["bias_easy_fraction"] == pytest.approx(easy.mean(), abs=1e-12)
    speed = json.loads((root / "speed.json").read_text())["examples_per_s"]
    assert set(speed) == {e["name"] for e in index} and all(v > 0 for v in speed.values())
    report = build_report(root)
    html = (report / "report.html").read_text()
    assert "Table 4: Easy / hard examples of dev" in html and "Speed-up" in html
    assert html.count("<img") >= 3
    timings = pd.read_csv(report / "speed.csv").set_index(["level", "name"])
    for (
        name,
        rate,
    ) in speed.items():  # each speed-up is that model's examples/s over the teacher's, by hand
        assert timings.loc[("run", name), "speedup"] == pytest.approx(
            rate / speed["teacher"], abs=1e-12
        )
    again = reproduce(path)
    assert [s.key for s in again] == [s.key for s in stages]


def test_concurrent_shards_run_each_stage_once(tmp_path, tiny_dir, tiny_task):
    """Two shards started at once share the prerequisites through stage locks: every stage runs in
    exactly one process, a JTT run waits for its vanilla model in the other shard, and the study
    ends complete."""
    path = _exp(
        tmp_path,
        tiny_dir,
        tiny_task,
        losses=["ce", "jtt"],
        compressions=[
            {"name": f"m{i}", "method": "magnitude", "settings": {"sparsity": 0.2 * i}}
            for i in (1, 2)
        ],
    )
    cmd = [sys.executable, "-m", "robust_compress.cli", "reproduce", str(path), "--no-report"]
    procs = [
        subprocess.Popen(
            cmd + ["--shard", f"{i}/2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    started = [
        line.split("] ", 1)[1].split(" (")[0]
        for out in outs
        for line in out.splitlines()
        if line.startswith("=== [")
    ]
    stages = plan(load_experiment(path))
    _, checked = prepare(path)
    assert all(s.done() for s in checked)
    from robust_compress.study.live import title

    assert sorted(started) == sorted(title(s) for s in stages), outs  # each exactly once


def test_stage_settings_outside_the_run_config_are_in_the_key(tmp_path, tiny_dir, tiny_task):
    """The bias model's kind, the uncertainty source and its sparsities change what a stage
    makes."""

    def keys(**over):
        return {s.name: s.key for s in prepare(_exp(tmp_path, tiny_dir, tiny_task, **over))[1]}

    one = keys(uncertainty={"source": "oneshot", "sparsities": [0.3, 0.6]})
    two = keys(uncertainty={"source": "oneshot", "sparsities": [0.3, 0.7]})
    assert (
        one["uncertainty"] != two["uncertainty"]
        and one["mag-0.5/rmc/seed0"] != two["mag-0.5/rmc/seed0"]
    )
    assert one["mag-0.5/ce/seed0"] == two["mag-0.5/ce/seed0"]
    a = keys(losses=["ce", "poe"], bias_model={"kind": "overlap", "easy_hard_split": "dev"})
    b = keys(losses=["ce", "poe"], bias_model={"kind": "partial", "easy_hard_split": "dev"})
    assert a["mag-0.5/poe/seed0"] != b["mag-0.5/poe/seed0"]


def test_an_explicit_null_override_unsets_the_default(tmp_path, tiny_dir, tiny_task):
    """`train: {train_limit: null}` for the teacher means the whole training split, not the
    default."""
    _, stages = prepare(
        _exp(
            tmp_path,
            tiny_dir,
            tiny_task,
            defaults={
                "batch_size": 16,
                "max_length": 32,
                "train_limit": 50,
                "cache_dir": str(tmp_path / "c"),
            },
            teacher={"model": str(tiny_dir), "train": {"train_limit": None}},
        )
    )
    assert stages[0].config.run.train_limit is None
    assert next(s for s in stages if s.kind == "compress").config.run.train_limit == 50


def test_a_missing_given_teacher_is_named_before_work(tmp_path, tiny_dir, tiny_task):
    with pytest.raises(UserError, match="teacher.path .*no-teacher: not found; fine-tune it first"):
        prepare(
            _exp(
                tmp_path,
                tiny_dir,
                tiny_task,
                teacher={"model": str(tiny_dir), "path": str(tmp_path / "no-teacher")},
            )
        )


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_is_valid(preset):
    """Experiment presets type-check (their data and models are checked when they run); run configs
    validate as RunConfigs."""
    from robust_compress.config import load_config

    raw = yaml.safe_load(preset.read_text())
    if "compressions" in raw:
        load_experiment(preset)
    else:
        load_config(preset)


def test_the_cpu_sized_mpnet_preset_is_rows_of_the_full_one():
    """configs/mnli-mpnet-rmc-cpu.yaml is reported as the full preset's Vanilla/RMC rows: everything
    but its name, folder and choice of rows must stay as in configs/mnli-mpnet.yaml."""
    full = yaml.safe_load((ROOT / "configs" / "mnli-mpnet.yaml").read_text())
    part = yaml.safe_load((ROOT / "configs" / "mnli-mpnet-rmc-cpu.yaml").read_text())
    own = {"name", "output_dir", "compressions", "losses"}
    assert {k: v for k, v in part.items() if k not in own} == {
        k: v for k, v in full.items() if k not in own
    }
    assert all(c in full["compressions"] for c in part["compressions"])
    assert set(part["losses"]) <= set(full["losses"])


def test_the_mpnet_mitigation_preset_is_the_mitigation_study_with_another_teacher():
    """configs/mnli-mitigation-mpnet.yaml reads each of its rows beside the MiniLM study's: the same
    data, cue, evaluation subsets and bias models (so their stages share keys), only the teacher and
    the rows differ."""
    minilm = yaml.safe_load((ROOT / "configs" / "mnli-mitigation.yaml").read_text())
    mpnet = yaml.safe_load((ROOT / "configs" / "mnli-mitigation-mpnet.yaml").read_text())
    own = {"name", "output_dir", "seeds", "teacher", "teachers", "compressions", "losses"}
    own |= {"uncertainty"}  # RMC's source: no RMC row here
    assert {k: v for k, v in mpnet.items() if k not in own} == {
        k: v for k, v in minilm.items() if k not in own
    }
    assert set(mpnet["losses"]) <= set(minilm["losses"])
    assert mpnet["seeds"][0] == minilm["seeds"][0]  # the bias models train at the first seed


def test_the_eta_counts_each_stage_at_its_own_models_rate(tmp_path):
    """A 3-layer bias model's fast training must not speed up the estimate of the teacher's runs."""
    from robust_compress.stages.graph import Stage, StageConfig, TeacherRef
    from robust_compress.study.live import Estimator

    est = Estimator(tmp_path)
    teacher_run = Stage(
        "compress",
        "c",
        StageConfig(model=TeacherRef(Stage("teacher", "t"))),
        work={"train": 8000, "infer": 4000},
    )
    bias = Stage("bias", "b", StageConfig(model="small"), work={"train": 8000})
    est.observe(teacher_run, "train", 100.0)
    est.observe(teacher_run, "infer", 400.0)
    est.observe(bias, "train", 400.0)
    assert est.seconds(teacher_run) == pytest.approx(8000 / 100 + 4000 / 400)
    assert est.seconds(bias) == pytest.approx(8000 / 400)


def test_a_resumed_phase_eta_counts_only_the_steps_done_in_this_process(monkeypatch):
    """Resumed at step 90 of 100, 1 step/s from then: 5 steps left is 5 s, not 0 s."""
    import io

    from robust_compress.stages import progress

    clock = iter([0.0, 1.0, 6.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    rep = progress.LineReporter(out, every=0.0)
    rep.task("train", 100, "steps")
    rep.update(90)  # the first step this process saw: the checkpoint's
    rep.update(95)
    assert out.getvalue().splitlines()[-1].startswith("  train: 95/100 steps (6s, eta 5s")


def test_stage_records_name_the_code_the_study_started_with(
    tmp_path, tiny_dir, tiny_task, monkeypatch
):
    """A tree updated while a study runs (git pull in its clone) must not relabel the stages it
    runs."""
    from robust_compress.study import run

    path = _exp(
        tmp_path,
        tiny_dir,
        tiny_task,
        losses=["ce"],
        compressions=[{"name": "m1", "method": "magnitude", "settings": {"sparsity": 0.1}}],
    )
    run.code_version.cache_clear()
    monkeypatch.setenv("ROBUST_COMPRESS_CODE_VERSION", "v-start")
    real = run.run_stage

    def stage_then_pull(s, r):
        monkeypatch.setenv("ROBUST_COMPRESS_CODE_VERSION", "v-pulled")
        real(s, r)

    monkeypatch.setattr(run, "run_stage", stage_then_pull)
    try:
        reproduce(path)
    finally:
        run.code_version.cache_clear()
    records = list((tmp_path / "exp").rglob("*stage.json"))
    assert records and {json.loads(p.read_text())["code_version"] for p in records} == {"v-start"}
    # and the thread count (numbers are bit-identical only at the same count)
    import torch

    assert {json.loads(p.read_text())["threads"] for p in records} == {torch.get_num_threads()}
    # and the CPU and library versions (another CPU or kernel sums in another order)
    import transformers

    recs = [json.loads(p.read_text()) for p in records]
    assert {(r["torch"], r["transformers"]) for r in recs} == {
        (torch.__version__, transformers.__version__)
    }
    assert all(r["device"] for r in recs)


def test_an_unmeasured_bert_base_is_not_estimated_at_minilm_speed(tmp_path):
    """The default rates are a MiniLM-L6's: a 12 x 768 model's stages are estimated ~8x longer."""
    from robust_compress.stages.graph import Stage, StageConfig, TeacherRef
    from robust_compress.study.live import Estimator

    for name, h, layers, ffn in (("minilm", 384, 6, 1536), ("base", 768, 12, 3072)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(
            json.dumps({"hidden_size": h, "num_hidden_layers": layers, "intermediate_size": ffn})
        )
    est = Estimator(tmp_path / "study", teacher_model=str(tmp_path / "base"))
    work = {"train": 8000, "infer": 4000}
    small = est.seconds(
        Stage("compress", "s", StageConfig(model=str(tmp_path / "minilm")), work=work)
    )
    teacher_run = est.seconds(
        Stage("compress", "t", StageConfig(model=TeacherRef(Stage("teacher", "t"))), work=work)
    )
    assert teacher_run == pytest.approx(8 * small)


def test_a_study_moved_by_output_dir_takes_its_cache_with_it(tmp_path, tiny_dir, tiny_task):
    """`reproduce --output-dir X` writes nothing under ./runs: the cache (teacher logits, latency
    tables) moves to X/cache unless the study names its own; the cache's place is in no key."""
    from robust_compress.study.run import prepare

    path = _exp(tmp_path, tiny_dir, tiny_task)
    exp = yaml.safe_load(path.read_text())
    del exp["defaults"]["cache_dir"]
    path.write_text(yaml.safe_dump(exp))
    _, here = prepare(path)
    _, moved = prepare(path, output_dir=tmp_path / "elsewhere")
    assert [s.key for s in moved] == [s.key for s in here]
    caches = {s.resolve().cache_dir for s in moved if not s.given}
    assert caches == {str(tmp_path / "elsewhere" / "cache")}
    _, named = prepare(_exp(tmp_path, tiny_dir, tiny_task, name="n"), output_dir=tmp_path / "e2")
    assert {s.resolve().cache_dir for s in named} == {str(tmp_path / "cache")}


def test_a_fully_cached_rerun_says_what_it_reused(tmp_path, monkeypatch):
    """The live panel of a rerun with nothing left to run names the stages it reused (it read
    'study 0/0 stages · stage starting')."""
    from rich.console import Console

    from robust_compress.study import live

    view = live.LiveView([], tmp_path, "t", reused=19)
    view.close()
    console = Console(record=True, width=120)
    console.print(view._render())
    text = console.export_text()
    assert "nothing to run: all 19 stages reused" in text and "starting" not in text
