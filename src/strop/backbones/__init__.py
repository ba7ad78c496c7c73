"""Pretrained networks: where their weights are found, how they are loaded, and what they read."""

from strop.backbones.base import BACKBONES, Backbone
from strop.backbones import text, vector  # noqa: F401  (registers them)
from strop.backbones import image  # noqa: F401  (registers it; timm is imported only when an image model is built)

__all__ = ["BACKBONES", "Backbone"]
