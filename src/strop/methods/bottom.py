"""Caching the frozen bottom of a backbone (method.freeze_layers=k with `full` or `bitfit`).

The bottom k layers (the embeddings are layer 0) never change and run in eval mode, so their output is the
same every epoch: it is computed once, and each training step runs only the layers above. Freezing then saves
time as well as memory (the frozen layers' forward pass is most of what they cost; they have no backward).

How: while the model runs on a cached batch, the bottom layers' forward methods are swapped for stand-ins. The
lowest returns the cached output of layer k-1; the others pass their input through unchanged. The model's own
forward does everything else (masks, the layers above, pooling, the head), so no architecture's forward is
rewritten here. Models whose layers are not a plain stack (something between two layers, such as a projection
after the embeddings) would compute something else: `check` compares the two ways on real inputs before the
cache is used, and the run trains without the cache where they differ.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from strop.methods.base import FrozenSplit


class _Captured(Exception):
    """Raised by the hook on layer k-1 once it has its output: the layers above need not run."""


def _hidden(output):
    """A layer's hidden state: the output itself, or the first item of a tuple (some blocks add attentions)."""
    return output[0] if isinstance(output, tuple) else output


class BottomCached(nn.Module):
    """The model, run on the cached output of its bottom k layers: forward(features, **model inputs)."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        self.model, self.k = model, k
        self.returns_tuple = False  # whether the blocks return tuples: learnt when the bottom's output is computed

    def bottom_output(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The output of layer k-1 on a batch of model inputs, (batch, seq, hidden); stops the model there."""
        captured = {}

        def capture(module, args, output):
            captured["output"] = output
            raise _Captured

        handle = self.model.body.layers()[self.k - 1].register_forward_hook(capture)
        try:
            self.model.head_inputs(**inputs)
        except _Captured:
            pass
        finally:
            handle.remove()
        if self.k > 1:
            self.returns_tuple = isinstance(captured["output"], tuple)
        return _hidden(captured["output"])

    def forward(self, features: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        with self._bottom_replaced(features):
            return self.model(**inputs)

    @contextmanager
    def _bottom_replaced(self, features: torch.Tensor):
        layers = self.model.body.layers()[:self.k]
        saved = [layer.__dict__.get("forward") for layer in layers]
        wrap = (lambda hidden: (hidden,)) if self.returns_tuple else (lambda hidden: hidden)
        layers[0].forward = lambda *args, **kwargs: features
        for layer in layers[1:]:
            layer.forward = lambda hidden_states, *args, **kwargs: wrap(hidden_states)
        try:
            yield
        finally:
            for layer, forward in zip(layers, saved):
                if forward is None:
                    del layer.forward
                else:
                    layer.forward = forward

    @torch.no_grad()
    def check(self, inputs: dict[str, torch.Tensor]) -> bool:
        """Whether running on the cached bottom gives the model's own outputs on `inputs` (eval mode, fp32)."""
        training = self.model.training
        self.model.eval()
        try:
            expected = self.model(**inputs)
            got = self(self.bottom_output(**inputs), **inputs)
        finally:
            self.model.train(training)
        mask = inputs.get("attention_mask")
        if expected.dim() == 3 and mask is not None:  # per token: padding positions are not scored
            expected, got = expected[mask.bool()], got[mask.bool()]
        return expected.shape == got.shape and torch.allclose(expected, got, rtol=1e-4, atol=1e-4)


def bottom_split(model: nn.Module, k: int) -> FrozenSplit:
    """The split for a model whose bottom k layers are frozen: cache their output, train the rest on it."""
    cached = BottomCached(model, k)
    return FrozenSplit(features=cached.bottom_output, head=cached, keeps_inputs=True, check=cached.check)
