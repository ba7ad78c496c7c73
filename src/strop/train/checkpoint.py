"""Checkpoints for exact resume: weights (safetensors), optimizer/scheduler/RNG (tensors only, loaded with
weights_only=True) and the loop's own state (JSON).

A checkpoint is written to a staging folder, each file fsynced, and swapped in atomically (`strop.runs.staged`),
so `checkpoints/last` is always a whole checkpoint, even when the process is killed while writing it.
checksums.json, written last, holds the sha256 and size of every other file; `load_checkpoint` verifies them
before it reads anything, so a checkpoint damaged afterwards (a bad disk, an interrupted copy, an edit) is
refused with a message rather than resumed from wrong numbers or failing deep inside torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from strop.errors import StropError
from strop.runs import recover_dir, staged, to_json
from strop.train.average import WeightAverage

AVERAGE = "average.safetensors"  # train.ema_decay: the moving average of the weights
MANIFEST = "checksums.json"  # {"algorithm": "sha256", "files": {name: {"sha256": hex, "bytes": size}}}
RESTART = "it cannot be resumed; start the run again in a new output_dir"


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


def cpu_state(model: torch.nn.Module, leave_out: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU (a copy even when they already live there: they keep changing), but
    those named in `leave_out`."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
            if k not in leave_out}


def never_trained(model: torch.nn.Module) -> frozenset[str]:
    """The names of `model`'s parameters that do not train now, as its state_dict names them (tied ones under
    every name). The loop passes them as `fixed` where they stay so for the whole run (a cached frozen bottom)."""
    return frozenset(name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad)


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], fixed: frozenset[str]) -> None:
    """model.load_state_dict(weights), where `weights` may leave out the parameters named in `fixed`: the run
    never trains them, so the model as built already holds their values.

    Raises:
        RuntimeError: a weight of another shape, one the model lacks, or one missing that is not in `fixed`.
    """
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - fixed:
        raise RuntimeError(f"missing {sorted(set(missing) - fixed)[:5]}, unexpected {sorted(unexpected)[:5]}")


def rng_states() -> dict[str, torch.Tensor]:
    """This process's random generators: the CPU's and, on a GPU, its device's."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def keeps_callers_random_state(function):
    """Decorates an entry point (strop.fit, pretrain) that seeds the global generators (Python's, NumPy's,
    torch's) so that a seed gives the same run: the caller gets its generators back as they were, so that a
    script's next draws do not depend on whether it trained a model in between. (A GPU's generators are given back
    where CUDA was started before the call.)"""

    @functools.wraps(function)
    def kept(*args, **kwargs):
        python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
        gpus = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        try:
            return function(*args, **kwargs)
        finally:
            random.setstate(python)
            np.random.set_state(numpy)
            torch.set_rng_state(cpu)
            if gpus is not None:
                torch.cuda.set_rng_state_all(gpus)
    return kept


def save_checkpoint(path: Path, model, optimizer, scheduler, state: LoopState,
                    best_weights: dict[str, torch.Tensor] | None, fixed: frozenset[str] = frozenset(),
                    average: WeightAverage | None = None, process_rngs: list[dict] | None = None) -> None:
    """best_weights: the best epoch's weights when they differ from the current ones, else None.
    fixed: parameters the run never trains (a cached frozen bottom), left out: a resumed run builds the model
    with their values (for MiniLM-L6 with 3 of 6 blocks frozen, 3/4 of the weights' bytes).
    average: the weights' moving average (train.ema_decay).
    process_rngs: in a run of several processes, each one's `rng_states`, in process order."""
    with staged(path, "the checkpoint") as tmp:
        save_file(cpu_state(model, fixed), tmp / "model.safetensors")
        if best_weights is not None:
            save_file(best_weights, tmp / "best.safetensors")
        if average is not None:
            save_file(average.state(), tmp / AVERAGE)
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if process_rngs is not None:  # each process draws its own dropout masks (its batches' shapes differ)
            rng["processes"] = process_rngs
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
                   tmp / "training_state.pt")
        (tmp / "state.json").write_text(to_json(asdict(state), indent=2) + "\n", encoding="utf-8")
        write_manifest(tmp)  # last: it vouches for the files above


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """checksums.json: the sha256 and size of every file in `folder`."""
    files = {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n",
                                   encoding="utf-8")


