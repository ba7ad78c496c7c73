"""The interface every backbone implements, and their registry.

A backbone is the pretrained body of a task model. It turns a batch of inputs into what a task head reads:
a vector per example (sentence-level tasks) or a vector per token (token-level tasks). It also owns the
encoding of raw inputs (texts, text pairs, numeric vectors) into model features, because that depends on
the network (a tokenizer, standardisation statistics), not on the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from strop.registry import Registry


class Backbone(nn.Module):
    """A pretrained body. Subclasses set `kind` (the inputs they read) and `hidden_size`."""

    kind: ClassVar[str]  # "text" or "vector": which inputs the backbone reads
    hidden_size: int
    input_keys: ClassVar[tuple[str, ...]]  # the features `forward` reads (other features are the task's)
    pad_values: dict[str, int] = {}  # feature key -> padding value for variable-length features

    def encode(self, inputs: list, source: str | None = None) -> list[dict]:
        """Raw inputs -> one dict of unpadded features per example (lists of ints or floats). source: where the
        inputs come from (a file's path), named where the backbone says something of them."""
        raise NotImplementedError

    def forward(self, level: str, **inputs: torch.Tensor) -> torch.Tensor:
        """level "sequence": (batch, hidden) one vector per example; "token": (batch, seq, hidden)."""
        raise NotImplementedError

    def layers(self) -> list[nn.Module]:
        """The backbone's own layer list, bottom first (embeddings as layer 0), for methods that freeze."""
        raise NotImplementedError

    def save(self, directory: Path) -> dict[str, Any]:
        """Writes what the backbone needs besides its weights (configs, tokenizer) into `directory`; returns
        the entries of strop.json that describe it ("backbone" at least)."""
        raise NotImplementedError


# kind name (as stored in strop.json "backbone") -> Backbone subclass with `from_config` and `from_saved`
BACKBONES: Registry[type[Backbone]] = Registry("backbone")


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, hidden) states, (batch, seq) 0/1 mask -> (batch, hidden) mean over real tokens."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
