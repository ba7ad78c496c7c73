"""The interface every adaptation method implements, and their registry."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from strop.registry import Registry


class Method:
    """Decides which parameters train. A method knows nothing of tasks, files or the training loop."""

    # Whether the pretrained body trains with the head. Where it does, the new head trains at
    # optim.head_lr_scale times optim.lr; where it is frozen, optim.lr is the head's own rate.
    trains_body = True
    # Whether the whole body's outputs are computed once and cached (a body that nothing in it trains): then
    # augmented inputs would never reach what trains.
    caches_body = False
    # The method.* settings the method reads besides its name (others are said to be unused when given)
    settings: tuple[str, ...] = ("freeze_layers",)

    @property
    def caches_inputs(self) -> bool:
        """Whether what trains reads cached outputs instead of the model inputs (the whole body's, or the bottom
        method.freeze_layers layers' unless method.cache_bottom=false): then augmented or mixed inputs would never
        reach it."""
        return self.caches_body or (self.cfg.freeze_layers > 0 and self.cfg.cache_bottom)

    @property
    def body_rate(self) -> bool:
        """Whether the body's parameters train at the body's rate, below the new head's (optim.head_lr_scale):
        where a method trains only a head, adapters or biases, all of it trains at one rate, and optim.lr=auto
        gives it the head's."""
        return self.trains_body

    def __init__(self, cfg=None):
        """cfg: the run's MethodConfig (method.freeze_layers, method.unfreeze_every); defaults without one."""
        from strop.config import MethodConfig

        self.cfg = cfg if cfg is not None else MethodConfig()
        if self.cfg.freeze_layers == "auto":  # strop.fit makes it concrete from the data; elsewhere none is frozen
            self.cfg = replace(self.cfg, freeze_layers=0)
        if self.cfg.cache_bottom == "auto":  # strop.fit makes it concrete from the data; elsewhere it is cached
            self.cfg = replace(self.cfg, cache_bottom=True)

    def prepare(self, model: nn.Module) -> None:
        """Sets requires_grad on the model's parameters before the optimizer is built: every parameter that
        trains at some point of the run must train here (all of them, unless a method says otherwise)."""
        freeze_bottom(model, self.cfg.freeze_layers)

    def before_training(self, model: nn.Module, task, train_features: list[dict], val_features: list[dict],
                        collate, cfg, run, accelerator) -> dict | None:
        """Runs once in `fit`, after the run directory exists and before the task's training: a stage of the
        method's own (few-shot's contrastive stage). Returns what the run's summary says of it: its "name",
        "train_seconds" (which count in the run's training time), "steps", "parameters" (trainable and total) and
        its own "summary" file; None (the default) where there is none."""
        return None

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        """Before each epoch (0-based), after `prepare`: where what trains changes during the run."""

    def train_mode(self, model: nn.Module) -> None:
        """Puts the model in training mode before each epoch; frozen methods keep frozen parts in eval mode."""
        model.train()
        for layer in frozen_layers(model, self.cfg.freeze_layers):
            layer.eval()  # no dropout noise in layers that cannot adapt to it

    def frozen_split(self, model: nn.Module) -> FrozenSplit | None:
        """Where the method freezes the model's body, the split of the model into that body and the head that
        trains, so the body's outputs can be computed once instead of every epoch; None where the whole
        model must run at every step (or where its layout is not known). By default the bottom
        method.freeze_layers layers, where there are any: their output is cached (methods/bottom.py), unless
        method.cache_bottom=false."""
        if self.cfg.freeze_layers == 0 or not self.cfg.cache_bottom:
            return None
        from strop.methods.bottom import bottom_split

        return bottom_split(model, self.cfg.freeze_layers)


@dataclass(frozen=True)
class FrozenSplit:
    """A frozen body whose outputs are cached, and the trainable head that runs on them.

    features: a batch of model inputs (input_ids, attention_mask, ...) -> what the head reads, (batch, ...).
    head: `head(features)` returns the logits, like the whole model; it is the model's own head module,
        so training it trains the model's head.
    """

    features: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    head: nn.Module
    keeps_inputs: bool = False  # the head reads the model inputs too (head(features=..., **inputs))
    check: Callable[[dict[str, torch.Tensor]], bool] | None = None  # on a batch: is the split exact for this model?


METHODS: Registry[type[Method]] = Registry("method")


def unread_settings(method) -> str | None:
    """A note naming the method.* settings given that the chosen method does not read (a LoRA rank with
    method.name=full: a typo in the name, or a setting left from another run), or None. A frozen bottom of 0 or
    auto, and cache_bottom, are what a run's own config.yaml records for every method: not said."""
    from dataclasses import fields

    from strop.config import MethodConfig

    default, reads = MethodConfig(), METHODS.get(method.name).settings
    unread = [f.name for f in fields(MethodConfig)
              if f.name not in ("name", "cache_bottom", *reads) and getattr(method, f.name) != getattr(default, f.name)
              and not (f.name == "freeze_layers" and method.freeze_layers in ("auto", 0))]
    if not unread:
        return None

    def readers(key: str) -> str:
        users = [name for name in METHODS.names() if key in METHODS.get(name).settings]
        others = [name for name in METHODS.names() if name not in users]
        return ", ".join(users) if len(users) <= len(others) else f"every method but {', '.join(others)}"

    def shown(value) -> str:
        return f"[{','.join(value)}]" if isinstance(value, tuple) else str(value)

    said = "; ".join(f"method.{key}={shown(getattr(method, key))} (read by {readers(key)})" for key in unread)
    return f"not read by method.name={method.name}, so unused: {said}"


def uncached_hint(cfg) -> str:
    """The end of a refusal of augmented or mixed inputs where a frozen bottom is cached: how to have both (a
    frozen bottom can run at every step; a method that freezes the whole body always caches it)."""
    if cfg.method.freeze_layers and not METHODS.get(cfg.method.name).caches_body:
        return (", or method.cache_bottom=false (the frozen layers then run at every step; a run's config.yaml "
                "records the cache_bottom=true that auto chose for a run without augmentation)")
    return ""


def frozen_layers(model: nn.Module, k: int) -> list[nn.Module]:
    """The bottom k layers of the model's backbone (its own layer list, the embeddings as layer 0)."""
    if k == 0:
        return []
    from strop.errors import StropError

    layers = model.body.layers()
    if k > len(layers):
        raise StropError(f"method.freeze_layers={k}, but the backbone has {len(layers)} layers (the embeddings "
                         f"count as layer 0): choose at most {len(layers) - 1}, or method.name=freeze to freeze all")
    return layers[:k]


def freeze_bottom(model: nn.Module, k: int) -> None:
    for layer in frozen_layers(model, k):
        for p in layer.parameters():
            p.requires_grad_(False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
