"""Who runs a study's stages: one interface, three executors.

- `local` (the default): one stage after another in this process (`--shard i/n` splits a study
  across processes or machines sharing the folder; a lock per stage makes a second comer wait).
- `ray`: each stage a Ray task that asks for its resources (CPUs; a GPU for a training stage where
  the cluster has GPUs), the graph's edges as task dependencies, retried when its worker is lost.
- `submitit`: Slurm job arrays, one per wave of independent stages (the graph's topological levels);
  without Slurm, submitit's local executor runs the same arrays as processes here.

Whatever runs a stage, the artifact folder stays the one source of truth: a stage is done when its
record is in its artifact, wherever it ran; a remote stage takes the same lock, skips a stage done
meanwhile, and resumes a killed run from its `.partial` checkpoint. Executors need every worker to
see the study's folder (a shared file system).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import code_version
from ..io import UserError, file_lock
from ..stages.graph import Stage
from ..stages.progress import LineReporter, Reporter

# test-only: the path of a file that, while it exists, makes the first remote stage past its first
# checkpoint delete it and SIGKILL its own process (a lost worker, exactly once)
KILL_ONCE_ENV = "ROBUST_COMPRESS_TEST_KILL_ONCE"


@functools.lru_cache(maxsize=1)
def device_name() -> str:
    """Where a stage ran, for provenance: the GPU's name, else the CPU's."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()}"


def clear_leftovers(stage: Stage) -> None:
    """Remove what a killed run of this stage left half-written: hidden temporary folders of its
    artifact and snapshots (a kill during the final write). Its `.partial` checkpoint stays: the
    run resumes from it. Called under the stage's lock, so no live writer owns them."""
    for folder, name in ((stage.path.parent, stage.path.name), (stage.snapshot_dir, "sparsity-")):
        for p in folder.glob(f".{name}*"):
            if p.name.endswith((".tmp", ".old")) or ".tmp." in p.name:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@dataclass
class Study:
    """What an executor is handed: the plan, this shard's stages to run, where to report, how to run
    a stage here and how to refresh the study's index."""

    exp: Any
    stages: list[Stage]
    todo: list[Stage]
    rep: Reporter
    run_stage: Callable[[Stage, Reporter], None]
    index: Callable[[], None]

    def lock(self, stage: Stage) -> Path:
        return Path(self.exp.output_dir) / "locks" / f"{stage.path.name}.lock"

    def waits(self, stage: Stage, coming: set[int] = frozenset()) -> bool:
        """The speed stage needs every model: skipped while one is neither done nor coming in this
        run."""
        if stage.spec.needs_every_model and not all(
            d.done() or id(d) in coming for d in stage.deps
        ):
            self.rep.note(
                f"{stage.name}: skipped until every model is done (another shard will time them)"
            )
            return True
        return False

    def finished(self, stage: Stage, seconds: float) -> None:
        if hasattr(self.rep, "stage_end"):
            self.rep.stage_end(stage, seconds)
        self.index()  # a study stopped at any point can still be reported


class Local:
    """Today's runner: the stages one after another in this process."""

    def run(self, study: Study) -> None:
        rep = study.rep
        for k, s in enumerate(study.todo, 1):
            if study.waits(s):
                continue
            with file_lock(study.lock(s)):
                if s.done():
                    continue
                clear_leftovers(s)
                if hasattr(rep, "stage_start"):
                    rep.stage_start(s, k, len(study.todo))
                t0 = time.perf_counter()
                study.run_stage(s, rep)
                study.finished(s, time.perf_counter() - t0)


# ---------------------------------------------------------------- a stage on a remote worker


@dataclass
class Outcome:
    """What a remote stage sends back: small, the artifact holds the rest."""

    name: str
    ran: bool
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # a UserError's line (submitit: read by the driver)


class WorkerReporter(LineReporter):
    """A remote stage's progress as plain lines (the worker's log); its notes go back to the
    driver."""

    def __init__(self, stage: Stage):
        super().__init__(sys.stderr, every=30.0)
        self.stage, self.notes = stage, []
        self.checkpoint = (
            stage.path.with_name(stage.path.name + ".partial") / "checkpoint" / "loop_state.json"
        )

    def note(self, text: str) -> None:
        self.notes.append(text)
        super().note(f"{self.stage.name}: {text}")

    def update(self, done: int, **info: Any) -> None:
        super().update(done, **info)
        marker = os.environ.get(KILL_ONCE_ENV)
        if marker and self.checkpoint.is_file():
            try:
                os.unlink(marker)  # the one stage that removes it dies
            except FileNotFoundError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


