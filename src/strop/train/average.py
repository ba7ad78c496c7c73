"""train.ema_decay: an exponential moving average of the weights, validated, kept and saved in their place.

The average is taken after every optimizer step over what trains (parameters that require gradients) and over
the floating-point buffers (BatchNorm's running statistics), as timm's model EMA does; the frozen rest is not
copied, so a LoRA run on a large body costs a copy of its adapters, not of the body. Its decay is warmed up,
min(decay, (1 + n) / (10 + n)) at optimizer step n (as TensorFlow's ExponentialMovingAverage with num_updates), so
that in a short run the average is not held back by the untrained weights it started from.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def warmed_decay(decay: float, step: int) -> float:
    """The decay used after optimizer step `step` (1, 2, ...)."""
    return min(decay, (1 + step) / (10 + step))


def describe(decay: float, total_steps: int | None) -> str:
    """What train.ema_decay will average over in a run of `total_steps` optimizer steps (None: not known yet): a
    run that ends before the warm-up reaches `decay` averages over about its last (10 + n) / 9 steps, whatever
    `decay` is."""
    warmup = (10 * decay - 1) / (1 - decay)  # the step at which (1 + n) / (10 + n) reaches the decay
    note = (f"train.ema_decay={decay:g}: a moving average of the weights is validated each epoch and kept (its decay "
            f"rises to {decay:g} over the first {warmup:,.0f} optimizer steps, then averages over about "
            f"{1 / (1 - decay):,.0f})")
    if total_steps is None or total_steps >= warmup:
        return note
    return note[:-1] + (f"; this run's {total_steps:,} steps end before that, at "
                        f"{warmed_decay(decay, total_steps):.4f}: its last average spans about the last "
                        f"{(10 + total_steps) / 9:,.0f} steps, and a higher decay changes nothing)")


class WeightAverage:
    def __init__(self, decay: float):
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}

    @staticmethod
    def _averaged(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The live tensors averaged: the parameters that train now, and every floating-point buffer."""
        tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
        tensors.update((name, b) for name, b in model.named_buffers() if b.is_floating_point())
        return tensors

    @torch.no_grad()
    def track(self, model: torch.nn.Module) -> None:
        """Starts the average of each tensor not yet averaged from its value now: at the start, and at each
        epoch for the layers gradual unfreezing has just made trainable (until then they had not moved)."""
        for name, tensor in self._averaged(model).items():
            if name not in self.shadow:
                self.shadow[name] = tensor.detach().clone()

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """The average's update after optimizer step `step` (1, 2, ...: the loop's count, which a checkpoint keeps)."""
        decay = warmed_decay(self.decay, step)
        live = self._averaged(model)
        names = [name for name in live if name in self.shadow]
        if names:
            torch._foreach_lerp_([self.shadow[n] for n in names], [live[n].detach() for n in names], 1.0 - decay)

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block, its own again after it."""
        live = {name: tensor for name, tensor in self._averaged(model).items() if name in self.shadow}
        own = {name: tensor.detach().clone() for name, tensor in live.items()}
        with torch.no_grad():
            for name, tensor in live.items():
                tensor.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, tensor in live.items():
                    tensor.copy_(own[name])

    def state(self) -> dict[str, torch.Tensor]:
        """The average as tensors on the CPU, for a checkpoint."""
        return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in self.shadow.items()}

    def restore(self, tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
        """Continues a checkpoint's average: its tensors moved to where the model's live."""
        live = dict(model.named_parameters()) | dict(model.named_buffers())  # before gradual unfreezing catches up
        unknown = sorted(set(tensors) - set(live))
        if unknown:
            raise RuntimeError(f"the averaged weights name tensors this model lacks: {unknown[:5]}")
        self.shadow = {name: tensor.to(live[name].device, live[name].dtype) for name, tensor in tensors.items()}
