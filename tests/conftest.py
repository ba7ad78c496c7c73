"""Shared fixtures: a tiny random BERT (built from a config, never downloaded) and small data sets."""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

# Under pytest-xdist (`-n auto`), each worker gets its share of the cores for torch's threads, set before torch is
# imported and inherited by the commands the tests start: workers that each used every core would fight for them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))
# The bf16 probe's measurements (train.mixed_precision=auto) go to a folder of this test process, not to
# ~/.cache/strop: one taken while the workers load the CPU must not decide for the user's own runs later.
_PROBE_CACHE = None
if "STROP_CACHE" not in os.environ:
    _PROBE_CACHE = os.environ["STROP_CACHE"] = tempfile.mkdtemp(prefix="strop-test-cache-")


def pytest_unconfigure(config):
    if _PROBE_CACHE is not None:
        shutil.rmtree(_PROBE_CACHE, ignore_errors=True)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

POSITIVE = ["good", "great", "fine", "happy", "love", "best", "nice", "excellent", "fun", "wonderful"]
NEGATIVE = ["bad", "awful", "poor", "sad", "hate", "worst", "boring", "terrible", "dull", "ugly"]
NEUTRAL = ["the", "film", "was", "a", "movie", "this", "very", "story", "it", "and", "plot", "really"]


def make_texts(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentences whose label follows from their words, so even a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(NEUTRAL, rng.randint(2, 8)) + rng.sample(POSITIVE if label == "positive" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple], header=("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_labels(folder: Path, name: str, labels: list[str]) -> Path:
    """folder/name: a text,label CSV of one made-up text a label (the benchmark's data folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_csv(folder / name, [(f"text {i}", label) for i, label in enumerate(labels)])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT with hidden size 32 and random weights, with the bundled model's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from strop.backbones.bundled import BUNDLED

    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(BUNDLED.get("minilm-l6")()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def text_data(tmp_path_factory) -> dict[str, Path]:
    path = tmp_path_factory.mktemp("text-data")
    return {"train": write_csv(path / "train.csv", make_texts(160, seed=1)),
            "dev": write_csv(path / "dev.csv", make_texts(60, seed=2))}


@pytest.fixture
def tiny_overrides(tiny_model_dir, text_data, tmp_path) -> list[str]:
    """Overrides for a fast run of `strop fit` on the tiny model (a few seconds on a laptop CPU)."""
    return [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
            f"data.validation={text_data['dev']}", f"output_dir={tmp_path / 'run'}", "train.epochs=3",
            "optim.lr=1e-3", "train.quiet=true", "train.patience=0", "model.max_length=32",
            "train.batch_size=8", "train.mixed_precision=no",  # fp32: the same numbers on every CPU
            "method.freeze_layers=0"]  # random weights: nothing pretrained to keep frozen (auto would freeze half)


def interrupt_after_checkpoint(monkeypatch, start_run, checkpoints: int = 1) -> None:
    """Calls `start_run()` (a fit) and stops it right after its Nth epoch checkpoint, as Ctrl-C would there;
    the checkpoint writer is put back afterwards, for the resumed run."""
    import strop.train.loop as loop

    save, calls = loop.save_checkpoint, []

    def save_then_interrupt(*args, **kwargs):
        save(*args, **kwargs)
        calls.append(1)
        if len(calls) == checkpoints:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        start_run()
    monkeypatch.setattr(loop, "save_checkpoint", save)