def execute(stage: Stage, code: str, cwd: str, lock: str, threads: int | None = None) -> Outcome:
    """Run one stage on a worker: under its lock, unless it is done (by anyone, anywhere)."""
    os.chdir(cwd)  # the study's relative paths mean what they meant where it was started
    if threads:  # a float sum's order depends on the thread count: compute as the driver would
        import torch

        torch.set_num_threads(threads)
    with file_lock(Path(lock)):
        if stage.done():
            return Outcome(stage.name, ran=False)
        clear_leftovers(stage)
        rep = WorkerReporter(stage)
        t0 = time.perf_counter()
        stage.run(rep, code, device_name())
        return Outcome(stage.name, ran=True, seconds=time.perf_counter() - t0, notes=rep.notes)


def _ray_task(
    stage: Stage, code: str, cwd: str, lock: str, threads: int, *upstream: Outcome
) -> Outcome:
    """A Ray task: its upstream stages' outcomes are its arguments, so Ray runs it after them."""
    return execute(stage, code, cwd, lock, threads)


def _array_task(stage: Stage, code: str, cwd: str, lock: str) -> Outcome:
    """A submitit job: a bad input comes back as its one line (a traceback would be read as a
    crash)."""
    try:
        return execute(stage, code, cwd, lock)
    except UserError as e:
        return Outcome(stage.name, ran=False, error=str(e))


def _driver_threads() -> int:
    import torch

    return torch.get_num_threads()


