"""Trackers for real: a tiny fine-tune logs to TensorBoard or MLflow (a local store), and what the
tracker holds is read back with the tracker's own reader and equals the run's loss curve."""

from __future__ import annotations

import json

import pytest

from robust_compress.stages import finetune

from .conftest import tiny_run_config

STEPS = 20  # the loop logs every 10 steps: two points


def _curve(out):
    return json.loads((out / "train_metrics.json").read_text())["loss_curve"]


def test_tensorboard_holds_the_loss_curve(tiny_dir, tiny_task, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = finetune(
        tiny_run_config(
            tiny_dir,
            tiny_task,
            tmp_path / "tb",
            max_steps=STEPS,
            trackers=["tensorboard"],
            eval_sets=["dev"],
        )
    )
    run_dir = (
        tmp_path / "tb.logs" / "tb.logs"
    )  # accelerate: <project_dir>/<run name>, hparams in a subfolder
    assert list(run_dir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [10, 20]
    assert [e.value for e in events] == pytest.approx(_curve(out), rel=1e-6)
    assert len(acc.Scalars("train/examples_per_s")) == 2


@pytest.mark.parametrize("where", ["default", "env"])
def test_mlflow_local_store_holds_the_loss_curve(where, tiny_dir, tiny_task, tmp_path, monkeypatch):
    """Without $MLFLOW_TRACKING_URI the store is a SQLite file beside the run (not the working
    directory); with it, the user's store. Params (the training settings) are logged too."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    if where == "env":
        uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    out = finetune(
        tiny_run_config(
            tiny_dir,
            tiny_task,
            tmp_path / "runs" / "ml",
            max_steps=STEPS,
            trackers=["mlflow"],
            eval_sets=["dev"],
        )
    )
    assert not (tmp_path / "mlflow.db").exists() or where == "env"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ml.logs")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [10, 20]
    assert [m.value for m in history] == pytest.approx(_curve(out), rel=1e-6)
    assert run.data.params["lr"] == "0.002" and run.data.params["max_steps"] == str(STEPS)
