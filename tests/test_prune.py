"""strop prune: magnitude pruning, and a recovery fine-tune that keeps the pruned weights at zero."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

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
    # the pruned model the recovery started from stays with the run, and its config.yaml names it
    start = output / "pruned_start"
    assert yaml.safe_load((output / "config.yaml").read_text())["model"]["name"] == str(start)
    assert measured_sparsity(strop.load(start, device="cpu").model) == pytest.approx(0.6, abs=0.01)
    # the weights did train: some kept weights differ from the pruned start
    model = strop.load(output, device="cpu").model
    original = strop.load(run, device="cpu").model
    magnitude_prune(original, 0.6)
    assert any(not torch.equal(a.weight, b.weight) for a, b in zip(prunable(model), prunable(original)))


def test_prune_refuses_a_sparsity_outside_0_1(run, tmp_path):
    with pytest.raises(StropError, match="--sparsity"):
        prune(run, 1.0, [f"output_dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()
    # the recovery's method follows the structure: a method.name given was replaced without a word
    with pytest.raises(StropError, match="method.name=auto: the recovery training after pruning trains with"):
        prune(run, 0.5, [f"output_dir={tmp_path / 'x'}", "method.name=auto"])
    assert not (tmp_path / "x").exists()


def test_channel_pruning_removes_the_lowest_scored_channels_and_nothing_else(run):
    from strop.prune import channel_prune, feed_forward_pairs

    original = strop.load(run, device="cpu").model.eval()
    pruned = strop.load(run, device="cpu").model.eval()
    width = feed_forward_pairs(original)[0][0].out_features
    removed = channel_prune(pruned, 0.25)
    assert removed["channels"] == width and removed["channels_kept"] == round(width * 0.75)
    assert removed["parameters_kept"] < removed["parameters"]
    assert pruned.body.model.config.intermediate_size == removed["channels_kept"]
    # The same model with the lowest-scored channels silenced (their weights and bias zero) computes the same
    for inner, outer in feed_forward_pairs(original):
        score = inner.weight.norm(dim=1) * outer.weight.norm(dim=0)
        dropped = torch.argsort(score)[: width - removed["channels_kept"]]
        with torch.no_grad():
            inner.weight[dropped] = 0
            inner.bias[dropped] = 0
            outer.weight[:, dropped] = 0
    batch = {"input_ids": torch.tensor([[2, 5, 9, 11, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():  # GELU(0) = 0: a silenced channel adds nothing
        assert torch.allclose(pruned(**batch), original(**batch), atol=1e-5)


def test_prune_channels_gives_a_smaller_plain_transformers_model(run, tmp_path, capsys):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    output = tmp_path / "channels"
    assert main(["prune", str(run), f"output_dir={output}", "--structure", "channels", "--sparsity", "0.5",
                 "train.epochs=1"]) == 0
    report = json.loads((output / "prune.json").read_text())
    assert report["structure"] == "channels" and report["channels_kept"] == report["channels"] // 2
    assert report["parameters_kept"] < report["parameters"]
    assert "feed-forward channels kept" in capsys.readouterr().out
    config = AutoConfig.from_pretrained(output / "model")
    assert config.intermediate_size == report["channels_kept"]
    plain = AutoModelForSequenceClassification.from_pretrained(output / "model").eval()  # no size mismatch
    loaded = strop.load(output, device="cpu")
    encoded = loaded.model.body.tokenizer(["a good film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = plain(**encoded).logits
        ours = loaded.model(**{k: v for k, v in encoded.items()})
    assert torch.allclose(theirs, ours, atol=1e-5)
    summary = json.loads((output / "summary.json").read_text())
    assert report["recovered"] == pytest.approx(summary["validation"]["accuracy"])
    # the pruned model the recovery started from stays with the run, and its config.yaml names it
    start = output / "pruned_start"
    assert yaml.safe_load((output / "config.yaml").read_text())["model"]["name"] == str(start)
    assert len(strop.load(start, device="cpu").predict(["a good film"])) == 1


def test_head_pruning_removes_the_lowest_scored_heads_and_nothing_else(run):
    from strop.prune import head_blocks, head_prune

    original = strop.load(run, device="cpu").model.eval()
    pruned = strop.load(run, device="cpu").model.eval()
    removed = head_prune(pruned, 0.5)
    heads = removed["heads"]
    assert removed["heads_kept"] == heads // 2 and removed["parameters_kept"] < removed["parameters"]
    assert all(a.num_attention_heads == heads // 2 for a, _ in head_blocks(pruned))
    # The same model with the lowest-scored heads silenced (value rows and bias zero: they pass nothing on)
    # computes the same
    for attention, output in head_blocks(original):
        size = attention.attention_head_size
        value = attention.value.weight.reshape(heads, size, -1).flatten(1).norm(dim=1)
        written = output.weight.reshape(-1, heads, size).transpose(0, 1).flatten(1).norm(dim=1)
        for head in torch.argsort(value * written)[: heads - removed["heads_kept"]].tolist():
            with torch.no_grad():
                attention.value.weight[head * size:(head + 1) * size] = 0
                attention.value.bias[head * size:(head + 1) * size] = 0
    batch = {"input_ids": torch.tensor([[2, 5, 9, 11, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        assert torch.allclose(pruned(**batch), original(**batch), atol=1e-5)


def test_prune_heads_gives_a_run_that_loads_exports_and_starts_a_new_run(run, tmp_path, capsys):
    output = tmp_path / "heads"
    assert main(["prune", str(run), f"output_dir={output}", "--structure", "heads", "--sparsity", "0.5",
                 "train.epochs=1"]) == 0
    report = json.loads((output / "prune.json").read_text())
    assert report["structure"] == "heads" and report["heads_kept"] == report["heads"] // 2
    assert "attention heads kept" in capsys.readouterr().out
    assert json.loads((output / "model" / "strop.json").read_text())["attention_heads"] == report["heads_kept"]
    loaded = strop.load(output, device="cpu")  # rebuilt with the heads kept before the weights load
    assert sum(p.numel() for p in loaded.model.parameters()) == report["parameters_kept"]
    summary = json.loads((output / "summary.json").read_text())
    assert report["recovered"] == pytest.approx(summary["validation"]["accuracy"])
    # the pruned model the recovery started from stays with the run, and its config.yaml names it
    start = output / "pruned_start"
    assert yaml.safe_load((output / "config.yaml").read_text())["model"]["name"] == str(start)
    assert len(strop.load(start, device="cpu").predict(["a good film"])) == 1
    # ONNX export of the smaller attention, equal to PyTorch
    onnx_file = tmp_path / "heads.onnx"
    assert main(["export", str(output), "--format", "onnx", "--output", str(onnx_file)]) == 0
    assert onnx_file.is_file()
    # a new run starting from the pruned model keeps its shape and says so in its own strop.json
    again = strop.fit(run / "config.yaml", [f"model.name={output / 'model'}", f"output_dir={tmp_path / 'again'}",
                                            "train.epochs=1", "train.resume=false"])
    assert json.loads((again / "model" / "strop.json").read_text())["attention_heads"] == report["heads_kept"]


@pytest.mark.parametrize("structure, what", [("channels", "feed-forward channels"), ("heads", "attention heads")])
def test_structured_pruning_refuses_a_body_without_transformer_blocks(tmp_path, structure, what):
    import numpy as np

    rows = np.random.default_rng(0).normal(size=(40, 3))
    data = tmp_path / "rows.csv"
    data.write_text("a,b,c,label\n" + "".join(f"{x:.3f},{y:.3f},{z:.3f},{int(x > 0)}\n" for x, y, z in rows))
    mlp = strop.fit(None, ["model.name=mlp", f"data.train={data}", f"output_dir={tmp_path / 'mlp'}",
                           "train.epochs=1", "train.quiet=true"])
    with pytest.raises(StropError, match=f"--structure {structure} removes {what} .* use --structure weights"):
        prune(mlp, 0.5, [f"output_dir={tmp_path / 'x'}"], structure=structure)
    assert not (tmp_path / "x").exists()


def test_prune_recovery_with_a_frozen_bottom_keeps_the_zeros(run, tmp_path):
    output = tmp_path / "pruned-frozen"
    assert main(["prune", str(run), f"output_dir={output}", "--sparsity", "0.5", "method.freeze_layers=2"]) == 0
    report = json.loads((output / "prune.json").read_text())
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
