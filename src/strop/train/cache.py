"""Cached body outputs for methods that freeze the body: computed once, then every epoch trains the head.

The frozen body runs in eval mode (no dropout), so its outputs are the same in every epoch; recomputing
them is most of the cost of training a head. In the training precision, so the head sees the numbers it
would see without the cache.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from strop.methods.base import FrozenSplit


@torch.no_grad()
def cache_body_outputs(split: FrozenSplit, model: torch.nn.Module, features: list[dict],
                       collate: Callable[[list[dict]], dict], batch_size: int, device: torch.device, bf16: bool,
                       show: bool) -> list[dict]:
    """One pass of the frozen body over `features` (token dicts with 'labels').

    Returns, in the order of `features`, {"features": body output (fp32, CPU), "labels": id,
    "num_tokens": the text's token count}.
    """
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))  # least padding
    cached: list[dict | None] = [None] * len(features)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="caching frozen body outputs", disable=not show, leave=False, unit="batch"):
        indices = order[start:start + batch_size]
        batch = collate([features[i] for i in indices])
        labels = batch.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = split.features({k: v.to(device) for k, v in batch.items()})
        outputs = outputs.float().cpu()
        for row, i in enumerate(indices):
            cached[i] = {"features": outputs[row], "labels": int(labels[row]),
                         "num_tokens": len(features[i]["input_ids"])}
    return cached


def collate_cached(items: list[dict]) -> dict[str, torch.Tensor]:
    return {"features": torch.stack([item["features"] for item in items]),
            "labels": torch.tensor([item["labels"] for item in items]),
            "num_tokens": torch.tensor([item["num_tokens"] for item in items])}
