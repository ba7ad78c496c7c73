"""Batch samplers whose order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

import torch


class BatchSampler:
    """Shuffled batches of indices; with group_by_length, batches of texts of similar length.

    Grouping follows the usual recipe: shuffle, cut into mega-batches of 50 batches, sort each by
    length, cut into batches, shuffle the order of the full batches (a short one comes last). Padding
    shrinks to nearly nothing while every epoch still sees a new random order and batch composition.
    """

    MEGA = 50

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True,
                 weights: list[float] | None = None):
        """weights: where given, each epoch draws len(lengths) examples with replacement, in proportion to
        them (a class-balanced sampler gives each example 1 / its class's count), instead of a permutation."""
        self.lengths = lengths
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(len(self.lengths), generator=generator).tolist()
        else:
            order = torch.multinomial(self.weights, len(self.lengths), replacement=True, generator=generator).tolist()
        if not self.group_by_length:
            yield from (order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        span = self.batch_size * self.MEGA
        batches = []
        for start in range(0, len(order), span):
            mega = sorted(order[start:start + span], key=lambda i: -self.lengths[i])
            batches += [mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        # The one short batch (the last mega-batch's shortest examples) comes last, as without grouping: processes
        # that share the batches (Accelerate deals them out in turn) then each take whole batches before it; put
        # anywhere else, Accelerate's even sharding drops a round of batches after it.
        full, short = batches[:len(order) // self.batch_size], batches[len(order) // self.batch_size:]
        for b in torch.randperm(len(full), generator=generator).tolist():
            yield full[b]
        yield from short
