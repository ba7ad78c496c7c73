"""train.batch_size=auto and train.eval_batch_size=auto: a batch size measured on the run's own model and data.

On a GPU the goal is the largest batch that fits in memory (doubling until the device runs out); on a CPU,
where memory is rarely the limit, it is the batch that processes the most examples per second: larger
batches amortise per-call overhead, but past a point they only add padding and cache misses.

Training batches are also an optimisation choice: with a few hundred examples, a batch of 128 leaves a
handful of steps per epoch. So training candidates stop at 64 and at a tenth of the training set (at least
ten steps an epoch); evaluation, which only has to be fast, goes up to 256.

The measurement leaves the model and the random state as it found them: it takes no optimizer step,
restores the weights and buffers (batch norm statistics move in training mode) and the RNG state (dropout
draws from it), so a run with `auto` is the run with the chosen number written in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from strop.train.checkpoint import cpu_state

TRAIN_CANDIDATES = (8, 16, 32, 64)
EVAL_CANDIDATES = (16, 32, 64, 128, 256)
MIN_STEPS_PER_EPOCH = 10
FROZEN_BODY_TRAIN_BATCH = 16


@dataclass(frozen=True)
class Measured:
    """What the search chose and why: examples per second for each size tried (None: did not fit)."""

    chosen: int
    rates: dict[int, float | None]
    goal: str  # "fastest" or "largest"

    def describe(self, what: str) -> str:
        tried = ", ".join(f"{size}: {'out of memory' if rate is None else f'{rate:.3g}/s'}"
                          for size, rate in self.rates.items())
        goal = "the fastest per example" if self.goal == "fastest" else "the largest that fits"
        return f"{what} batch size {self.chosen} (auto: {goal}; {tried})"


def find_batch_size(step: Callable[[list[dict]], None], features: list[dict], candidates: tuple[int, ...],
                    device: torch.device, seed: int, repeats: int = 3) -> Measured:
    """Times `step` (one forward, or forward and backward, over a list of feature dicts) on random batches of
    `features` for each candidate size in increasing order.

    On CUDA: the largest candidate that runs without running out of memory. Elsewhere: the candidate with the
    most examples per second, stopping once two sizes in a row are slower than the best.
    """
    generator = torch.Generator().manual_seed(seed)
    cuda = device.type == "cuda"
    sync = cuda and torch.cuda.is_available()
    rates: dict[int, float | None] = {}
    best, slower = candidates[0], 0
    for size in candidates:
        batches = [[features[i] for i in torch.randint(len(features), (size,), generator=generator).tolist()]
                   for _ in range(repeats + 1)]
        try:
            step(batches[0])  # warm-up: allocations, kernel choice
            if sync:
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for batch in batches[1:]:
                step(batch)
            if sync:
                torch.cuda.synchronize(device)
        except torch.OutOfMemoryError:
            rates[size] = None
            torch.cuda.empty_cache()
            break
        rates[size] = size * repeats / (time.perf_counter() - started)
        if cuda:
            best = size
        elif size == best or rates[size] > rates[best]:
            best, slower = size, 0
        else:
            slower += 1
            if slower == 2:
                break
    return Measured(best, rates, "largest" if cuda else "fastest")


def train_candidates(num_train: int) -> tuple[int, ...]:
    """Training sizes to try: up to 64, and leaving at least MIN_STEPS_PER_EPOCH steps an epoch."""
    limit = max(TRAIN_CANDIDATES[0], num_train // MIN_STEPS_PER_EPOCH)
    return tuple(size for size in TRAIN_CANDIDATES if size <= limit)


def eval_candidates(num_examples: int) -> tuple[int, ...]:
    """Evaluation sizes to try: up to 256, and none beyond the first that holds all the examples."""
    fitting = tuple(size for size in EVAL_CANDIDATES if size < num_examples)
    return fitting + tuple(size for size in EVAL_CANDIDATES if size >= num_examples)[:1] or EVAL_CANDIDATES[-1:]


class Preserved:
    """Restores a model's weights and buffers, which of its parameters train, and torch's RNG state on leaving
    the block (a method's `prepare` in the block freezes what the run may train first: few-shot's contrastive
    stage trains the body its head stage freezes)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.weights, self.rng = cpu_state(self.model), torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.training = self.model.training
        self.trains = [p.requires_grad for p in self.model.parameters()]
        return self

    def __exit__(self, *exc):
        self.model.load_state_dict(self.weights)
        self.model.zero_grad(set_to_none=True)
        self.model.train(self.training)
        for parameter, trains in zip(self.model.parameters(), self.trains):
            parameter.requires_grad_(trains)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        return False


def resolve_batch_sizes(cfg, model, task, method, train_features: list[dict], val_features: list[dict],
                        collate: Callable[[list[dict]], dict], device: torch.device, show: bool):
    """The config with train.batch_size and train.eval_batch_size made concrete where they are `auto`, each
    measured on this model and data (said unless quiet). `method` decides what trains, as in the run."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    tc = cfg.train
    if "auto" not in (tc.batch_size, tc.eval_batch_size):
        return cfg
    bf16 = tc.mixed_precision == "bf16"

    def forward(batch: list[dict]) -> torch.Tensor:
        inputs = {k: v.to(device) for k, v in collate(batch).items()}
        labels = inputs.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**inputs)
        return task.loss(logits, labels)

    def train_step(batch: list[dict]) -> None:
        method.train_mode(model)
        forward(batch).backward()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_step(batch: list[dict]) -> None:
        model.eval()
        forward(batch)

    sizes, said = {}, []
    model.to(device)
    with Preserved(model):
        method.prepare(model)
        if tc.batch_size == "auto":
            if method.frozen_split(model) is not None:
                sizes["batch_size"] = FROZEN_BODY_TRAIN_BATCH
                said.append(f"training batch size {FROZEN_BODY_TRAIN_BATCH} (auto: the body is frozen, so a step "
                            "trains the head alone on cached outputs and costs next to nothing at any size"
                            + ("; few-shot's contrastive groups hold this many examples)"
                               if hasattr(method, "contrastive_stage") else ")"))
            else:
                measured = find_batch_size(train_step, train_features, train_candidates(len(train_features)),
                                           device, tc.seed)
                sizes["batch_size"] = measured.chosen
                said.append(measured.describe("training"))
        if tc.eval_batch_size == "auto":
            scored = val_features or train_features
            measured = find_batch_size(eval_step, scored, eval_candidates(len(scored)), device, tc.seed)
            sizes["eval_batch_size"] = measured.chosen
            said.append(measured.describe("evaluation"))
    if show:
        for line in said:
            tqdm.write(line)
    return replace(cfg, train=replace(tc, **sizes))
