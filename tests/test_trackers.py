"""train.trackers: each epoch's metrics logged to TensorBoard and MLflow through Accelerate's trackers; bad settings refused
before a run directory exists."""

import json
import os
from pathlib import Path

import pytest

import strop
from strop.errors import StropError


def test_tensorboard_gets_every_epochs_metrics(tiny_overrides, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in strop's test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = strop.fit(None, tiny_overrides + ["train.trackers=[tensorboard]"])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (logs,) = list((run / "trackers").iterdir())  # one folder, named after the run
    assert logs.name == run.name
    events = EventAccumulator(str(logs))
    events.Reload()
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["epoch"] for r in history], key
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in history], rel=1e-5), key
    assert "tensorboard" in (run / "config.yaml").read_text()


def test_without_trackers_nothing_is_logged(tiny_overrides):
    run = strop.fit(None, tiny_overrides)
    assert not (run / "trackers").exists()


def test_an_unknown_or_missing_tracker_is_refused_before_the_run_starts(tiny_overrides, tmp_path, monkeypatch):
    with pytest.raises(StropError, match="train.trackers must be one of tensorboard, mlflow; got 'wandb'"):
        strop.fit(None, tiny_overrides + ["train.trackers=[wandb]"])
    from strop import trackers

    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StropError, match=r'pip install "strop\[mlflow\]"'):
        strop.fit(None, tiny_overrides + ["train.trackers=[mlflow]"])
    assert not (tmp_path / "run").exists()


def test_hyperparameters_are_flat_and_plain():
    from strop.trackers import hyperparameters

    flat = hyperparameters({"optim": {"lr": 1e-3, "name": "adamw"}, "model": {"hidden": [64, 64], "x": None},
                            "output_dir": "runs/a"})
    assert flat == {"optim.lr": 1e-3, "optim.name": "adamw", "model.hidden": "[64, 64]", "model.x": "None",
                    "output_dir": "runs/a"}


def test_mlflow_gets_every_epochs_metrics_and_the_config(tiny_overrides, monkeypatch, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is in strop's test extra")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's own default would write ./mlflow.db here

    run = strop.fit(None, tiny_overrides + ["train.trackers=[mlflow]"])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()  # nothing written outside the run
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'trackers' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == run.name]
    (logged,) = client.search_runs([experiment.experiment_id])
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        points = client.get_metric_history(logged.info.run_id, key)
        assert [p.step for p in points] == [r["epoch"] for r in history], key
        assert [p.value for p in points] == pytest.approx([r[key] for r in history], rel=1e-5), key
    assert logged.data.params["optim.lr"] == "0.001"
    assert logged.info.status == "FINISHED" and logged.info.run_name == run.name


def test_a_few_shot_run_logs_its_head_stage_once(tiny_overrides, monkeypatch, tmp_path):
    """The contrastive stage trains in the same process first: its own tracker run collided with the head's
    (MLflow refused a second active run and the fit crashed)."""
    pytest.importorskip("mlflow", reason="mlflow is in strop's test extra")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    run = strop.fit(None, tiny_overrides + ["train.trackers=[mlflow]", "method.name=fewshot",
                                            "method.pairs_per_example=2"])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'trackers' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == run.name]
    (logged,) = client.search_runs([experiment.experiment_id])
    points = client.get_metric_history(logged.info.run_id, "val_loss")
    assert [p.value for p in points] == pytest.approx([r["val_loss"] for r in history], rel=1e-5)
    assert logged.info.status == "FINISHED"


def test_mlflow_logs_to_the_users_tracking_uri_where_one_is_set(tiny_overrides, monkeypatch, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is in strop's test extra")
    from mlflow.tracking import MlflowClient

    server = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sentiment")
    run = strop.fit(None, tiny_overrides + ["train.trackers=[mlflow]", "train.epochs=1"])
    assert not (run / "trackers" / "mlflow.db").exists()
    (logged,) = MlflowClient(tracking_uri=server).search_runs(
        [MlflowClient(tracking_uri=server).get_experiment_by_name("sentiment").experiment_id])
    assert logged.info.run_name == run.name


def test_an_interrupted_run_is_failed_in_mlflow_and_leaves_no_tracking_uri(tiny_overrides, monkeypatch, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is in strop's test extra")
    from conftest import interrupt_after_checkpoint

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, tiny_overrides + ["train.trackers=[mlflow]"]))
    run = tmp_path / "run"
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{run / 'trackers' / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name(run.name).experiment_id])
    assert logged.info.status == "FAILED"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the next run would log into this one's database
