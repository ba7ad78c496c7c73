"""strop prune: magnitude pruning, and a recovery fine-tune that keeps the pruned weights at zero."""

from __future__ import annotations

import json

import pytest
import torch

import strop
from strop.cli import main
from strop.errors import StropError
from strop.prune import magnitude_prune, measured_sparsity, prunable, prune


@pytest.fixture(scope="module")
def run(tiny_model_dir, text_data, tmp_path_factory):
    return strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
                            f"data.validation={text_data['dev']}", f"output_dir={tmp_path_factory.mktemp('p') / 'run'}",
                            "train.epochs=1", "optim.lr=1e-3", "train.quiet=true", "model.max_length=32",
                            "train.batch_size=16", "train.mixed_precision=no"])


def test_magnitude_pruning_zeros_the_smallest_weights_of_each_layer(run):
    model = strop.load(run, device="cpu").model
    before = [layer.weight.detach().clone() for layer in prunable(model)]
    assert measured_sparsity(model) == 0
    assert magnitude_prune(model, 0.5) == pytest.approx(0.5, abs=0.01)
    for old, layer in zip(before, prunable(model)):
        kept = layer.weight != 0
        assert old[kept].abs().min() >= old[~kept].abs().max()  # the survivors are the largest
    assert not any("weight_orig" in name for name, _ in model.named_parameters())  # plain weights again


def test_prune_recovers_with_the_zeros_kept(run, tmp_path, capsys):
    output = tmp_path / "pruned"
    assert main(["prune", str(run), f"output_dir={output}", "--sparsity", "0.6"]) == 0
    report = json.loads((output / "prune.json").read_text())
    assert report["sparsity"] == pytest.approx(0.6, abs=0.01)  # the recovery fine-tune kept every zero
    assert {"original", "pruned", "recovered"} <= set(report)
    assert "sparsity 60" in capsys.readouterr().out
    summary = json.loads((output / "summary.json").read_text())
    assert report["recovered"] == pytest.approx(summary["validation"]["accuracy"])
    # the weights did train: some kept weights differ from the pruned start
    model = strop.load(output, device="cpu").model
    original = strop.load(run, device="cpu").model
    magnitude_prune(original, 0.6)
    assert any(not torch.equal(a.weight, b.weight) for a, b in zip(prunable(model), prunable(original)))


def test_prune_refuses_a_sparsity_outside_0_1(run, tmp_path):
    with pytest.raises(StropError, match="--sparsity"):
        prune(run, 1.0, [f"output_dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()
