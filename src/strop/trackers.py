"""train.trackers: each epoch's metrics also logged to TensorBoard or MLflow, through Accelerate's trackers
(`Accelerator(log_with=...)`, `init_trackers`, `log`, `end_training`). They write under the run directory's
trackers/ folder: `tensorboard --logdir RUN/trackers`, or `mlflow ui --backend-store-uri RUN/trackers`.
Accelerate logs from the main process only."""

from __future__ import annotations

import importlib.util
import math
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
        accelerator.init_trackers(Path(cfg.output_dir).name, config=hyperparameters(cfg.to_dict()))


def log_epoch(accelerator, cfg, record: dict) -> None:
    """One epoch's line of metrics.jsonl (its numbers), at the epoch as step."""
    if cfg.train.trackers:
        values = {key: float(value) for key, value in record.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"
                  and math.isfinite(value)}
        accelerator.log(values, step=record["epoch"])


def end(accelerator, cfg) -> None:
    if cfg.train.trackers:
        accelerator.end_training()


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
