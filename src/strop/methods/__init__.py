"""Adaptation methods: each decides which parameters of the model train, and is registered by name."""

from strop.methods.base import METHODS, Method
from strop.methods import full, freeze, gradual  # noqa: F401  (registers the methods)

__all__ = ["METHODS", "Method"]
