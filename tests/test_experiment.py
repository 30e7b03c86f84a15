import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from robust_compress.experiment import load_experiment, plan
from robust_compress.io import UserError

from .conftest import ROOT


def _exp(tmp_path, tiny_dir, tiny_task, name="exp", **over):
    exp = {
        "name": "tiny", "task": str(tiny_task), "output_dir": str(tmp_path / name), "seeds": [0],
        "defaults": {"batch_size": 16, "lr": 2e-3, "max_length": 32, "checkpoint_every": 5,
                     "cache_dir": str(tmp_path / "cache")},
        "teacher": {"model": str(tiny_dir), "train": {"epochs": 4}},
        "compressions": [{"name": "mag-0.5", "method": "magnitude", "settings": {"sparsity": 0.5}}],
        "losses": ["ce", "distil", "rmc"],
        "uncertainty": {"source": "snapshots", "sparsities": [0.3, 0.6]},
    }
    for k, v in over.items():
        exp[k] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_plan_graph(tmp_path, tiny_dir, tiny_task):
    stages = plan(load_experiment(_exp(tmp_path, tiny_dir, tiny_task)))
    kinds = [(s.kind, s.name) for s in stages]
    assert kinds[0] == ("teacher", "teacher")
    by = {s.name: s for s in stages}
    assert [d.name for d in by["mag-0.5/rmc/seed0"].deps] == ["teacher", "uncertainty"]
    assert [d.name for d in by["uncertainty"].deps] == ["uncertainty-pruning"]
    assert by["uncertainty-pruning"].deps[0].name == "teacher"
    assert len({s.path for s in stages}) == len(stages)  # distinct artifacts


def test_quantization_trains_nothing_so_it_gets_one_row(tmp_path, tiny_dir, tiny_task):
    """int8 has no training: one run (first seed, no loss variants), however many seeds and losses."""
    stages = plan(load_experiment(_exp(tmp_path, tiny_dir, tiny_task, seeds=[0, 1, 2], compressions=[
        {"name": "mag", "method": "magnitude", "settings": {"sparsity": 0.5}}, {"name": "q", "method": "quantize"}])))
    assert [s.name for s in stages if s.name.startswith("q/")] == ["q/ce/seed0"]
    assert len([s for s in stages if s.name.startswith("mag/")]) == 3 * 3  # 3 losses x 3 seeds


def test_changed_setting_changes_only_dependents(tmp_path, tiny_dir, tiny_task):
    a = {s.name: s.key for s in plan(load_experiment(_exp(tmp_path, tiny_dir, tiny_task)))}
    b = {s.name: s.key for s in plan(load_experiment(_exp(
        tmp_path, tiny_dir, tiny_task, name="exp2", uncertainty={"source": "snapshots", "sparsities": [0.3, 0.7]})))}
    changed = {n for n in a if a[n] != b[n]}
    assert changed == {"uncertainty-pruning", "uncertainty", "mag-0.5/rmc/seed0"}


@pytest.mark.parametrize("patch,match", [
    ({"compressions": [{"name": "x", "method": "bogus"}]}, "compressions.0.method"),
    ({"task": "nonexistent-task"}, "unknown task"),
    ({"compressions": [{"name": "x", "method": "magnitude", "settings": {"sparsity": 1.5}}]}, "sparsity"),
    ({"losses": ["ce", "poe"]}, "bias_model"),
    ({"unknown_key": 1}, "unknown_key"),
])
def test_malformed_experiment_fails_before_work(tmp_path, tiny_dir, tiny_task, patch, match):
    path = _exp(tmp_path, tiny_dir, tiny_task, **patch)
    with pytest.raises(UserError, match=match):
        load_experiment(path)
    assert not (tmp_path / "exp").exists()


