"""Pretrained networks: where their weights are found, how they are loaded, and what they read."""

from strop.backbones.base import BACKBONES, Backbone
from strop.backbones import text, vector  # noqa: F401  (registers them)

__all__ = ["BACKBONES", "Backbone"]
