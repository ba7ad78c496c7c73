"""Importing a foreign checkpoint: weights saved by another program, in another naming scheme, onto a model.

The tensors are matched by name where every name of the model is found in the checkpoint (after a common
prefix such as `module.` or `model.` is removed); otherwise by order and shape, the i-th tensor of the
checkpoint onto the i-th tensor of the model (buffers such as BatchNorm's `num_batches_tracked`, which many
exporters leave out, are not counted). Any mismatch is refused with a message naming the first tensor that
differs: a model that loaded half its weights would train, silently, from the wrong start.

Checkpoints are read from safetensors, or from PyTorch files with torch.load(weights_only=True), which
loads tensors and plain containers only (a pickle that would run code is refused).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from strop.errors import StropError

# Buffers that carry no learned value and that exporters often leave out.
SKIPPED_BUFFERS = ("num_batches_tracked",)
WRAPPER_PREFIXES = ("module.", "model.", "state_dict.", "backbone.", "encoder.")


def read_state_dict(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """The tensors of a checkpoint file, in the order they were saved.

    A PyTorch file may hold the state dict itself or wrap it ({"state_dict": ...}, {"model": ...}).

    Raises:
        StropError: the file is missing, is no checkpoint, or holds something besides tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise StropError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return OrderedDict((k, f.get_tensor(k)) for k in f.keys())
        except (OSError, SafetensorError) as error:
            raise StropError(f"checkpoint {path} cannot be read as safetensors: {error}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for a file it cannot load
        raise StropError(f"checkpoint {path} cannot be read as a PyTorch state dict with weights_only=True "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                         "convert it to safetensors where you trust it") from None
    for key in ("state_dict", "model", "model_state_dict", "ema", "state"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise StropError(f"checkpoint {path} holds no state dict (a mapping of names to tensors)")
    return OrderedDict(loaded)


def _learned(state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k, v) for k, v in state.items() if k.rsplit(".", 1)[-1] not in SKIPPED_BUFFERS)


def _strip_prefix(names: list[str]) -> str:
    """A wrapper prefix every name shares (`module.` from DataParallel, ...), or ''."""
    for prefix in WRAPPER_PREFIXES:
        if names and all(n.startswith(prefix) for n in names):
            return prefix
    return ""


def map_state_dict(model: nn.Module, foreign: dict[str, torch.Tensor], source: str = "the checkpoint"
                   ) -> tuple[dict[str, torch.Tensor], str]:
    """The foreign tensors renamed to the model's names, and how they were matched ("name" or "order").

    Raises:
        StropError: the tensors do not match one to one (count, or the shape of one tensor); the message
            names the first that differs, by both names.
    """
    ours = _learned(model.state_dict())
    theirs = _learned(foreign)
    prefix = _strip_prefix(list(theirs))
    theirs = OrderedDict((k[len(prefix):], v) for k, v in theirs.items())
    if set(ours) <= set(theirs):
        for name, tensor in ours.items():
            if tuple(theirs[name].shape) != tuple(tensor.shape):
                raise StropError(f"{source}: tensor '{name}' has shape {tuple(theirs[name].shape)}, the model's has "
                                 f"{tuple(tensor.shape)}: the checkpoint is of another architecture or size")
        extra = [n for n in theirs if n not in ours]
        if extra:
            raise StropError(f"{source}: tensor '{extra[0]}' ({len(extra)} in all) has no place in the model: "
                             "the checkpoint is of another architecture")
        return {name: theirs[name] for name in ours}, "name"
    for i, ((name, tensor), (foreign_name, value)) in enumerate(zip(ours.items(), theirs.items())):
        if tuple(value.shape) != tuple(tensor.shape):
            raise StropError(f"{source}: matched by order (the names differ), tensor {i} '{foreign_name}' has shape "
                             f"{tuple(value.shape)} where the model's tensor {i} '{name}' has {tuple(tensor.shape)}: "
                             "the checkpoint is of another architecture, or its tensors are in another order")
    if len(ours) != len(theirs):
        longer, which = (list(ours), "the model") if len(ours) > len(theirs) else (list(theirs), "the checkpoint")
        first = longer[min(len(ours), len(theirs))]
        raise StropError(f"{source}: matched by order (the names differ), the model has {len(ours)} tensors and the "
                         f"checkpoint {len(theirs)}; the first without a partner is '{first}' of {which}")
    return {name: value for name, value in zip(ours, theirs.values())}, "order"


def import_checkpoint(model: nn.Module, path: str | Path) -> str:
    """Loads a foreign checkpoint file into `model` (see the module docstring); returns "name" or "order".

    Raises:
        StropError: the file cannot be read, or its tensors do not fit the model one to one.
    """
    mapped, how = map_state_dict(model, read_state_dict(path), f"checkpoint {path}")
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    mapped = {k: v.to(dtypes[k]) for k, v in mapped.items()}
    # Skipped buffers (num_batches_tracked) keep the model's own values: strict=False for those alone.
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected and all(k.rsplit(".", 1)[-1] in SKIPPED_BUFFERS for k in missing), (missing, unexpected)
    return how
