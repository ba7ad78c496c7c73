"""Regression: one or more numeric targets per example (a text, a text pair — similarity — or a vector).

Targets are standardised with the training data's mean and standard deviation (saved with the model), so
the loss does not depend on their units and the head's outputs start on the right scale; predictions and
metrics are on the targets' own scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from strop.data.inputs import numeric_column, require_column
from strop.errors import StropError
from strop.evaluate.metrics import regression_metrics
from strop.tasks.base import TASKS, Examples, StandardisedOutputs, compact
from strop.tasks.classification import _input_fields
from strop.tasks.sentence import SentenceTask


SCALES_APART = 10  # several targets whose standard deviations differ this many times over: said when a run starts


def target_columns(data_cfg) -> list[str]:
    """data.label_column, which names several targets separated by commas (e.g. "valence,arousal").

    Raises:
        StropError: a column named twice (two outputs of one name, of which a prediction could show one).
    """
    columns = [c.strip() for c in data_cfg.label_column.split(",") if c.strip()]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise StropError(f"data.label_column names {', '.join(twice)} twice: name each target column once")
    return columns


@TASKS.register("regression")
@dataclass(frozen=True)
class Regression(StandardisedOutputs, SentenceTask):
    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loss_name: str = "mse"  # or "huber" (on standardised targets: robust to outlying targets)

    name = "regression"
    metric_names = ("rmse", "mae", "r2", "spearman", "loss")
    lead_metric = "rmse"
    minimised = frozenset({"loss", "rmse", "mae"})
    metric_ranges = {**dict.fromkeys(("rmse", "mae", "loss"), (0.0, np.inf)), "r2": (-np.inf, 1.0),
                     "spearman": (-1.0, 1.0)}

    @classmethod
    def target_columns(cls, data_cfg) -> list[str]:
        return target_columns(data_cfg)

    def notes(self) -> list[str]:
        spreads = [s for s in self.std if s > 0]
        if len(spreads) < 2 or max(spreads) < SCALES_APART * min(spreads):
            return []
        shown = ", ".join(f"{c} {s:.3g}" for c, s in zip(self.columns, self.std))
        return [f"targets on different scales (standard deviations {shown}): rmse and mae average their errors "
                "in each target's own units, so the widest target decides them (and the best epoch, by default); "
                "r2 and the loss weigh every target alike: train.metric=r2"]

    @classmethod
    def read_targets(cls, frame, path, data_cfg, what: str) -> list[tuple[float, ...]]:
        columns = target_columns(data_cfg)
        for column in columns:
            require_column(frame, column, path, what, "label_column")
        fix = "name the target columns with data.label_column (several: data.label_column=a,b)"
        values = [numeric_column(frame[c], c, path, what, "regression target", fix) for c in columns]
        return [tuple(float(v) for v in row) for row in zip(*values)]

    @classmethod
    def from_data(cls, train: Examples, validation: Examples | None, cfg) -> Regression:
        matrix = np.asarray(train.targets, dtype=np.float64)  # (n, targets)
        columns = target_columns(cfg.data)
        std = matrix.std(axis=0)
        constant = [c for c, s in zip(columns, std) if s == 0]
        if constant:
            raise StropError(f"data.train: the regression target '{constant[0]}' has the same value in every row of "
                             f"{Path(train.source).name}; there is nothing to learn")
        return cls(tuple(columns), tuple(matrix.mean(axis=0).tolist()), tuple(std.tolist()), cfg.task.loss)

    def values(self, examples: Examples) -> np.ndarray:
        return np.asarray(examples.targets, dtype=np.float64)

    def info(self) -> dict[str, Any]:
        return {"targets": list(self.columns), "target_mean": list(self.mean), "target_std": list(self.std),
                "loss": self.loss_name}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Regression:
        return cls(tuple(info["targets"]), tuple(info["target_mean"]), tuple(info["target_std"]),
                   info.get("loss", "mse"))

    def output_space(self) -> tuple:
        return self.columns

    @property
    def num_outputs(self) -> int:
        return len(self.columns)

    def encode_targets(self, targets: list[tuple[float, ...]]) -> list[list[float]]:
        standard = (np.asarray(targets, dtype=np.float64) - self.mean) / self.std
        return standard.astype(np.float32).tolist()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # logits, labels: (batch, targets), standardised
        if self.loss_name == "huber":
            return F.huber_loss(logits.float(), labels.float())
        return F.mse_loss(logits.float(), labels.float())

    def outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        values = logits.float().cpu().numpy() * np.asarray(self.std) + np.asarray(self.mean)
        return list(values)

    def targets(self, batch: dict) -> list[np.ndarray]:
        return list(batch["labels"].float().cpu().numpy() * np.asarray(self.std) + np.asarray(self.mean))

    def scored_targets(self, targets: list[tuple[float, ...]]) -> list[np.ndarray]:
        return [np.asarray(t, dtype=np.float64) for t in targets]

    def metrics(self, outputs: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, Any]:
        return regression_metrics(np.stack(outputs), np.stack(targets), list(self.columns), np.asarray(self.std),
                                  self.loss_name)

    def predictions(self, inputs: list, outputs: list[np.ndarray]) -> list:
        if len(self.columns) == 1:
            return [float(v[0]) for v in outputs]
        return [[float(x) for x in v] for v in outputs]

    def records(self, inputs: list, outputs: list[np.ndarray]) -> list[dict[str, Any]]:
        # the outputs are as precise as the model's float32 on the standardised scale: digits of the targets'
        # spread, not of the value (a target of 1e6 + a few units keeps its units)
        if len(self.columns) == 1:
            return [{**_input_fields(x), "value": compact(v[0], self.std[0])} for x, v in zip(inputs, outputs)]
        return [{**_input_fields(x), "values": dict(zip(self.columns, compact(v, self.std)))}
                for x, v in zip(inputs, outputs)]
