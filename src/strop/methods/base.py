"""The interface every adaptation method implements, and their registry."""

from __future__ import annotations

from torch import nn

from strop.registry import Registry


class Method:
    """Decides which parameters train. A method knows nothing of tasks, files or the training loop."""

    def prepare(self, model: nn.Module) -> None:
        """Sets requires_grad on the model's parameters (all of them train unless a method says otherwise)."""

    def train_mode(self, model: nn.Module) -> None:
        """Puts the model in training mode before each epoch; frozen methods keep frozen parts in eval mode."""
        model.train()


METHODS: Registry[type[Method]] = Registry("method")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
