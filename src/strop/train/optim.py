"""Optimizer with parameter groups (no weight decay on biases and norms) and the learning-rate schedule."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from strop.config import OptimConfig

AUTO_LR = 5e-5
AUTO_LR_STEPS = 160  # a run of fewer optimizer steps gets a peak rate raised in proportion ...
AUTO_LR_MAX_FACTOR = 4  # ... up to 4x (2e-4)
AUTO_LR_CONVOLUTIONAL = 1e-3  # a convolutional image body (its new head: head_lr_scale times that)

_NO_DECAY_TYPES = (nn.LayerNorm, nn.Embedding, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def parameter_groups(model: nn.Module, weight_decay: float, head: set[int], head_lr: float,
                     layer_rates: dict[int, float] | None = None) -> list[dict]:
    """Trainable parameters split into decayed weights and biases/norm/embedding weights that are not decayed
    (decaying them only pulls them from their pretrained values); the parameters in `head` form groups of
    their own at rate `head_lr`, after the body's; `layer_rates` (parameter id -> multiple of the peak rate,
    see `layer_rate_multiples`) splits the body's groups by rate.

    Groups name what they hold (`kind`: "decay" or "no_decay"; `rate`: the multiple of the peak rate), so that
    an L1 penalty finds the weights and a checkpoint's groups can be matched."""
    layer_rates = layer_rates or {}
    groups, seen = {}, set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue  # a tied weight (e.g. a language-model head's decoder and the embeddings) counts once
            seen.add(id(param))
            no_decay = (name.endswith("bias") or isinstance(module, _NO_DECAY_TYPES)
                        or "norm" in type(module).__name__.lower())
            in_head = id(param) in head
            rate = 1.0 if in_head else layer_rates.get(id(param), 1.0)
            groups.setdefault((in_head, no_decay, rate), []).append(param)
    order = sorted(groups, key=lambda key: (key[0], -key[2], key[1]))  # body first, top layers first
    return [{"params": groups[key], "weight_decay": 0.0 if key[1] else weight_decay,
             "kind": "no_decay" if key[1] else "decay", "rate": key[2],
             **({"lr": head_lr} if key[0] else {"lr_scale": key[2]})}
            for key in order]


def layer_rate_multiples(layers: list[nn.Module], decay: float) -> dict[int, float]:
    """Discriminative fine-tuning (Howard & Ruder 2018): layer i of L (bottom first, the embeddings 0) trains
    at decay ** (L - 1 - i) times the peak rate; the top layer, and all that is in no layer, at the peak."""
    if decay == 1.0:
        return {}
    rates = {}
    for i, layer in enumerate(layers):
        for param in layer.parameters():
            rates[id(param)] = decay ** (len(layers) - 1 - i)
    return rates


def l1_penalty(optimizer: torch.optim.Optimizer, strength: float) -> torch.Tensor | float:
    """strength * the sum of |w| over the decayed (weight) groups of the trained parameters."""
    if strength == 0:
        return 0.0
    return strength * sum(p.abs().sum() for g in optimizer.param_groups if g.get("kind") == "decay"
                          for p in g["params"] if p.requires_grad)


def optimizer_steps(num_batches: int, cfg, num_processes: int = 1) -> int:
    """The optimizer steps each process takes in the whole run (Accelerate deals the batches out among the
    processes; one step every train.grad_accum batches). cfg: the run's Config."""
    return math.ceil(num_batches / (cfg.train.grad_accum * num_processes)) * cfg.train.epochs


def resolve_lr(setting: float | str, total_steps: int, convolutional: bool = False) -> float:
    """optim.lr, with `auto` made concrete: 5e-5, raised in proportion when the whole run has fewer than 160
    optimizer steps, up to 4x (2e-4). Tiny data at batch 16 makes a run of a few dozen steps, too few at
    5e-5 to move a model far from its start. SST-2, 5 epochs, dev accuracy (mean of 3): 64 texts (20
    steps) 0.60 at 5e-5, 0.67 at 2e-4; 128 texts (40 steps) 0.52 -> 0.72 at 2e-4; 256 texts (80 steps)
    0.76 -> 0.78 at 1e-4; from 500 texts (160 steps) on the rate stays 5e-5, which is best there (1,000
    texts: 0.837 at 5e-5, 0.835 at 1e-4, 0.815 at 2e-4). Smaller batches give the same gain through more
    steps, but each step has a fixed cost (the optimizer over all 22.7M parameters), so they are slower.

    A convolutional image body (`convolutional`) trains at 1e-3, 20 times a transformer's rate: fine-tuning
    EfficientNet-Lite0 on 2,000 CIFAR-10 images for 3 epochs (AdamW, head at 20x) scored 0.582 with the body
    at 1e-4, 0.674 at 5e-4 and 0.722 at 1e-3 (docs/images.md); its BatchNorm-heavy layers need the larger steps.
    """
    if setting != "auto":
        return float(setting)
    if convolutional:
        return AUTO_LR_CONVOLUTIONAL
    return AUTO_LR * min(AUTO_LR_MAX_FACTOR, max(1.0, AUTO_LR_STEPS / max(total_steps, 1)))