def verify_checkpoint(path: Path) -> LoopState:
    """Checks every file of the checkpoint folder `path` against checksums.json, and returns its loop state.
    Reads only; `load_checkpoint` calls it on the folder `recover_dir` gives.

    Raises:
        StropError: the manifest is missing or unreadable, or a file it lists is missing, of another size
            or another sha256; the message names the file and says the checkpoint is damaged.
    """
    damaged = f"the checkpoint in {path} is damaged"
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("algorithm") != "sha256" or not isinstance(files, dict) or "state.json" not in files:
            raise ValueError("it does not list the checkpoint's files with their sha256")
    except FileNotFoundError:
        raise StropError(f"{damaged}: it has no {MANIFEST} (it is incomplete, or was written by a strop before "
                         f"checkpoints carried checksums); {RESTART}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StropError(f"{damaged}: its {MANIFEST} cannot be read ({error}); {RESTART}") from None
    for name, expected in files.items():
        file = path / name
        if Path(name).name != name or not file.is_file():
            raise StropError(f"{damaged}: {name} is missing; {RESTART}")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise StropError(f"{damaged}: {name} has {size} bytes where {MANIFEST} records {expected.get('bytes')} "
                             f"(it was cut short or changed after it was written); {RESTART}")
        actual = sha256(file)
        if actual != expected.get("sha256"):
            raise StropError(f"{damaged}: {name} does not match its checksum in {MANIFEST} (sha256 {actual[:16]}... "
                             f"where {str(expected.get('sha256'))[:16]}... was written): its bytes changed after it "
                             f"was written, e.g. on a failing disk or in a copy; {RESTART}")
    try:
        return LoopState(**json.loads((path / "state.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise StropError(f"{damaged}: state.json cannot be read ({error}); {RESTART}") from None


def has_checkpoint(path: Path) -> bool:
    return (recover_dir(path) / "state.json").is_file()


def load_checkpoint(path: Path, model, optimizer, scheduler, fixed: frozenset[str] = frozenset(),
                    average: WeightAverage | None = None, process: int = 0,
                    processes: int = 1) -> tuple[LoopState, dict[str, torch.Tensor]]:
    """Restores model, optimizer, scheduler, RNG and the weights' average (where given) in place; returns the
    loop state and the best weights (both may leave out the parameters in `fixed`, which the run never trains:
    see save_checkpoint). process, processes: this process's place among the run's; each of a run of several
    takes back its own generators where the checkpoint has as many (else the main process's, as a checkpoint
    written before strop kept them all, or by another number of processes).

    A damaged checkpoint is refused: there is no older one to fall back on, because `publish_dir` deletes the
    previous checkpoint as soon as the new one is in place (its `.old` copy only exists while the two
    renames run, and `recover_dir` already uses it where the new one never arrived).

    Raises:
        StropError: a file fails its checksum or cannot be read, holds objects other than tensors and plain
            values, or does not fit this run's model or optimizer.
    """
    path = recover_dir(path)
    state = verify_checkpoint(path)
    weights = _read(path / "model.safetensors", load_file)
    # weights_only: never unpickle arbitrary objects, which could run code on load.
    training = _read(path / "training_state.pt", lambda file: torch.load(file, weights_only=True))
    best_file = path / "best.safetensors"
    best = _read(best_file, load_file) if best_file.is_file() else weights
    try:
        load_weights(model, weights, fixed)
    except RuntimeError as error:
        raise StropError(f"the checkpoint in {path} does not fit this run's model ({str(error)[:300]}): "
                         f"{RESTART}") from None
    try:
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        own = training["rng"].get("processes") or []
        rng = own[process] if len(own) == processes else training["rng"]
        torch.set_rng_state(rng["torch"])
    except ValueError as error:  # its parameter groups differ, e.g. laid out by an earlier version of strop
        raise StropError(f"the checkpoint in {path} does not fit this run's optimizer ({error}): {RESTART}") from None
    except (KeyError, TypeError, RuntimeError) as error:
        raise StropError(f"the checkpoint in {path} is damaged: training_state.pt lacks what strop writes there "
                         f"({type(error).__name__}: {error}); {RESTART}") from None
    if "cuda" in rng and torch.cuda.is_available():
        if rng is training["rng"]:
            torch.cuda.set_rng_state_all(rng["cuda"])  # the main process's generators of every device
        else:
            torch.cuda.set_rng_state(rng["cuda"])  # this process's device
    if average is not None:
        if not (path / AVERAGE).is_file():
            raise StropError(f"the checkpoint in {path} has no averaged weights ({AVERAGE}) though train.ema_decay "
                             f"is set: the run started without it; resume it with the config it started with, or "
                             "start again in a new output_dir")
        try:
            average.restore(_read(path / AVERAGE, load_file), model)
        except RuntimeError as error:
            raise StropError(f"the checkpoint in {path} does not fit this run's model ({str(error)[:300]}): "
                             f"{RESTART}") from None
    return state, best


def _read(file: Path, load):
    """load(file), with a file strop cannot read (or will not: a pickle of arbitrary objects) refused."""
    try:
        return load(file)
    except pickle.UnpicklingError as error:  # torch's weights-only unpickler met something else
        detail = str(error).partition("WeightsUnpickler error:")[2].partition("Check the documentation")[0]
        detail = " ".join(detail.split()).split(". ")[0][:200] or str(error).splitlines()[0][:200]  # what, not advice
        raise StropError(f"the checkpoint in {file.parent} is refused: {file.name} holds something other than "
                         f"tensors and plain values ({detail}), and strop does not unpickle anything else, as that "
                         f"can run code; the file is damaged or not strop's; {RESTART}") from None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as error:
        raise StropError(f"the checkpoint in {file.parent} is damaged: {file.name} cannot be read "
                         f"({type(error).__name__}: {str(error)[:200]}); {RESTART}") from None
