"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"): train for a short while at a rate
that grows exponentially, watch the loss, and suggest the rate where it falls fastest.

The test trains a copy of the run's model with the run's parameter groups (the head keeps its own multiple
of the rate), and puts the weights back when it is done: the model, the data and the run are untouched.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from strop.errors import StropError


def range_test(model, task, method, train_features: list[dict], collate, cfg, device: torch.device,
               start: float = 1e-7, end: float = 1.0, steps: int = 100, smoothing: float = 0.05,
               diverge: float = 4.0, show: bool = False) -> dict:
    """Rates from `start` to `end`, one optimizer step each, `steps` steps at most; stops early where the
    smoothed loss exceeds `diverge` times its minimum or is not finite. `show`: its progress.

    Returns:
        {"lr": [...], "loss": [...], "smoothed": [...], "suggestion": float, "why": str}
    """
    from strop.progress import progress
    from strop.train.mixing import mixed_loss, mixing_for
    from strop.train.optim import build_optimizer, faster_parameters, layer_rate_multiples
    from strop.train.sampler import BatchSampler
    from strop.train.cache import example_length

    method.prepare(model)
    saved = copy.deepcopy(model.state_dict())  # after prepare: an adapter method adds its weights there
    method.start_epoch(model, 0)
    model.to(device)
    optimizer = build_optimizer(model, cfg.optim, start, faster_parameters(model, model.new_parameters, method.body_rate),
                                layer_rate_multiples(model.body.layers(), cfg.optim.layer_decay))
    multiples = [g["lr"] / start for g in optimizer.param_groups]
    sampler = BatchSampler([example_length(f) for f in train_features], cfg.train.batch_size, cfg.train.seed,
                           cfg.train.group_by_length)
    loader = DataLoader(train_features, batch_sampler=sampler, collate_fn=collate)
    mixing = mixing_for(cfg, model, task, method.caches_inputs)  # the batches mixed as the run's will be
    lrs, losses, smoothed, average, best = [], [], [], 0.0, math.inf
    # the random numbers it draws (dropout) are put back too: a run with optim.lr=find then trains as one given
    # the rate it suggests
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            method.train_mode(model)
            batches, epoch = iter(loader), 0
            for i in progress(range(steps), "learning-rate range test", show, unit="step"):
                lr = start * (end / start) ** (i / max(steps - 1, 1))
                for group, multiple in zip(optimizer.param_groups, multiples):
                    group["lr"] = lr * multiple
                try:
                    batch = next(batches)
                except StopIteration:  # fewer batches than steps: another pass, in the next epoch's order
                    epoch += 1
                    sampler.set_epoch(epoch)
                    batches = iter(loader)
                    batch = next(batches)
                batch = {k: v.to(device) for k, v in batch.items()}
                labels = batch.pop("labels")
                partner, lam = mixing.mix(batch) if mixing is not None else (None, 1.0)
                loss = mixed_loss(task, model(**batch), labels, partner, lam)
                value = loss.item()
                if not math.isfinite(value):
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                average = (1 - smoothing) * average + smoothing * value
                debiased = average / (1 - (1 - smoothing) ** (i + 1))
                lrs.append(lr), losses.append(value), smoothed.append(debiased)
                best = min(best, debiased)
                if debiased > diverge * best and i > steps // 10:
                    break
        finally:
            model.load_state_dict(saved)  # the test leaves the model as it found it
            optimizer.zero_grad(set_to_none=True)
    suggestion, why = suggest(np.array(lrs), np.array(smoothed))
    return {"lr": lrs, "loss": losses, "smoothed": smoothed, "suggestion": suggestion, "why": why}


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, str]:
    """The rate of the steepest fall of the smoothed loss (against log rate) before its minimum, ignoring the
    first tenth of the curve (its early spikes); a tenth of the minimum's rate where too few steps come before it,
    but never less than the test's start rate.

    Raises:
        StropError: no step had a finite loss.
    """
    if len(lrs) == 0:
        raise StropError("the learning-rate range test had no step with a finite loss, even at its lowest rate: "
                         "check the data for extreme or missing values (or a regression target far from 0 in its "
                         "units), or set optim.lr by hand")
    first = max(1, len(lrs) // 10)
    # the minimum too is looked for after the first tenth: a dip among its spikes made the suggestion a tenth of
    # a rate in it, below the test's own start (3e-8 for a test from 1e-7)
    lowest = first + int(np.argmin(smoothed[first:])) if len(lrs) > first else int(np.argmin(smoothed))
    if lowest - first < 3:
        if lrs[lowest] / 10 < lrs[0]:
            return float(lrs[0]), ("the test's start rate (the loss is lowest a few steps after it, and a tenth of "
                                   "that rate is below the test's range)")
        return float(lrs[lowest] / 10), "a tenth of the rate of the lowest loss (too few steps before it)"
    slope = np.gradient(smoothed[first:lowest + 1], np.log(lrs[first:lowest + 1]))
    steepest = first + int(np.argmin(slope))
    return float(lrs[steepest]), "where the smoothed loss falls fastest"


def save_curve(result: dict, folder: Path) -> tuple[Path, Path | None]:
    """lr_find.json (the curve and the suggestion) and lr_find.png (the plot, where matplotlib is installed)."""
    from strop.runs import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "lr_find.json", result, "the learning-rate curve")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return folder / "lr_find.json", None
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(result["lr"], result["loss"], alpha=0.3, label="loss")
    axes.plot(result["lr"], result["smoothed"], label="smoothed loss")
    axes.axvline(result["suggestion"], color="red", linestyle="--", label=f"suggestion {result['suggestion']:.2e}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(folder / "lr_find.png", dpi=100)
    plt.close(figure)
    return folder / "lr_find.json", folder / "lr_find.png"
