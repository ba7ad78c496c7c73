"""Mixup and CutMix (`data.mixup`, `data.cutmix`): each training batch mixed with a shuffled copy of itself.

Mixup (Zhang et al. 2018) blends two examples' inputs, lam * x_i + (1 - lam) * x_j, with lam drawn from
Beta(alpha, alpha) once per batch; CutMix (Yun et al. 2019) pastes a box of image j into image i, with lam the
share of image i left. With both set, each batch uses one of the two at even odds, as timm does. The loss is
lam * loss(y_i) + (1 - lam) * loss(y_j), which for cross-entropy equals the loss on the mixed one-hot targets
and for mean squared error differs from the loss on the mixed target by a constant: one rule for every
sentence-level task, with class weights, focal loss and label smoothing left as they are.

Inputs are mixed where they enter the model: the vectors of an MLP (standardised) and the pixels of an image
model; never token ids (a blend of two token ids is no token). A frozen body's outputs are cached, so mixed
inputs would not reach what trains: such a run is refused. The draws come from torch's generator, which
strop seeds and checkpoints, so a resumed run mixes as the uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from strop.errors import StropError

INPUT_KEYS = {"vector": "x", "image": "pixel_values"}  # the input mixed, per kind of backbone


@dataclass(frozen=True)
class Mixing:
    key: str  # the batch entry that is mixed
    mixup: float  # Beta alpha; 0: off
    cutmix: float  # Beta alpha; 0: off

    def mix(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        """Mixes batch[key] in place with a shuffled copy of itself; returns (partner of each example, lam)."""
        inputs = batch[self.key]
        partner = torch.randperm(len(inputs))
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or bool(torch.rand(()) < 0.5))
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        if use_cutmix:
            batch[self.key], lam = cut_and_paste(inputs, partner, lam)
        else:
            batch[self.key] = lam * inputs + (1 - lam) * inputs[partner]
        return partner.to(inputs.device), lam


def cut_and_paste(images: torch.Tensor, partner: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """CutMix of (batch, channels, height, width) images: a box of area share 1 - lam, centred uniformly at
    random and clipped at the borders, taken from each partner. Returns the images and lam corrected for
    the clipping (the share of each image that is its own)."""
    height, width = images.shape[-2:]
    cut = math.sqrt(1 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)


def mixed_loss(task, logits: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor | None,
               lam: float) -> torch.Tensor:
    """The task's loss on a batch whose inputs `Mixing.mix` mixed (each example with its partner's, lam of its
    own): the targets mixed alike. Unmixed (partner None): the task's loss."""
    loss = task.loss(logits, labels)
    return loss if partner is None else lam * loss + (1 - lam) * task.loss(logits, labels[partner])


def mixing_for(cfg, model, task, cached: bool) -> Mixing | None:
    """The run's Mixing, or None where data.mixup and data.cutmix are 0.

    Raises:
        StropError: mixing asked of text inputs, CutMix of vectors, a token-level task, or a cached body.
    """
    d = cfg.data
    if d.mixup == 0 and d.cutmix == 0:
        return None
    given = [name for name in ("mixup", "cutmix") if getattr(d, name)]
    asked = ", ".join(f"data.{name}={getattr(d, name):g}" for name in given)
    zero = "set it to 0" if len(given) == 1 else "set them to 0"
    kind = getattr(model.body, "kind", None)
    if kind not in INPUT_KEYS:
        raise StropError(f"{asked}: mixing is for vector and image inputs, not {kind} (a blend of token ids is no "
                         "text); " + (zero if task.level != "sequence" else  # no text augmentation either
                                      "for texts use data.augment=deletion, swap, deletion_swap or synonym"))
    if d.cutmix and kind != "image":
        raise StropError(f"data.cutmix={d.cutmix:g}: CutMix pastes a box of one image into another, so it is for "
                         "images; for vectors use data.mixup")
    if task.level != "sequence":
        raise StropError(f"{asked}: {task.name} has a target per position, which mixing two examples does not "
                         f"keep apart; {zero}")
    if cached:
        from strop.methods.base import uncached_hint

        raise StropError(f"{asked} with method.name={cfg.method.name}: the frozen layers' outputs are computed once "
                         "and cached, so mixed inputs would never reach what trains; use a method that trains the "
                         f"whole body (full, gradual), or {zero}" + uncached_hint(cfg))
    return Mixing(INPUT_KEYS[kind], d.mixup, d.cutmix)