def _reproduce(path, env):
    return subprocess.Popen([sys.executable, "-m", "robust_compress.cli", "reproduce", str(path), "--no-report"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkilled_study_resumes_to_identical_results(tmp_path, tiny_dir, tiny_task):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    kw = {"losses": ["ce"], "teacher": {"model": str(tiny_dir), "train": {"max_steps": 150}}}
    clean = _exp(tmp_path, tiny_dir, tiny_task, name="clean", **kw)
    p = _reproduce(clean, env)
    assert p.wait(timeout=600) == 0, p.stdout.read()[-3000:]

    killed = _exp(tmp_path, tiny_dir, tiny_task, name="killed", **kw)
    p = _reproduce(killed, env)
    deadline = time.time() + 300
    while not list((tmp_path / "killed" / "artifacts").glob("*.partial/checkpoint/trainer_state.pt")):
        assert time.time() < deadline and p.poll() is None, "no checkpoint appeared before the run ended"
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p = _reproduce(killed, env)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    assert "resumed from" in out

    def results(root):
        rows = {}
        for summary in sorted((root / "artifacts").glob("*/summary.json")):
            preds = pd.read_parquet(summary.parent / "predictions" / "dev.parquet")
            rows[summary.parent.name] = (json.loads(summary.read_text())["splits"]["dev"]["accuracy"],
                                         preds["p_entailment"].round(6).tolist())
        return rows

    a, b = results(tmp_path / "clean"), results(tmp_path / "killed")
    assert a.keys() == b.keys() and len(a) == 2
    assert a == b


def test_shards_partition_the_compressed_runs(tmp_path, tiny_dir, tiny_task, monkeypatch):
    """--shard i/n: each compressed run is done by exactly one shard; shared prerequisites by any."""
    import robust_compress.experiment as ex

    path = _exp(tmp_path, tiny_dir, tiny_task, losses=["ce", "distil"],
                compressions=[{"name": f"m{i}", "method": "magnitude", "settings": {"sparsity": 0.1 * i}}
                              for i in range(1, 4)])
    ran: dict[int, list[str]] = {0: [], 1: []}
    for shard in (0, 1):
        monkeypatch.setattr(ex, "run_stage", lambda s, t, e, shard=shard: ran[shard].append(s.name))
        ex.reproduce(path, shard=(shard, 2), report=False)
    compressed = [n for n in ran[0] + ran[1] if n.startswith("m")]
    assert sorted(compressed) == sorted({n for n in compressed}) and len(compressed) == 6
    assert "teacher" in ran[0] and "teacher" in ran[1]


def test_full_tiny_study_with_rmc_bias_and_report(tmp_path, tiny_dir, tiny_task):
    """Every stage kind runs for real (teacher, bias model, snapshot uncertainty, ce/distil/rmc/poe),
    then the report is built from the saved predictions; a rerun finds everything done."""
    from robust_compress.experiment import reproduce

    path = _exp(tmp_path, tiny_dir, tiny_task, losses=["ce", "distil", "rmc", "poe"],
                bias_model={"kind": "overlap", "easy_hard_split": "dev"})
    stages = reproduce(path)
    assert all(s.done() for s in stages)
    root = tmp_path / "exp"
    index = json.loads((root / "index.json").read_text())
    assert {e["loss"] for e in index if not e["is_teacher"]} == {"ce", "distil", "rmc", "poe"}
    assert (root / "easy_hard" / "dev.parquet").is_file()
    agree = json.loads((root / "analysis" / "agreement.json").read_text())
    assert 0 <= agree["agreement"] <= 1
    html = (root / "report" / "report.html").read_text()
    assert "Easy" in html or "easy" in html
    assert html.count("<img") >= 3
    again = reproduce(path, report=False)
    assert [s.key for s in again] == [s.key for s in stages]


def test_concurrent_shards_run_each_stage_once(tmp_path, tiny_dir, tiny_task):
    """Two shards started at once (as on one GPU, or one per GPU) share the prerequisites through
    stage locks: every stage runs in exactly one process, a JTT run waits for its vanilla model in
    the other shard, and the study ends complete."""
    import subprocess
    import sys

    path = _exp(tmp_path, tiny_dir, tiny_task, losses=["ce", "jtt"],
                compressions=[{"name": f"m{i}", "method": "magnitude", "settings": {"sparsity": 0.2 * i}}
                              for i in (1, 2)])
    cmd = [sys.executable, "-m", "robust_compress.cli", "reproduce", str(path), "--no-report"]
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    headers = [line.split(" (")[0].split(": ", 1)[1] for out in outs for line in out.splitlines()
               if line.startswith("=== stage")]
    stages = plan(load_experiment(path))
    assert all(s.done() for s in stages)
    assert sorted(headers) == sorted(f"{s.kind} {s.name}" for s in stages), outs  # each exactly once
