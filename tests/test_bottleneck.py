"""Bottleneck adapters (houlsby, pfeiffer): where they go, what trains, the identity at the start, save and reload."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import strop
from strop.config import MethodConfig
from strop.errors import StropError
from strop.methods import METHODS
from strop.methods.bottleneck import Adapted

TEXTS = ["great fun film , love it", "awful boring plot , worst film"]


def _tiny_model(tiny_model_dir):
    from strop.backbones.text import TextBackbone
    from strop.model import with_new_head
    from strop.tasks.classification import Classification

    body, _ = TextBackbone.from_pretrained(str(tiny_model_dir), "auto", 32)
    return with_new_head(body, Classification(("negative", "positive")))


@pytest.mark.parametrize("method, places", [("houlsby", {"attention.output.dense", "output.dense"}),
                                            ("pfeiffer", {"output.dense"})])
def test_adapters_go_where_the_paper_puts_them_and_start_as_the_identity(method, places, tiny_model_dir):
    model = _tiny_model(tiny_model_dir).eval()
    batch = dict(model.body.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    with torch.no_grad():
        before = model(**batch)
    METHODS.get(method)(MethodConfig(name=method, rank=4)).prepare(model)
    adapted = {n.split(".layer.")[1].split(".", 1)[1] for n, m in model.body.model.named_modules()
               if isinstance(m, Adapted)}
    assert adapted == places
    assert sum(isinstance(m, Adapted) for m in model.modules()) == 2 * len(places)  # 2 blocks
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.startswith("head.") or ".adapter." in n}
    assert any(".adapter.down" in n for n in trainable) and "head.output.weight" in trainable
    with torch.no_grad():
        assert torch.allclose(model(**batch), before, atol=1e-6)  # up starts at zero
    METHODS.get(method)(MethodConfig(name=method, rank=4)).prepare(model)  # a second prepare adds nothing
    assert sum(isinstance(m, Adapted) for m in model.modules()) == 2 * len(places)


def test_a_bottleneck_run_saves_and_reloads_its_adapters(tiny_model_dir, text_data, tmp_path):
    run = strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
                           f"data.validation={text_data['dev']}", f"output_dir={tmp_path / 'run'}", "train.epochs=2",
                           "optim.lr=5e-3", "train.quiet=true", "train.patience=0", "model.max_length=32",
                           "train.batch_size=16", "train.mixed_precision=no", "method.name=pfeiffer",
                           "method.rank=6"])
    weights = load_file(run / "model" / "model.safetensors")
    ups = [v for k, v in weights.items() if k.endswith(".adapter.up.weight")]
    assert len(ups) == 2 and all(v.shape == (32, 6) for v in ups) and any(v.abs().max() > 0 for v in ups)
    from strop.evaluate.scoring import evaluate_file

    predictor = strop.load(run, device="cpu")
    summary = json.loads((run / "summary.json").read_text())
    assert evaluate_file(predictor, text_data["dev"])["loss"] == pytest.approx(summary["validation"]["loss"], abs=1e-5)
    trained = sum(p.numel() for n, p in predictor.model.named_parameters() if ".adapter." in n or n.startswith("head."))
    assert summary["parameters"] == {"trainable": trained, "total": sum(p.numel() for p in predictor.model.parameters())}
    with pytest.raises(StropError, match="start from its base model"):
        strop.fit(None, [f"model.name={run}", f"data.train={text_data['train']}", f"output_dir={tmp_path / 'b'}"])


def test_an_unknown_place_names_the_linear_layers(tiny_model_dir):
    model = _tiny_model(tiny_model_dir)
    with pytest.raises(StropError, match="intermediate.dense"):
        METHODS.get("houlsby")(MethodConfig(name="houlsby", target_modules=("nowhere",))).prepare(model)
