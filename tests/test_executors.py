"""A study run by Ray or by submitit is the study run here: the same stages, keys and metrics.csv.
A Ray worker lost mid-stage is retried, and the retried stage resumes from its checkpoint."""

from __future__ import annotations

import pytest

from robust_compress.io import UserError
from robust_compress.report import build_report
from robust_compress.stages.progress import Reporter
from robust_compress.study.executors import Ray, Submitit, make_executor, waves
from robust_compress.study.run import prepare, reproduce

from .test_experiment import _exp

# teacher -> (overlap bias model | pruning run with snapshots -> uncertainty) -> ce and rmc runs
STUDY = {"losses": ["ce", "rmc"], "bias_model": {"kind": "overlap", "easy_hard_split": "dev"}}


class Notes(Reporter):
    def __init__(self):
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def _study(tmp_path, tiny_dir, task, name):
    return _exp(tmp_path, tiny_dir, task, name=name, **STUDY)


def _metrics(path, **kw) -> str:
    exp, stages = prepare(path)
    reproduce(path, **kw)
    assert all(s.done() for s in stages)
    return (build_report(exp.output_dir) / "metrics.csv").read_text()


@pytest.fixture(scope="module")
def local_metrics(tmp_path_factory, tiny_dir, shared_tiny_task):
    tmp = tmp_path_factory.mktemp("local")
    return _metrics(_study(tmp, tiny_dir, shared_tiny_task, "local"))


def test_waves_are_the_graphs_topological_levels(tmp_path, tiny_dir, tiny_task):
    _, stages = prepare(_study(tmp_path, tiny_dir, tiny_task, "w"))
    assert [[s.name for s in w] for w in waves(stages)] == [
        ["teacher", "bias-overlap"],
        ["uncertainty-pruning", "mag-0.5/ce/seed0"],
        ["uncertainty"],
        ["mag-0.5/rmc/seed0"],
    ]


def test_ray_runs_the_study_to_the_same_metrics(
    ray_cluster, local_metrics, tmp_path, tiny_dir, shared_tiny_task
):
    path = _study(tmp_path, tiny_dir, shared_tiny_task, "ray")
    assert _metrics(path, executor=Ray()) == local_metrics
    rep = Notes()
    reproduce(
        path, executor=Ray(), reporter=rep
    )  # done anywhere is done everywhere: nothing to submit
    assert any("ray: 0 stages submitted" in n for n in rep.notes)


def test_a_lost_ray_worker_is_retried_and_resumes(
    ray_cluster, local_metrics, tmp_path, tiny_dir, shared_tiny_task
):
    """The first stage past its first checkpoint (the teacher) SIGKILLs its worker once; Ray retries
    it, it resumes from its `.partial` checkpoint, and the study ends with the same metrics."""
    ray_cluster.write_text("")
    rep = Notes()
    path = _study(tmp_path, tiny_dir, shared_tiny_task, "killed")
    assert _metrics(path, executor=Ray(retries=1), reporter=rep) == local_metrics
    assert not ray_cluster.exists(), "no worker was killed"
    assert any(n.startswith("teacher: resumed from step") for n in rep.notes), rep.notes


def test_submitit_runs_the_study_as_job_arrays_to_the_same_metrics(
    local_metrics, tmp_path, tiny_dir, shared_tiny_task
):
    pytest.importorskip("submitit")
    rep = Notes()
    path = _study(tmp_path, tiny_dir, shared_tiny_task, "submitit")
    assert (
        _metrics(path, executor=Submitit(cluster="local", folder=tmp_path / "jobs"), reporter=rep)
        == local_metrics
    )
    arrays = [n for n in rep.notes if n.startswith("submitit (local): an array of")]
    assert len(arrays) == 4, rep.notes


def test_executor_options_are_checked_before_any_work(tmp_path, tiny_dir, tiny_task):
    from .test_trust import cli

    path = _study(tmp_path, tiny_dir, tiny_task, "opts")
    r = cli("reproduce", str(path), "--executor", "ray", "--slurm-partition", "gpu")
    assert (
        r.returncode == 2 and r.stderr.strip() == "error: --executor ray takes no --slurm-partition"
    ), r.stderr
    assert not (tmp_path / "opts").exists()
    with pytest.raises(UserError, match="--executor 'dask': use one of local, ray, submitit"):
        make_executor("dask")
    with pytest.raises(UserError, match="--executor local takes no --address"):
        make_executor("local", address="auto")
    with pytest.raises(UserError, match="--executor ray takes no --slurm-partition"):
        make_executor("ray", slurm_partition="gpu")
