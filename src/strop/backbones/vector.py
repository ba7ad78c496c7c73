"""Vectors of numeric features into a small multi-layer perceptron (`model.name: mlp`).

Inputs are standardised with the training data's mean and standard deviation, which are saved with the
model (and kept when a later run starts from it, so the network sees its inputs on the scale it learned).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from strop.backbones.base import BACKBONES, Backbone

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@BACKBONES.register("mlp")
class MLPBackbone(Backbone):
    """Linear -> activation -> dropout, once per hidden size; its output is the last hidden layer."""

    kind = "vector"
    input_keys = ("x",)

    def __init__(self, num_features: int, hidden: tuple[int, ...], activation: str, dropout: float,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None):
        super().__init__()
        layers, width = [], num_features
        for size in hidden:
            layers.append(nn.Sequential(nn.Linear(width, size), ACTIVATIONS[activation](), nn.Dropout(dropout)))
            width = size
        self.blocks = nn.ModuleList(layers)
        self.num_features, self.hidden, self.activation, self.dropout = num_features, tuple(hidden), activation, dropout
        self.hidden_size = width
        # float64: standardising in float32 would round a large offset's differences away (a Unix time's seconds)
        self.mean = np.zeros(num_features) if mean is None else np.asarray(mean, np.float64)
        self.std = np.ones(num_features) if std is None else np.asarray(std, np.float64)

    @classmethod
    def for_data(cls, vectors: list[np.ndarray], hidden: tuple[int, ...], activation: str,
                 dropout: float) -> MLPBackbone:
        """A new, randomly initialised MLP whose standardisation comes from the training vectors."""
        matrix = np.stack(vectors).astype(np.float64)
        std = matrix.std(axis=0)
        std[std == 0] = 1.0  # a constant feature carries nothing; leave it at 0 after centring
        return cls(matrix.shape[1], hidden, activation, dropout, matrix.mean(axis=0), std)

    @classmethod
    def from_saved(cls, directory: Path, info: dict) -> MLPBackbone:
        m = info["mlp"]
        return cls(m["num_features"], tuple(m["hidden"]), m["activation"], m["dropout"], m["mean"], m["std"])

    def encode(self, inputs: list[np.ndarray], source: str | None = None) -> list[dict]:
        standard = ((np.stack(inputs).astype(np.float64) - self.mean) / self.std).astype(np.float32)
        return [{"x": row.tolist()} for row in standard]

    def forward(self, level: str, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x  # (batch, hidden[-1])

    def layers(self) -> list[nn.Module]:
        return list(self.blocks)

    def save(self, directory: Path) -> dict[str, Any]:
        return {"backbone": "mlp", "mlp": {
            "num_features": self.num_features, "hidden": list(self.hidden), "activation": self.activation,
            "dropout": self.dropout, "mean": self.mean.tolist(), "std": self.std.tolist()}}
