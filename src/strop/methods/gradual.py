"""Gradual unfreezing (Howard & Ruder 2018, ULMFiT): the task head trains first; every method.unfreeze_every
epochs one more layer group of the backbone joins, from the top down (the embeddings last), down to the
bottom method.freeze_layers layers, which stay frozen throughout. What trains in an epoch depends only on the
epoch's number, so a resumed run continues at the same stage."""

from __future__ import annotations

from torch import nn

from strop.methods.base import METHODS, Method, freeze_bottom


@METHODS.register("gradual")
class Gradual(Method):
    def stage(self, epoch: int) -> int:
        """How many backbone layers train in `epoch` (0-based): none in the first method.unfreeze_every epochs."""
        return epoch // self.cfg.unfreeze_every

    # what trains changes from epoch to epoch, so nothing is cached, not even a bottom that stays frozen
    caches_inputs = False
    settings = ("freeze_layers", "unfreeze_every")

    def prepare(self, model: nn.Module) -> None:
        for p in model.parameters():  # all in the optimizer from the start; start_epoch holds back the rest
            p.requires_grad_(True)
        freeze_bottom(model, self.cfg.freeze_layers)  # never joins (and a depth beyond the model's is refused)

    _epoch = 0

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        self._epoch = epoch
        layers = model.body.layers()
        training = self.stage(epoch)
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                p.requires_grad_(i >= max(len(layers) - training, self.cfg.freeze_layers))

    def frozen_split(self, model: nn.Module) -> None:
        return None  # what is frozen changes from epoch to epoch: nothing stays cached

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        layers = model.body.layers()
        for layer in layers[:max(0, len(layers) - self.stage(self._epoch), self.cfg.freeze_layers)]:
            layer.eval()
