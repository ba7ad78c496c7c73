"""Cached body outputs for methods that freeze the body: computed once, then every epoch trains the head.

The frozen body runs in eval mode (no dropout), so its outputs are the same in every epoch; recomputing
them is most of the cost of training a head. The loop caches the training examples in the training precision
(`bf16`), so the head sees the numbers it would see without the cache, and validation in fp32, the precision of
its final validation. Works for every backbone and task: what is cached is what the head reads
(a vector per example, or a vector per token, trimmed to the example's length).
"""

from __future__ import annotations

from typing import Callable

import torch

from strop.methods.base import FrozenSplit
from strop.progress import progress


@torch.no_grad()
def cache_body_outputs(split: FrozenSplit, model: torch.nn.Module, features: list[dict], input_keys: tuple[str, ...],
                       collate: Callable[[list[dict]], dict], batch_size: int, device: torch.device, bf16: bool,
                       show: bool) -> list[dict]:
    """One pass of the frozen body over `features`.

    Returns, in the order of `features`, {"features": what the head reads (fp32, CPU), "num_tokens": the
    example's token count, and every feature that is not a model input (labels, word positions)}.
    """
    model.eval()
    order = sorted(range(len(features)), key=lambda i: example_length(features[i]))  # least padding
    cached: list[dict | None] = [None] * len(features)
    starts = range(0, len(order), batch_size)
    for start in progress(starts, "caching frozen body outputs", show):
        indices = order[start:start + batch_size]
        batch = collate([{k: features[i][k] for k in input_keys if k in features[i]} for i in indices])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = split.features(**{k: v.to(device) for k, v in batch.items()})
        outputs = outputs.float().cpu()
        for row, i in enumerate(indices):
            length = example_length(features[i])
            head_input = outputs[row, :length] if outputs.dim() == 3 else outputs[row]  # tokens: trim the padding
            carried = {k: v for k, v in features[i].items() if split.keeps_inputs or k not in input_keys}
            cached[i] = {"features": head_input, "num_tokens": length, **carried}
    return cached


def example_length(feature: dict) -> int:
    """Tokens in an example (1 for a vector): what batching by length and throughput count."""
    return len(feature["input_ids"]) if "input_ids" in feature else 1