def faster_parameters(trained: nn.Module, new: set[int], body_rate: bool) -> set[int]:
    """The parameters that train at optim.head_lr_scale times the peak rate: the new ones (a new head) where
    pretrained parameters train beside them. None where only new ones train (a new MLP, all of whose
    parameters are new) or the body is frozen: the peak rate is then theirs, and optim.lr says it."""
    trainable = {id(p) for p in trained.parameters() if p.requires_grad}
    return set() if not body_rate or trainable <= new else set(new)


def build_optimizer(trained: nn.Module, cfg: OptimConfig, lr: float, head: set[int] = frozenset(),
                    layer_rates: dict[int, float] | None = None) -> torch.optim.Optimizer:
    """The optimizer of `cfg.name` over `trained`, at peak rate `lr` (optim.lr resolved by `resolve_lr`) and
    `lr * cfg.head_lr_scale` for the parameters in `head`: those that start from random values (a new task
    head; see `TaskModel.new_parameters`).

    The pooler of BERT-like models, where the pooling uses it, is pretrained and trains at the body's rate:
    at the head's rate it lowered SST-2 accuracy at 1,000 texts (bundled MiniLM-L6, seeds 1-10) from 0.8451
    to 0.8378.

    Why the head gets more: it starts from random weights, the body from pretrained ones. At the body's
    rate the head is still learning when the epoch budget ends; the last epoch scores best on the many-class
    rows. Bundled MiniLM-L6, 5 epochs, the same seeds, head at 1x / 20x the rate: banking77 (77 classes)
    0.893 / 0.917 and 0.872 / 0.914.
    """
    groups = parameter_groups(trained, cfg.weight_decay, head, lr * cfg.head_lr_scale, layer_rates)
    for group in groups:
        if "lr_scale" in group:
            group["lr"] = lr * group.pop("lr_scale")
    # The fused kernel does the whole update in one pass over the parameters: on a CPU, 9.7 ms instead of
    # 55 ms per step for MiniLM's 22.7M parameters (the for-each default), a third of a step on short texts.
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    if cfg.name == "adam":
        # Adam's weight decay is L2 added to the gradient (not decoupled, unlike AdamW).
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


# optim.* settings read only with some optimizers or schedules: (key, the setting that reads them, its values)
READ_ONLY_WITH = [("momentum", "name", ("sgd", "rmsprop")), ("nesterov", "name", ("sgd",)),
                  ("final_lr_ratio", "schedule", ("exponential",)), ("step_epochs", "schedule", ("step",)),
                  ("step_gamma", "schedule", ("step",)), ("power", "schedule", ("polynomial",))]


def unread_optim_settings(cfg: OptimConfig) -> str | None:
    """A note naming the optim.* settings given (not at their defaults) that this optimizer or schedule does not
    read (optim.momentum with AdamW: a setting left from another run, or the wrong optim.name), or None."""
    default = OptimConfig()
    unread = [f"optim.{key}={getattr(cfg, key)} (read with optim.{by}={' or '.join(values)})"
              for key, by, values in READ_ONLY_WITH
              if getattr(cfg, by) not in values and getattr(cfg, key) != getattr(default, key)]
    if not unread:
        return None
    return f"not read with optim.name={cfg.name} and optim.schedule={cfg.schedule}, so unused: {'; '.join(unread)}"


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    """optim.warmup below 1 is a share of all steps; from 1 on, a number of steps."""
    return int(cfg.warmup * total_steps) if cfg.warmup < 1 else min(int(cfg.warmup), total_steps)


def schedule_factor(cfg: OptimConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The multiple of the peak rate at optimizer step `step`: a linear warmup, then the schedule's decay
    over the remaining steps (progress p from 0 to 1)."""
    warmup = warmup_steps(cfg, total_steps)
    if step < warmup:
        return step / warmup  # as transformers' schedules: the first step at rate 0
    p = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - p)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if cfg.schedule == "polynomial":
        return (1.0 - p) ** cfg.power
    if cfg.schedule == "exponential":
        return cfg.final_lr_ratio ** p
    if cfg.schedule == "step":
        return cfg.step_gamma ** (step // (cfg.step_epochs * max(1, steps_per_epoch)))
    return 1.0  # constant


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: int = 1):
    """A LambdaLR with `schedule_factor`: warmup, then linear, cosine, polynomial, exponential, step or no
    decay. Its state is the step count alone, so a resumed run continues the same curve."""
    factor = functools.partial(schedule_factor, cfg, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
