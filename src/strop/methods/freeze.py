"""Frozen backbones: the pretrained body stays as it is and only the task head on its outputs trains.

`freeze` trains the task head: its output layer and, where the pooling is the model's pooler (BERT's dense
+ tanh on the first token), that pooler too. `linear_probe` trains only the output layer, a linear map of
the frozen features (Alain & Bengio 2016, "linear classifier probes"). With mean or [CLS] pooling the head
is one linear layer, so the two differ only in that `freeze` keeps the head's dropout.

Both cache the frozen body's outputs, for every backbone and task: the body runs once over the data (in
eval mode, so without dropout, and its outputs do not change) and each epoch trains only the head on them.
"""

from __future__ import annotations

from strop.methods.base import METHODS, FrozenSplit, Method
from strop.model import TaskModel


def _split(model: TaskModel) -> FrozenSplit:
    return FrozenSplit(model.head_inputs, model.head)


@METHODS.register("freeze")
class Freeze(Method):
    """Frozen body; the task head (the pooler included, where the pooling uses it) trains."""

    trains_body = False
    caches_body = True
    settings = ()

    def prepare(self, model: TaskModel) -> None:
        for p in model.body.parameters():
            p.requires_grad_(False)
        for p in model.head.parameters():
            p.requires_grad_(True)

    def train_mode(self, model: TaskModel) -> None:
        # Frozen layers run in eval mode: no dropout noise in features that cannot adapt to it.
        model.train()
        model.body.eval()

    def frozen_split(self, model: TaskModel) -> FrozenSplit:
        return _split(model)


@METHODS.register("linear_probe")
class LinearProbe(Method):
    """Everything frozen except the head's output layer: a linear classifier on frozen features."""

    trains_body = False
    caches_body = True
    settings = ()

    def prepare(self, model: TaskModel) -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.head.output.parameters():
            p.requires_grad_(True)

    def train_mode(self, model: TaskModel) -> None:
        model.eval()

    def frozen_split(self, model: TaskModel) -> FrozenSplit:
        return _split(model)
