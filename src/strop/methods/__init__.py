"""Adaptation methods: each decides which parameters of the model train, and is registered by name."""

from strop.methods.base import METHODS, Method
from strop.methods import full, freeze, gradual  # noqa: F401  (registers the methods)
from strop.methods import peft  # noqa: F401  (lora, ia3, prompt_tuning, prefix_tuning)
from strop.methods import bottleneck  # noqa: F401  (houlsby, pfeiffer)
from strop.methods import sparse  # noqa: F401  (the recovery fine-tune of strop prune)
from strop.methods import fewshot  # noqa: F401  (the contrastive stage, then the head)

__all__ = ["METHODS", "Method"]
