"""Checkpoints for exact resume: weights (safetensors), optimizer/scheduler/RNG (tensors only, loaded with
weights_only=True) and the loop's own state (JSON). Written to a staging folder and swapped in atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from strop.errors import StropError
from strop.runs import recover_dir, staged, to_json


@dataclass
class LoopState:
    """Everything the loop needs besides tensors to continue where it stopped."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_score: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    peak_lr: float = 0.0  # optim.lr as used (auto resolved)
    history: list[dict] = field(default_factory=list)  # one record per validation, as in metrics.jsonl


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU (a copy even when they already live there: they keep changing)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model, optimizer, scheduler, state: LoopState,
                    best_weights: dict[str, torch.Tensor] | None) -> None:
    """best_weights: the best epoch's weights when they differ from the current ones, else None."""
    with staged(path, "the checkpoint") as tmp:
        save_file(cpu_state(model), tmp / "model.safetensors")
        if best_weights is not None:
            save_file(best_weights, tmp / "best.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
                   tmp / "training_state.pt")
        (tmp / "state.json").write_text(to_json(asdict(state), indent=2) + "\n", encoding="utf-8")


def has_checkpoint(path: Path) -> bool:
    return (recover_dir(path) / "state.json").is_file()


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[LoopState, dict[str, torch.Tensor]]:
    """Restores model, optimizer, scheduler and RNG in place; returns the loop state and the best weights."""
    path = recover_dir(path)
    weights = load_file(path / "model.safetensors")
    model.load_state_dict(weights)
    training = torch.load(path / "training_state.pt", weights_only=True)  # never unpickle arbitrary objects
    try:
        optimizer.load_state_dict(training["optimizer"])
    except ValueError as error:  # its parameter groups differ, e.g. laid out by an earlier version of strop
        raise StropError(f"the checkpoint in {path} does not fit this run's optimizer ({error}): it cannot be "
                         "resumed; start the run again in a new output_dir") from None
    scheduler.load_state_dict(training["scheduler"])
    torch.set_rng_state(training["rng"]["torch"])
    if "cuda" in training["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["rng"]["cuda"])
    state = LoopState(**json.loads((path / "state.json").read_text()))
    best_file = path / "best.safetensors"
    best = load_file(best_file) if best_file.is_file() else weights
    return state, best
