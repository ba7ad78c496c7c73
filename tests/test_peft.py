"""Parameter-efficient methods (peft): what trains, the adapter folder (peft's layout + strop's head), reload,
plain peft, merged export, resume, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import strop
from strop.cli import main
from strop.errors import StropError
from strop.methods import METHODS
from strop.methods.peft import PEFT_METHODS

from conftest import interrupt_after_checkpoint

TEXTS = ["great fun film , love it", "awful boring plot , worst film", "the story was fine", "it was dull and sad"]


def _overrides(tiny_model_dir, text_data, output, *extra: str) -> list[str]:
    return [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}", f"data.validation={text_data['dev']}",
            f"output_dir={output}", "train.epochs=2", "optim.lr=5e-3", "train.quiet=true", "train.patience=0",
            "model.max_length=32", "train.batch_size=16", "train.mixed_precision=no", *extra]


@pytest.fixture(scope="module", params=PEFT_METHODS)
def adapter_run(request, tiny_model_dir, text_data, tmp_path_factory):
    """One trained run per peft method (2 epochs on the tiny BERT)."""
    method = request.param
    output = tmp_path_factory.mktemp(f"peft-{method}") / "run"
    return method, strop.fit(None, _overrides(tiny_model_dir, text_data, output, f"method.name={method}",
                                              "method.virtual_tokens=4"))


def _tiny_model(tiny_model_dir):
    from strop.backbones.text import TextBackbone
    from strop.model import with_new_head
    from strop.tasks.classification import Classification

    body, _ = TextBackbone.from_pretrained(str(tiny_model_dir), "auto", 32)
    return with_new_head(body, Classification(("negative", "positive")))


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_only_the_adapter_and_the_head_train(method, tiny_model_dir):
    from strop.config import MethodConfig

    model = _tiny_model(tiny_model_dir)
    base = {n for n, _ in model.body.named_parameters()}
    method_obj = METHODS.get(method)(MethodConfig(name=method, virtual_tokens=4))
    method_obj.prepare(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert head <= trainable  # the pooler (pooler pooling) and the output layer
    adapter = trainable - head
    assert adapter and all("default" in n.split(".") for n in adapter)
    # every pretrained weight of the body is frozen (peft renames wrapped layers' weights to base_layer.*)
    frozen = {n for n, p in model.body.named_parameters() if not p.requires_grad}
    assert len(frozen) == len(base)
    method_obj.prepare(model)  # prepare twice (lr-find, then the run): the same model, wrapped once
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    trained, total = sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())
    assert trained < 0.2 * total


def test_the_adapter_folder_is_small_and_in_peft_layout(adapter_run):
    method, run = adapter_run
    folder = run / "model"
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "strop.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names  # the base's weights stay with the base
    info = json.loads((folder / "strop.json").read_text())
    assert info["method"] == method and info["adapter"]["peft_type"] == json.loads(
        (folder / "adapter_config.json").read_text())["peft_type"]
    assert (folder / "adapter_model.safetensors").stat().st_size < 0.2 * sum(
        p.stat().st_size for p in (run / "checkpoints" / "last").glob("model.safetensors"))


def test_the_head_and_adapter_survive_save_and_reload(adapter_run, tiny_model_dir, text_data):
    """The reloaded model scores the validation data exactly as the run's own final validation did: a head or
    adapter left at its initial values would not."""
    method, run = adapter_run
    predictor = strop.load(run, device="cpu")
    summary = json.loads((run / "summary.json").read_text())
    from strop.evaluate.scoring import evaluate_file

    scores = evaluate_file(predictor, text_data["dev"])
    assert scores["loss"] == pytest.approx(summary["validation"]["loss"], abs=1e-5)
    assert scores["accuracy"] == pytest.approx(summary["validation"]["accuracy"])
    # The head trained: it differs from a fresh head of the same seed, and the reload holds the trained one.
    head = load_file(run / "model" / "head.safetensors")
    fresh = _tiny_model(tiny_model_dir).head.state_dict()
    assert any(not torch.equal(head[k], fresh[k]) for k in head)
    for key, value in predictor.model.head.state_dict().items():
        assert torch.equal(value, head[key])


def test_plain_peft_loads_the_adapter(adapter_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModel

    method, run = adapter_run
    plain = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), run / "model").eval()
    predictor = strop.load(run, device="cpu")
    batch = predictor.model.body.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        ours = predictor.model.body.model(input_ids=batch["input_ids"],
                                          attention_mask=batch["attention_mask"]).last_hidden_state
        bare = AutoModel.from_pretrained(tiny_model_dir).eval()(input_ids=batch["input_ids"],
                                                                  attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.allclose(theirs, ours, atol=1e-6)
    assert not torch.allclose(theirs[:, -bare.shape[1]:], bare, atol=1e-4)  # the adapter changes the encoder


def test_predict_command_on_an_adapter_run(adapter_run, capsys):
    method, run = adapter_run
    assert main(["predict", str(run), "--text", TEXTS[0], "--text", TEXTS[1]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all(line["label"] in ("negative", "positive") for line in lines)


def test_merged_export_predicts_as_the_adapter(adapter_run, tmp_path, capsys):
    method, run = adapter_run
    output = tmp_path / "merged"
    code = main(["export", str(run), "--format", "merged", "--output", str(output)])
    if method in ("prompt_tuning", "prefix_tuning"):
        assert code == 2 and "cannot be merged" in capsys.readouterr().err
        assert not output.exists()
        return
    assert code == 0
    assert (output / "model.safetensors").is_file() and not (output / "adapter_config.json").exists()
    if method == "lora":  # LoRA's B starts at zero: it must have trained for the merge to change anything
        adapter = load_file(run / "model" / "adapter_model.safetensors")
        assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())
    adapted, merged = strop.load(run, device="cpu"), strop.load(output, device="cpu")
    np.testing.assert_allclose(adapted.predict_proba(TEXTS), merged.predict_proba(TEXTS), atol=1e-5)
    assert adapted.predict(TEXTS) == merged.predict(TEXTS)


def test_an_interrupted_lora_run_resumes_to_the_same_adapter(tiny_model_dir, text_data, tmp_path, monkeypatch):
    common = [o for o in _overrides(tiny_model_dir, text_data, tmp_path / "x", "method.name=lora")
              if not o.startswith("output_dir")]
    straight = strop.fit(None, common + [f"output_dir={tmp_path / 'straight'}"])
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, common + [f"output_dir={tmp_path / 'resumed'}"]))
    resumed = strop.fit(None, common + [f"output_dir={tmp_path / 'resumed'}", "train.resume=true"])
    for name in ("adapter_model.safetensors", "head.safetensors"):
        a, b = load_file(straight / "model" / name), load_file(resumed / "model" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), (name, key)


def test_lora_settings_reach_peft(tiny_model_dir, text_data, tmp_path):
    run = strop.fit(None, _overrides(tiny_model_dir, text_data, tmp_path / "run", "method.name=lora", "train.epochs=1",
                                     "method.rank=2", "method.alpha=4", "method.target_modules=[query,key,value]"))
    config = json.loads((run / "model" / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4 and set(config["target_modules"]) == {"query", "key", "value"}
    shapes = {k: v.shape for k, v in load_file(run / "model" / "adapter_model.safetensors").items()}
    assert any(".key.lora_A" in k for k in shapes) and all(min(s) == 2 for s in shapes.values())


@pytest.mark.parametrize("override, message", [
    ("method.rank=0", "method.rank must be >= 1"),
    ("method.dropout=1.5", "method.dropout must be in [0, 1)"),
    ("method.virtual_tokens=0", "method.virtual_tokens must be >= 1"),
    ("method.name=loraa", "did you mean 'lora'"),
])
def test_bad_settings_are_refused_before_anything_is_written(override, message, tiny_model_dir, text_data, tmp_path):
    with pytest.raises(StropError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        strop.fit(None, _overrides(tiny_model_dir, text_data, tmp_path / "run", "method.name=lora", override))
    assert not (tmp_path / "run").exists()


def test_prompt_tuning_leaves_the_models_positions_room_for_its_virtual_tokens(tiny_model_dir, text_data, tmp_path,
                                                                               capsys):
    """The tiny BERT reads 128 positions: 128 tokens of text and 20 virtual ones indexed past them at predict time."""
    run = strop.fit(None, _overrides(tiny_model_dir, text_data, tmp_path / "run", "method.name=prompt_tuning",
                                     "method.virtual_tokens=20", "model.max_length=128", "train.epochs=1",
                                     "train.quiet=false"))
    said = capsys.readouterr()
    assert "model.max_length 128 -> 108: the model reads 128 positions" in said.out + said.err
    assert json.loads((run / "model" / "strop.json").read_text())["max_length"] == 108
    (label,) = strop.load(run).predict([" ".join(["good film"] * 100)])  # far beyond 128 tokens
    assert label in ("negative", "positive")
    with pytest.raises(StropError, match="method.virtual_tokens=127: the model reads at most 128 tokens"):
        strop.fit(None, _overrides(tiny_model_dir, text_data, tmp_path / "full", "method.name=prompt_tuning",
                                   "method.virtual_tokens=127"))
    assert not (tmp_path / "full").exists()


def test_settings_the_chosen_method_does_not_read_are_said(tiny_model_dir, text_data, tmp_path, capsys):
    from strop.config import MethodConfig
    from strop.methods.base import unread_settings

    from strop.config import OptimConfig
    from strop.train.optim import unread_optim_settings

    strop.fit(None, _overrides(tiny_model_dir, text_data, tmp_path / "run", "method.name=full", "method.rank=16",
                               "method.target_modules=[query]", "train.epochs=1", "train.quiet=false",
                               "optim.momentum=0.5", "optim.power=3", "task.loss=huber"))
    said = capsys.readouterr()
    assert ("not read by method.name=full, so unused: method.rank=16 (read by houlsby, lora, pfeiffer); "
            "method.target_modules=[query]") in said.out + said.err
    # and the optimizer's and the task's: a momentum with AdamW, a polynomial power with a linear decay
    assert ("not read with optim.name=adamw and optim.schedule=linear, so unused: optim.momentum=0.5 (read with "
            "optim.name=sgd or rmsprop); optim.power=3.0 (read with optim.schedule=polynomial)") in said.out + said.err
    assert "task.loss=huber is not used: it is the loss of regression" in said.out + said.err
    assert unread_optim_settings(OptimConfig(name="sgd", momentum=0.5, nesterov=True)) is None
    assert unread_optim_settings(OptimConfig(schedule="step", step_gamma=0.5, step_epochs=1)) is None
    assert unread_settings(MethodConfig(name="lora", rank=16, alpha=8.0, target_modules=("query",))) is None
    # what a run's config.yaml records for every method is not said again on its resume
    assert unread_settings(MethodConfig(name="freeze", freeze_layers=0, cache_bottom=True)) is None
    assert "method.freeze_layers=2 (read by every method but freeze, linear_probe)" in unread_settings(
        MethodConfig(name="freeze", freeze_layers=2))


def test_a_missing_target_module_is_named(tiny_model_dir, text_data, tmp_path):
    with pytest.raises(StropError, match="method.target_modules=") as error:
        strop.fit(None, _overrides(tiny_model_dir, text_data, tmp_path / "run", "method.name=lora",
                                   "method.target_modules=[nonexistent]"))
    assert "query" in str(error.value)  # the model's linear layers are listed
    assert not (tmp_path / "run").exists()


def test_a_new_run_from_an_adapter_run_is_refused_with_the_fix(adapter_run, text_data, tmp_path):
    method, run = adapter_run
    if method != "lora":
        pytest.skip("one method suffices")
    with pytest.raises(StropError, match="--format merged"):
        strop.fit(None, [f"model.name={run}", f"data.train={text_data['train']}", f"output_dir={tmp_path / 'b'}"])


def test_a_missing_base_model_is_named(adapter_run, tmp_path):
    method, run = adapter_run
    if method != "lora":
        pytest.skip("one method suffices")
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(run / "model", copy)
    info = json.loads((copy / "strop.json").read_text())
    info["adapter"]["base"] = info["base_model"] = str(tmp_path / "gone")
    (copy / "strop.json").write_text(json.dumps(info))
    with pytest.raises(StropError, match="not found"):
        strop.load(copy)


@pytest.mark.slow  # the range test's 100 steps
def test_lr_find_then_lora_run(tiny_model_dir, text_data, tmp_path):
    """optim.lr=find: the range test runs on the adapted model and leaves it as it found it; the run then
    trains the same adapter from its initial values (LoRA's B at zero)."""
    run = strop.fit(None, _overrides(tiny_model_dir, text_data, tmp_path / "run", "method.name=lora",
                                     "train.epochs=1", "optim.lr=find"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["peak_lr"] > 0 and (run / "lr_find.json").is_file()
    assert (run / "model" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_freeze_layers_freezes_the_adapter_below(method, tiny_model_dir):
    from strop.config import MethodConfig

    model = _tiny_model(tiny_model_dir)
    METHODS.get(method)(MethodConfig(name=method, virtual_tokens=4, freeze_layers=2)).prepare(model)
    bottom = {id(p) for layer in model.body.layers()[:2] for p in layer.parameters()}
    assert not any(p.requires_grad for p in model.parameters() if id(p) in bottom)
    assert any(p.requires_grad for n, p in model.body.named_parameters() if id(p) not in bottom)
    if method == "prompt_tuning":  # its tokens enter below every layer: no layer's output may be cached
        assert METHODS.get(method)(MethodConfig(name=method, freeze_layers=2)).frozen_split(model) is None
