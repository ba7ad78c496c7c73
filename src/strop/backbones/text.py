"""Text backbones from Hugging Face transformers: any encoder by hub id, local folder or bundled alias."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from strop.backbones.bundled import BUNDLED
from strop.errors import StropError


def resolve_model_source(name: str) -> str:
    """Turns model.name into something `from_pretrained` accepts: a local folder or a hub id.

    A bundled alias becomes the folder its package installed; an existing path stays a path; anything
    else is taken as a hub id, which must be in the local cache or downloadable now.

    Raises:
        StropError: the name is neither a folder, an alias, a cached model nor reachable on the hub.
    """
    if name in BUNDLED:
        return str(BUNDLED.get(name)())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise StropError(f"model.name: {path} has no config.json; point it at a Hugging Face model folder "
                             "(config.json, weights, tokenizer files)")
        return str(path)
    if _in_hub_cache(name) or _hub_reachable():
        return name
    raise StropError(
        f"model.name: '{name}' is not a local folder or a bundled alias, and the model hub cannot be reached "
        f"(offline?). Use a local copy: model.name=/path/to/model (a folder with config.json, weights and "
        f"tokenizer files, e.g. saved with save_pretrained), or a bundled model: {', '.join(BUNDLED.names())}")


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id the hub would reject is simply not cached
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check, so that an offline machine fails in seconds rather than after the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise StropError(f"model.name: could not load a tokenizer from '{source}': {error}") from None


def load_sequence_classifier(source: str, labels: list[str], num_logits: int):
    """A pretrained encoder with a freshly initialised sequence-classification head.

    Args:
        source: local folder or hub id (see resolve_model_source).
        labels: the class names, in label-map order; stored in the model config as id2label.
        num_logits: outputs of the head (len(labels) for softmax, 1 for a single sigmoid logit).
    """
    from transformers import AutoModelForSequenceClassification

    id2label = {i: label for i, label in enumerate(labels)} if num_logits == len(labels) else {0: labels[1]}
    try:
        with quiet_transformers():  # its "newly initialised head" report is expected: we add that head
            return AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_logits, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    except (OSError, ValueError, KeyError) as error:
        raise StropError(f"model.name: could not load '{source}' as a sequence classifier: {error}") from None


@contextmanager
def quiet_transformers():
    """Silences transformers' load reports and its per-file progress bars; strop reports progress itself."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
