"""train.trackers: each epoch's metrics logged to TensorBoard through Accelerate's trackers; bad settings refused
before a run directory exists."""

import json

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