def _report(study: Study, stage: Stage, out: Outcome) -> None:
    for note in out.notes:
        study.rep.note(f"{stage.name}: {note}")
    if out.ran:
        study.finished(stage, out.seconds)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """A `HOST:PORT` (or `ray://HOST:PORT`) address must answer a TCP connect within `timeout`
    seconds: ray.init would wait minutes on an address where no cluster listens. Other forms
    (`auto`, `local`) are Ray's to resolve."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError, OverflowError) as e:
        why = "timed out" if isinstance(e, TimeoutError) else getattr(e, "strerror", None) or e
        raise UserError(
            f"--address {address}: no Ray cluster answers there ({why} within {timeout:g} s); "
            "start one with `ray start --head`, or leave --address out for a local one"
        ) from None


class Ray:
    """Each stage a Ray task with its resources; upstream tasks' ObjectRefs as its arguments."""

    def __init__(self, address: str | None = None, cpus_per_stage: float = 1.0, retries: int = 2):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        if address is not None:
            check_ray_address(address)
        self.address, self.cpus, self.retries = address, cpus_per_stage, retries

    def run(self, study: Study) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(_ray_task)
        code, cwd = code_version(), os.getcwd()
        threads = _driver_threads()  # Ray would give each worker num_cpus threads: other float sums
        slots = int(ray.cluster_resources().get("CPU", 1) // self.cpus)
        if self.address is None and slots > 1 and threads * slots > (os.cpu_count() or 1):
            study.rep.note(
                f"ray: {slots} stages at once with {threads} threads each on {os.cpu_count()} "
                "cores oversubscribe them (many times slower): run with OMP_NUM_THREADS=1"
            )
        refs: dict[int, Any] = {}
        for s in study.todo:
            if s.done() or study.waits(s, set(refs)):
                continue
            upstream = [refs[id(d)] for d in s.deps if id(d) in refs]
            refs[id(s)] = task.options(
                num_cpus=self.cpus,
                num_gpus=1 if gpus and s.spec.trains else 0,
                max_retries=self.retries,
                name=s.name,
            ).remote(s, code, cwd, str(study.lock(s)), threads, *upstream)
        by_ref = {ref: s for s in study.todo if (ref := refs.get(id(s))) is not None}
        study.rep.note(
            f"ray: {len(by_ref)} stages submitted ({ray.cluster_resources().get('CPU', 0):.0f} CPUs"
            + (f", {ray.cluster_resources()['GPU']:.0f} GPUs)" if gpus else ")")
        )
        failed: list[BaseException] = []
        while by_ref:  # as they finish; after a failure, what does not depend on it still finishes
            [ref], _ = ray.wait(list(by_ref), num_returns=1)
            s = by_ref.pop(ref)
            try:
                _report(study, s, ray.get(ref))
            except ray.exceptions.RayTaskError as e:
                failed.append(e.cause if isinstance(getattr(e, "cause", None), UserError) else e)
            except (
                ray.exceptions.RayError
            ) as e:  # its worker was lost more often than it may be retried
                failed.append(
                    UserError(
                        f"stage {s.name}: {type(e).__name__}: {str(e).splitlines()[0]} "
                        "(rerun the study: it resumes)"
                    )
                )
        if failed:
            raise failed[0]


class Submitit:
    """Slurm job arrays, one per wave of independent stages (without Slurm: local processes)."""

    def __init__(
        self,
        folder: str | Path | None = None,
        cluster: str | None = None,
        slurm_partition: str | None = None,
        slurm_gpus: int = 0,
        cpus_per_stage: int = 1,
        timeout_min: int = 24 * 60,
    ):
        try:
            import submitit
        except ImportError:
            raise UserError(
                "--executor submitit needs submitit: pip install -e '.[slurm]'"
            ) from None
        if slurm_gpus < 0:
            raise UserError(f"--slurm-gpus {slurm_gpus}: must be 0 or more")
        options = (("--slurm-partition", slurm_partition), ("--slurm-gpus", slurm_gpus))
        asked = [flag for flag, value in options if value]
        where = (cluster or submitit.AutoExecutor.which()) if asked else None
        if asked and where != "slurm":
            raise UserError(
                f"{asked[0]}: no Slurm here (submitit would run the stages as {where} processes "
                "and ignore it): run on a Slurm login node, or leave the --slurm-* options out"
            )
        self.folder, self.cluster, self.partition = folder, cluster, slurm_partition
        self.gpus, self.cpus, self.timeout = slurm_gpus, cpus_per_stage, timeout_min

    def run(self, study: Study) -> None:
        import submitit

        ex = submitit.AutoExecutor(
            folder=self.folder or Path(study.exp.output_dir) / "submitit", cluster=self.cluster
        )
        params: dict[str, Any] = {
            "timeout_min": self.timeout,
            "cpus_per_task": self.cpus,
            "name": "robust-compress",
        }
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.partition:
            params["slurm_partition"] = self.partition
        ex.update_parameters(**params)
        code, cwd = code_version(), os.getcwd()
        for wave in waves([s for s in study.todo if not s.done()]):
            wave = [s for s in wave if not study.waits(s)]
            if not wave:
                continue
            study.rep.note(
                f"submitit ({ex.cluster}): an array of {len(wave)} stages: "
                + ", ".join(s.name for s in wave[:4])
                + (", ..." if len(wave) > 4 else "")
            )
            jobs = ex.map_array(
                _array_task,
                wave,
                [code] * len(wave),
                [cwd] * len(wave),
                [str(study.lock(s)) for s in wave],
            )
            errors = []
            for job, s in zip(jobs, wave, strict=True):
                try:
                    out = job.result()
                except Exception as e:  # noqa: BLE001 -- a crashed job: its log says why
                    errors.append(
                        f"stage {s.name}: job {job.job_id} failed ({type(e).__name__}); its log: "
                        f"{job.paths.stderr} (rerun the study: it resumes)"
                    )
                    continue
                if out.error:
                    errors.append(out.error)
                _report(study, s, out)
            if errors:
                raise UserError(errors[0])


def waves(todo: list[Stage]) -> list[list[Stage]]:
    """The stages by topological level: each wave needs only earlier waves (and what is done)."""
    level: dict[int, int] = {}
    for s in todo:  # plan order: dependencies first
        level[id(s)] = 1 + max((level[id(d)] for d in s.deps if id(d) in level), default=-1)
    out: list[list[Stage]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for s in todo:
        out[level[id(s)]].append(s)
    return out


EXECUTORS = {"local": Local, "ray": Ray, "submitit": Submitit}


def make_executor(name: str, **options: Any):
    """An executor by name; options it does not take are a one-line error (before any work)."""
    if name not in EXECUTORS:
        raise UserError(f"--executor {name!r}: use one of {', '.join(EXECUTORS)}")
    given = {k: v for k, v in options.items() if v is not None}
    import inspect

    takes = set(inspect.signature(EXECUTORS[name]).parameters)
    if wrong := sorted(set(given) - takes):
        raise UserError(
            f"--executor {name} takes no {', '.join('--' + w.replace('_', '-') for w in wrong)}"
        )
    return EXECUTORS[name](**given)
