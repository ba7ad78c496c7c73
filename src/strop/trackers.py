"""train.trackers: each epoch's metrics also logged to TensorBoard or MLflow, through Accelerate's trackers
(`Accelerator(log_with=...)`, `init_trackers`, `log`, `end_training`). They write under the run directory's
trackers/ folder: `tensorboard --logdir RUN/trackers`, or `mlflow ui --backend-store-uri sqlite:///RUN/trackers/mlflow.db`
(MLflow's own default would be a mlflow.db in whatever folder the run was started from). Where
MLFLOW_TRACKING_URI is set (a team's tracking server), MLflow logs there instead, as MLflow users expect; the
experiment is named after the run unless MLFLOW_EXPERIMENT_NAME says otherwise. Accelerate logs from the main
process only."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

from strop.errors import StropError

# The package each tracker needs, and the extra that installs it.
PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}


def check_installed(name: str) -> None:
    """Called when the config is read, so that a missing package stops the run before anything is written.

    Raises:
        StropError: the tracker's package is not installed.
    """
    if not any(importlib.util.find_spec(package) for package in PACKAGES[name]):
        raise StropError(f"train.trackers={name} needs the {PACKAGES[name][0]} package: pip install "
                         f"\"strop[{name}]\" (or pip install {PACKAGES[name][0]}), or leave {name} out of train.trackers")


def accelerator_options(cfg) -> dict:
    """The Accelerator's keyword arguments for train.trackers (none without trackers)."""
    if not cfg.train.trackers:
        return {}
    return {"log_with": list(cfg.train.trackers), "project_dir": str(Path(cfg.output_dir) / "trackers")}


def start(accelerator, cfg) -> None:
    """Opens the trackers' run, named after the run directory, with the config as its parameters."""
    if cfg.train.trackers:
        name, mlflow = Path(cfg.output_dir).name, _mlflow_here(accelerator, cfg)
        if mlflow is not None and not os.environ.get("MLFLOW_TRACKING_URI"):
            (Path(cfg.output_dir) / "trackers").mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(run_mlflow_uri(cfg))
        accelerator.init_trackers(name, config=hyperparameters(cfg.to_dict()),
                                  init_kwargs={"mlflow": {"run_name": name}})


def log_epoch(accelerator, cfg, record: dict) -> None:
    """One epoch's line of metrics.jsonl (its numbers), at the epoch as step."""
    if cfg.train.trackers:
        values = {key: float(value) for key, value in record.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"
                  and math.isfinite(value)}
        accelerator.log(values, step=record["epoch"])


def end(accelerator, cfg, failed: bool = False) -> None:
    """Closes the trackers' run: as failed when training stopped on an error, an interrupt or pruning."""
    if not cfg.train.trackers:
        return
    mlflow = _mlflow_here(accelerator, cfg)
    if failed and mlflow is not None:
        mlflow.end_run(status="FAILED")  # Accelerate's own end would mark it finished
    accelerator.end_training()
    # set_tracking_uri also sets MLFLOW_TRACKING_URI, which the next run in this process (a search's trial, a cv
    # fold) would take for the user's server and log into this run's database
    if mlflow is not None and mlflow.get_tracking_uri() == run_mlflow_uri(cfg):
        mlflow.set_tracking_uri(None)


def _mlflow_here(accelerator, cfg):
    """The mlflow module where this process logs to MLflow (the main process, with mlflow in train.trackers)."""
    if "mlflow" in cfg.train.trackers and accelerator.is_main_process:
        import mlflow

        return mlflow
    return None


def run_mlflow_uri(cfg) -> str:
    return f"sqlite:///{(Path(cfg.output_dir) / 'trackers' / 'mlflow.db').resolve()}"


def hyperparameters(config: dict, prefix: str = "") -> dict:
    """The config flattened to dotted keys with plain values, as TensorBoard's and MLflow's parameters want
    (lists and None as text)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(hyperparameters(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
