"""Reconstruction: an autoencoder for vectors, the pretraining of an MLP on unlabelled rows (`strop pretrain
--data rows.csv model.name=mlp`).

The MLP body encodes each standardised vector and a linear head decodes it back; the loss is the mean squared
error of the reconstruction. Every column but data.label_column (where the table has one) is a feature, or
those data.feature_columns names. `strop fit model.name=<run>/model` then starts a labelled task from the
trained body (and its input standardisation), with a new head, the body at optim.lr and the new head at
optim.head_lr_scale times it: pretrained with an MSE loss, fine-tuned at a lower rate.

Metrics are on the standardised scale, so no column outweighs the others by its units: `loss` (the mean
squared error) and `r2` (the share of the validation vectors' variance the reconstruction explains).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from strop.errors import StropError
from strop.tasks.base import TASKS, Examples, StandardisedOutputs, compact
from strop.tasks.sentence import SentenceTask


@TASKS.register("reconstruction")
@dataclass(frozen=True)
class Reconstruction(StandardisedOutputs, SentenceTask):
    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    name = "reconstruction"
    input_kinds: ClassVar[tuple[str, ...]] = ("vector",)
    metric_names = ("loss", "r2")
    metric_ranges = {"loss": (0.0, np.inf), "r2": (-np.inf, 1.0)}
    lead_metric = "loss"

    @classmethod
    def read(cls, path: str | Path, data_cfg, input_kind: str, what: str, with_targets: bool = True) -> Examples:
        examples = super().read(path, data_cfg, input_kind, what, with_targets=False)
        return Examples(examples.inputs, list(examples.inputs) if with_targets else None, examples.source,
                        examples.feature_columns)

    @classmethod
    def from_data(cls, train: Examples, validation: Examples | None, cfg) -> Reconstruction:
        if len(train) < 2:
            raise StropError(f"data.train: {Path(train.source).name} has {len(train)} row; an autoencoder needs at "
                             "least 2 to learn from")
        matrix = np.stack(train.inputs).astype(np.float64)
        std = matrix.std(axis=0)
        std[std == 0] = 1.0  # as the MLP standardises (strop.backbones.vector)
        return cls(tuple(train.feature_columns), tuple(matrix.mean(axis=0).tolist()), tuple(std.tolist()))

    def values(self, examples: Examples) -> np.ndarray:
        return np.asarray(np.stack(examples.inputs), dtype=np.float64)

    def info(self) -> dict[str, Any]:
        return {"targets": list(self.columns), "target_mean": list(self.mean), "target_std": list(self.std)}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Reconstruction:
        return cls(tuple(info["targets"]), tuple(info["target_mean"]), tuple(info["target_std"]))

    def output_space(self) -> tuple:
        return self.columns

    @property
    def num_outputs(self) -> int:
        return len(self.columns)

    def _standard(self, vectors) -> np.ndarray:
        return ((np.asarray(vectors, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def encode(self, backbone, examples: Examples) -> list[dict]:
        features = backbone.encode(examples.inputs, examples.source)
        if examples.targets is not None:  # the target is the input itself, standardised as the body reads it
            for feature, target in zip(features, self._standard(examples.targets).tolist()):
                feature["labels"] = target
        return features

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.float(), labels.float())

    def outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(logits.float().cpu().numpy())  # standardised

    def targets(self, batch: dict) -> list[np.ndarray]:
        return list(batch["labels"].float().cpu().numpy())

    def scored_targets(self, targets: list) -> list[np.ndarray]:
        return list(self._standard(targets))

    def metrics(self, outputs: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, Any]:
        predicted, true = np.stack(outputs).astype(np.float64), np.stack(targets).astype(np.float64)
        squared = float(((predicted - true) ** 2).sum())
        spread = float(((true - true.mean(axis=0)) ** 2).sum())
        return {"loss": squared / true.size, "r2": 1 - squared / spread if spread > 0 else float("nan"),
                "n": len(true)}

    def predictions(self, inputs: list, outputs: list[np.ndarray]) -> list:
        return [[float(v) for v in np.asarray(o) * self.std + self.mean] for o in outputs]

    def records(self, inputs: list, outputs: list[np.ndarray]) -> list[dict[str, Any]]:
        return [{"reconstruction": dict(zip(self.columns, compact(values, self.std))),
                 "error": compact(np.mean((np.asarray(o, dtype=np.float64) - self._standard(x)) ** 2))}
                for x, o, values in zip(inputs, outputs, self.predictions(inputs, outputs))]
