"""strop export --format onnx: named inputs, dynamic axes, logits first, equal to PyTorch under onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import strop
from strop.cli import main
from strop.export import export

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = ["great fun film , love it", "awful", "the story was fine but the plot , it was really very dull and sad",
         "a movie"]


def _fit(tiny_model_dir, text_data, output, *extra: str):
    return strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
                            f"data.validation={text_data['dev']}", f"output_dir={output}", "train.epochs=1",
                            "optim.lr=1e-3", "train.quiet=true", "model.max_length=32", "train.batch_size=16",
                            "train.mixed_precision=no", *extra])


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, text_data, tmp_path_factory):
    return _fit(tiny_model_dir, text_data, tmp_path_factory.mktemp("export") / "run")


def _onnx_logits(path, predictor, texts):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    encoded = predictor.model.body.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
    return session.run(None, {name: encoded[name] for name in names})[0], encoded


def _torch_logits(predictor, encoded):
    with torch.no_grad():
        return predictor.model(**{k: torch.tensor(v) for k, v in encoded.items()}).numpy()


def test_onnx_export_has_named_dynamic_inputs_and_logits_first(full_run, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    assert main(["export", str(full_run), "--format", "onnx", "--output", str(path)]) == 0
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predictor = strop.load(full_run, device="cpu")
    tokenizer_outputs = set(predictor.model.body.tokenizer(["x"]).keys())
    inputs = session.get_inputs()
    assert {i.name for i in inputs} == tokenizer_outputs  # input_ids, attention_mask, token_type_ids
    for i in inputs:
        assert i.shape[0] == "batch" and i.shape[1] == "sequence"  # symbolic, not fixed sizes
    assert session.get_outputs()[0].name == "logits"
    metadata = json.loads(onnx.load(str(path)).metadata_props[0].value)
    assert metadata["task"] == "text_classification" and metadata["labels"] == ["negative", "positive"]


@pytest.mark.parametrize("texts", [TEXTS[:1], TEXTS, TEXTS * 9])  # batch sizes 1, 4, 36; lengths 3 to 17
def test_onnx_equals_pytorch(full_run, tmp_path_factory, texts):
    path = tmp_path_factory.getbasetemp() / "equal.onnx"
    if not path.exists():
        export(full_run, "onnx", path)
    predictor = strop.load(full_run, device="cpu")
    ours, encoded = _onnx_logits(path, predictor, texts)
    expected = _torch_logits(predictor, encoded)
    assert ours.shape == expected.shape == (len(texts), 2)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_adapter_runs_export_to_onnx(method, tiny_model_dir, text_data, tmp_path):
    run = _fit(tiny_model_dir, text_data, tmp_path / "run", f"method.name={method}", "method.virtual_tokens=3")
    path = export(run, "onnx", tmp_path / "adapter.onnx")
    predictor = strop.load(run, device="cpu")  # the adapter unmerged: the reference
    ours, encoded = _onnx_logits(path, predictor, TEXTS)
    np.testing.assert_allclose(ours, _torch_logits(predictor, encoded), atol=1e-4)


def test_export_refuses_an_existing_output_and_a_wrong_name(full_run, tmp_path, capsys):
    existing = tmp_path / "taken.onnx"
    existing.write_text("keep me")
    assert main(["export", str(full_run), "--format", "onnx", "--output", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_text() == "keep me"
    assert main(["export", str(full_run), "--format", "onnx", "--output", str(tmp_path / "model.bin")]) == 2
    assert ".onnx" in capsys.readouterr().err and not (tmp_path / "model.bin").exists()
    assert main(["export", str(full_run), "--format", "merged", "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "already holds a whole model: use its model folder as it is" in err and str(full_run / "model") in err
    assert not (tmp_path / "m").exists()
    assert list(tmp_path.iterdir()) == [existing]  # no staging file left behind


def test_predict_runs_from_the_onnx_file(full_run, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    export(full_run, "onnx", path)
    from_onnx, from_run = strop.load(path), strop.load(full_run, device="cpu")
    assert from_onnx.labels == from_run.labels
    np.testing.assert_allclose(from_onnx.predict_proba(TEXTS * 20), from_run.predict_proba(TEXTS * 20), atol=1e-5)
    assert main(["predict", str(path), "--text", TEXTS[0], "--text", TEXTS[1]]) == 0
    onnx_lines = capsys.readouterr().out
    assert main(["predict", str(full_run), "--text", TEXTS[0], "--text", TEXTS[1]]) == 0
    run_lines = capsys.readouterr().out
    assert [json.loads(x)["label"] for x in onnx_lines.splitlines()] == [json.loads(x)["label"]
                                                                        for x in run_lines.splitlines()]


def test_predict_refuses_an_onnx_file_strop_did_not_write(tmp_path, capsys):
    foreign = tmp_path / "other.onnx"
    foreign.write_bytes(b"not a model")
    assert main(["predict", str(foreign), "--text", "x"]) == 2
    assert "cannot be read as an ONNX model" in capsys.readouterr().err
