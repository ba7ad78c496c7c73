"""data.workers: images decoded and augmented in worker processes train the same way every time, resume to the
uninterrupted run, and without augmentation train exactly as in the training process."""

import json
import os

import pytest

timm = pytest.importorskip("timm")
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from conftest import interrupt_after_checkpoint  # noqa: E402
from strop.config import load_config  # noqa: E402
from strop.errors import StropError  # noqa: E402
from strop.train.loop import image_workers  # noqa: E402
from test_image_classification import _fit, image_data, tiny_timm_dir  # noqa: E402,F401  (fixtures)


@pytest.fixture
def decoded_in(tmp_path, monkeypatch):
    """Which processes decoded images: each call of ImageBackbone.pixels appends its process id to a file (a forked
    worker's list would not come back)."""
    from strop.backbones.image import ImageBackbone

    log, pixels = tmp_path / "pids.txt", ImageBackbone.pixels

    def logged(self, path):
        with open(log, "a") as file:
            file.write(f"{os.getpid()}\n")
        return pixels(self, path)

    monkeypatch.setattr(ImageBackbone, "pixels", logged)

    def read_and_clear() -> set[int]:
        pids = {int(line) for line in log.read_text().split()} if log.exists() else set()
        log.unlink(missing_ok=True)
        return pids

    return read_and_clear


def _weights(run):
    return load_file(str(run / "model" / "model.safetensors"))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(run):
    return [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_workers_augment_reproducibly_and_resume(tiny_timm_dir, image_data, tmp_path, monkeypatch, decoded_in):
    common = ("data.workers=2", "data.augment=light", "train.epochs=3")
    first = _fit(tiny_timm_dir, image_data, tmp_path / "a", *common)
    assert len(decoded_in() - {os.getpid()}) >= 2  # the training and validation images: in worker processes
    again = _fit(tiny_timm_dir, image_data, tmp_path / "b", *common)
    assert _same(_weights(first), _weights(again)) and _history(first) == _history(again)
    # the workers' augmentations are drawn from the run's seed: another seed trains differently
    other = _fit(tiny_timm_dir, image_data, tmp_path / "c", *common, "train.seed=7")
    assert not _same(_weights(first), _weights(other))

    interrupt_after_checkpoint(monkeypatch, lambda: _fit(tiny_timm_dir, image_data, tmp_path / "r", *common))
    resumed = _fit(tiny_timm_dir, image_data, tmp_path / "r", *common, "train.resume=true")
    assert _same(_weights(first), _weights(resumed)) and _history(first) == _history(resumed)


def test_without_augmentation_workers_change_nothing(tiny_timm_dir, image_data, tmp_path, decoded_in):
    inline = _fit(tiny_timm_dir, image_data, tmp_path / "inline", "data.augment=none", "data.workers=0")
    assert decoded_in() == {os.getpid()}
    workers = _fit(tiny_timm_dir, image_data, tmp_path / "workers", "data.augment=none", "data.workers=2")
    assert len(decoded_in() - {os.getpid()}) >= 2
    assert _same(_weights(inline), _weights(workers)) and _history(inline) == _history(workers)


def test_auto_uses_workers_on_a_gpu_only_and_bad_values_are_refused():
    class Body:
        kind = "image"

    class Model:
        body = Body()

    auto = load_config({"task": {"name": "image_classification"}})
    assert image_workers(auto, Model(), torch.device("cpu")) == {}
    on_gpu = image_workers(auto, Model(), torch.device("cuda"))
    assert 1 <= on_gpu["num_workers"] <= 8 and on_gpu["pin_memory"] is True
    Body.kind = "text"
    assert image_workers(load_config({"data": {"workers": 4}}), Model(), torch.device("cuda")) == {}
    with pytest.raises(StropError, match="data.workers must be a whole number >= 0 or auto"):
        load_config({"data": {"workers": -1}})
