"""`train.report_to`: a real 1-process run writes TensorBoard event files into its run folder and an MLflow run into a
local file store, each holding the per-step losses the run's own log_history.json records."""

from __future__ import annotations

import json

import pytest

from tests.cluster.training.conftest import run_single_processes, tiny_spec


def test_tensorboard_and_mlflow_record_the_runs_losses(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    """Over 60 s on a loaded 2-core machine (about 200 s with six other suites): the run is a fresh process that
    imports torch, transformers and mlflow before its 4 steps, so it cannot share a process with other tests."""
    pytest.importorskip("mlflow", reason="mlflow is in the test extra (mlflow-skinny)")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "rayfit-trackers")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store only behind this opt-in
    trackers = {"max_steps": 4, "report_to": ["tensorboard", "mlflow"]}
    spec = tiny_spec(tiny_model_dir, tmp_path / "runs", "trackers", train=trackers)
    spec["cluster"] = {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1}
    spec["train"].update(eval_steps=None, save_steps=4)
    run = tmp_path / "runs" / "trackers"
    config = {"spec": spec, "run": str(run), "train_path": tiny_data["train_path"], "eval_path": None}
    config["scratch"] = str(tmp_path / "scratch")
    run_single_processes([config], tmp_path)

    logged = {e["step"]: e["loss"] for e in json.loads((run / "log_history.json").read_text()) if "loss" in e}
    assert sorted(logged) == [1, 2, 3, 4]

    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {run / 'tensorboard'}"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tb = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert tb == pytest.approx(logged, abs=1e-4)

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("rayfit-trackers")
    assert experiment is not None, "the run created no MLflow experiment"
    [mlrun] = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED"
    history = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "loss")}
    assert history == pytest.approx(logged, abs=1e-4)
