"""strop compress: int8 (dynamic, linear layers) and ONNX forms measured beside the fp32 model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import strop
from strop.cli import main
from strop.compress import compress, int8_form, merged_copy
from strop.errors import StropError


@pytest.fixture(scope="module")
def run(tiny_model_dir, text_data, tmp_path_factory):
    return strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
                            f"data.validation={text_data['dev']}", f"output_dir={tmp_path_factory.mktemp('c') / 'run'}",
                            "train.epochs=2", "optim.lr=1e-3", "train.quiet=true", "model.max_length=32",
                            "train.batch_size=16", "train.mixed_precision=no"])


def test_int8_quantises_every_linear_layer_and_stays_close(run):
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    predictor = strop.load(run, device="cpu")
    model = merged_copy(predictor.model)
    linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    form = int8_form(model)
    quantized = form.runs
    assert sum(isinstance(m, QuantizedLinear) for m in quantized.modules()) == linear > 0
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    batch = predictor.model.body.tokenizer(["great fun film", "awful boring plot , worst"], padding=True,
                                           return_tensors="pt")
    batch = dict(batch)
    with torch.no_grad():
        expected = model(**batch)
    got = form.logits(batch)
    assert not torch.equal(got, expected)  # it really runs int8 weights
    assert torch.allclose(got, expected, atol=0.1)


def test_compress_measures_each_form_on_the_validation_data(run, capsys):
    forms = ("int8", "onnx") if _has_onnx() else ("int8",)
    rows = compress(run, forms)
    assert [r["form"] for r in rows] == ["fp32", *forms]
    summary = json.loads((run / "summary.json").read_text())
    # The fp32 row is measured again, and agrees with the run's own final validation
    assert rows[0]["accuracy"] == pytest.approx(summary["validation"]["accuracy"], abs=1e-4)
    assert rows[0]["loss"] == pytest.approx(summary["validation"]["loss"], abs=1e-4)
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["ms_per_example_batch1"] > 0 and row["ms_per_example_batch32"] > 0
        assert row["parameters"] == rows[0]["parameters"] and row["size_mb"] > 0
    assert rows[1]["size_mb"] < rows[0]["size_mb"]  # int8 linear weights take a quarter of the bytes
    if "onnx" in forms:
        assert rows[2]["loss"] == pytest.approx(rows[0]["loss"], abs=1e-4)  # the same function in another runtime
    printed = capsys.readouterr().out
    assert "| int8 |" in printed and "ms/example batch 1" in printed
    saved = json.loads((run / "compress.json").read_text())
    assert saved["rows"] == rows and "| fp32 |" in (run / "compress.md").read_text()


def test_compress_scores_a_given_file_and_refuses_unknown_forms(run, text_data, capsys):
    assert main(["compress", str(run), "--forms", "int8", "--data", str(text_data["train"])]) == 0
    saved = json.loads((run / "compress.json").read_text())
    assert saved["data"] == str(text_data["train"]) and len(saved["rows"]) == 2
    assert main(["compress", str(run), "--forms", "int4"]) == 2
    assert "unknown form 'int4'" in capsys.readouterr().err
    # a bare model folder has nowhere to keep the table: said, not silently dropped
    assert main(["compress", str(run / "model"), "--forms", "int8", "--data", str(text_data["train"])]) == 0
    assert "is a model folder, not a run directory: the table above is not saved" in capsys.readouterr().out


def test_compress_reads_the_columns_of_a_file_named_otherwise(run, text_data, tmp_path, capsys):
    import pandas as pd

    renamed = tmp_path / "renamed.csv"
    pd.read_csv(text_data["train"]).rename(columns={"text": "sentence", "label": "mood"}).to_csv(renamed, index=False)
    assert main(["compress", str(run), "--forms", "int8", "--data", str(renamed)]) == 2
    assert "Name the right one with --text-column <column>" in capsys.readouterr().err  # an option it has
    assert main(["compress", str(run), "--forms", "int8", "--data", str(renamed), "--text-column", "sentence",
                 "--label-column", "mood"]) == 0
    assert json.loads((run / "compress.json").read_text())["data"] == str(renamed)
    assert main(["compress", str(run), "--forms", "int8", "--label-column", "mood"]) == 2
    assert "--label-column names a column of --data, and no --data is given" in capsys.readouterr().err


def test_compress_without_readable_validation_data_names_the_fix(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = (copy / "config.yaml").read_text().replace(str(run.parent), str(tmp_path / "gone"))
    text = config.replace("train: ", "train: /nonexistent/")
    (copy / "config.yaml").write_text(text)
    with pytest.raises(StropError, match="--data"):
        compress(copy, ("int8",), quiet=True)


def _has_onnx() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_tensor_shared_under_two_names_counts_once_in_the_size():
    from strop.compress import _unshared

    weight = torch.randn(4, 3)
    state = {"embeddings.weight": weight, "decoder.weight": weight, "other": torch.randn(2), "half": weight[:2]}
    kept = _unshared(state)
    assert list(kept) == ["embeddings.weight", "other", "half"]  # a view of part of it is its own tensor
    assert kept["half"].untyped_storage().data_ptr() != weight.untyped_storage().data_ptr()



def test_the_int8_note_names_what_stays_float32_in_this_model():
    from strop.compress import int8_notes

    words = torch.nn.Sequential(torch.nn.Embedding(1000, 64), torch.nn.Linear(64, 2))  # nearly all embeddings
    assert "the rest (embeddings) stays float32" in int8_notes(words)[0]
    assert int8_notes(torch.nn.Sequential(torch.nn.Linear(64, 64))) == []
