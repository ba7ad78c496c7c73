"""Numeric vectors into an MLP, and new runs that start from a previous run's weights."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import strop


def _vectors(path, n, seed, task="regression", scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [1, 10, 100, 0.1] + [0, 5, 50, 0]
    y = offset + scale * (np.tanh(x[:, 0]) + 0.1 * x[:, 1] - 0.01 * x[:, 2] + rng.normal(scale=0.05, size=n))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["y"] = y if task == "regression" else np.where(y > np.median(y), "high", "low")
    frame.to_csv(path, index=False)
    return path


def _mlp(tmp_path, name, task="regression", extra=()):
    train = _vectors(tmp_path / f"train-{task}.csv", 300, 1, task)
    dev = _vectors(tmp_path / f"dev-{task}.csv", 100, 2, task)
    return strop.fit(None, ["model.name=mlp", f"task.name={'regression' if task == 'regression' else 'text_classification'}",
                            f"data.train={train}", f"data.validation={dev}", "data.label_column=y",
                            f"output_dir={tmp_path / name}", "train.quiet=true", "train.epochs=15",
                            "train.patience=0", "model.hidden=[32,32]", *extra]), dev


def test_mlp_regression_learns_with_standardised_inputs_and_targets(tmp_path):
    run, dev = _mlp(tmp_path, "reg")
    info = json.loads((run / "model" / "strop.json").read_text())
    assert info["backbone"] == "mlp" and info["feature_columns"] == ["a", "b", "c", "d"]
    assert info["mlp"]["std"][2] == pytest.approx(100, rel=0.2)  # input statistics saved with the model
    summary = json.loads((run / "summary.json").read_text())
    spread = pd.read_csv(dev)["y"].std()
    assert summary["validation"]["rmse"] < 0.5 * spread  # far better than predicting the mean
    assert summary["validation"]["r2"] > 0.7
    predictor = strop.load(run)
    frame = pd.read_csv(dev)
    predicted = predictor.predict(list(frame[["a", "b", "c", "d"]].to_numpy(dtype=np.float32)))
    assert np.sqrt(np.mean((np.array(predicted) - frame["y"]) ** 2)) == pytest.approx(summary["validation"]["rmse"],
                                                                                     rel=1e-4)


@pytest.mark.parametrize("scale, offset", [(1e-6, 0.0), (1.0, 1e6)], ids=["millionths", "offset-1e6"])
def test_predictions_of_targets_in_millionths_keep_their_digits(tmp_path, scale, offset):
    """Written outputs keep 6 significant digits of the targets' spread, whatever their scale and offset (6 decimal
    places turned values like 1.5e-06 into 2e-06: the run's r2 of 0.78 read 0.61 from `strop predict`'s output;
    6 digits of the value itself wrote every target of 1e6 plus a few units as 1000000.0)."""
    train = _vectors(tmp_path / "train.csv", 300, 1, scale=scale, offset=offset)
    dev = _vectors(tmp_path / "dev.csv", 100, 2, scale=scale, offset=offset)
    run = strop.fit(None, ["model.name=mlp", "task.name=regression", f"data.train={train}", f"data.validation={dev}",
                           "data.label_column=y", f"output_dir={tmp_path / 'run'}", "train.quiet=true",
                           "train.epochs=5", "model.hidden=[32]"])
    exact = np.array(strop.load(run).predict(list(pd.read_csv(dev)[["a", "b", "c", "d"]].to_numpy(np.float32))))
    out = subprocess.run([sys.executable, "-m", "strop.cli", "predict", str(run), "--input", str(dev)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    written = np.array([json.loads(line)["value"] for line in out.stdout.splitlines()])
    assert np.ptp(exact) > 0.1 * scale  # the outputs differ: rounding them all to one value would show
    np.testing.assert_allclose(written, exact, rtol=0, atol=1e-4 * scale)
    saved = [json.loads(line)["output"][0] for line in (run / "validation_predictions.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(saved, exact, rtol=0, atol=1e-4 * scale)
    out = subprocess.run([sys.executable, "-m", "strop.cli", "evaluate", str(run), "--data", str(dev)],
                         capture_output=True, text=True)
    rmse = float(out.stdout.split("rmse ", 1)[1].split()[0])  # on the terminal with its digits, not 0.0000
    assert rmse == pytest.approx(json.loads((run / "summary.json").read_text())["validation"]["rmse"], rel=1e-2)


def test_a_feature_with_a_large_offset_keeps_its_differences(tmp_path):
    """A Unix time's seconds: rounded to float32 before the mean came off, 1.7e9 + 0..100 s became 2 values."""
    from strop.backbones.vector import MLPBackbone
    from strop.data.inputs import read_vectors

    seconds = np.linspace(0, 100, 51)
    frame = pd.DataFrame({"time": 1.7e9 + seconds, "x": seconds})
    body = MLPBackbone.for_data(read_vectors(frame, "t.csv", ["time", "x"], "data.train"), (8,), "relu", 0.0)
    standard = np.array([f["x"] for f in body.encode(read_vectors(frame, "t.csv", ["time", "x"], "data.train"))])
    np.testing.assert_allclose(standard[:, 0], standard[:, 1], atol=1e-5)  # the offset changes nothing
    reloaded = MLPBackbone(2, (8,), "relu", 0.0, **{k: json.loads(json.dumps(v)) for k, v in
                                                    body.save(tmp_path)["mlp"].items() if k in ("mean", "std")})
    np.testing.assert_allclose([f["x"] for f in reloaded.encode(list(frame.to_numpy()))], standard, atol=1e-6)


def test_mlp_classification_and_cli_predict_from_a_table(tmp_path):
    run, dev = _mlp(tmp_path, "cls", task="classification")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["accuracy"] > 0.8
    out = subprocess.run([sys.executable, "-m", "strop.cli", "predict", str(run), "--input", str(dev)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 100 and {r["label"] for r in rows} <= {"high", "low"}
    # a file that lacks a feature, or misses a value: the fix is in the file (predict has no data.* settings)
    frame = pd.read_csv(dev)
    frame.drop(columns=["c"]).to_csv(tmp_path / "no_c.csv", index=False)
    frame.assign(a=frame["a"].astype(object).where(frame.index != 3, "n/a")).to_csv(tmp_path / "hole.csv", index=False)
    for name, said in (("no_c.csv", "The model reads the columns it was trained on"),
                       ("hole.csv", "fix those values, or give a number in every row")):
        out = subprocess.run([sys.executable, "-m", "strop.cli", "predict", str(run), "--input", str(tmp_path / name)],
                             capture_output=True, text=True)
        assert out.returncode == 2 and said in out.stderr and "data.feature_columns" not in out.stderr, out.stderr


def test_the_python_api_takes_tables_rows_and_one_vector_and_refuses_bad_ones(tmp_path):
    from strop.errors import StropError

    run, dev = _mlp(tmp_path, "api", extra=("train.epochs=2",))
    predictor, frame = strop.load(run), pd.read_csv(dev).head(4)
    expected = predictor.predict(frame[["a", "b", "c", "d"]].to_numpy())
    assert predictor.predict(frame[["d", "c", "b", "a", "y"]]) == expected  # columns matched by name
    assert predictor.predict(frame.to_dict("records")) == expected
    assert predictor.predict(frame[["a", "b", "c", "d"]].to_numpy()[0]) == pytest.approx(expected[:1])  # one vector
    for bad, words in [(frame[["a", "b", "c"]].to_numpy(), "vectors of 4 numbers"),
                       (frame.drop(columns=["b"]), "lack the column\\(s\\) b"),
                       ([[0.0] * 4, [1.0, np.nan, 0.0, 0.0]], "row\\(s\\) 2 \\(row 1 is the first\\) hold a value"),
                       ([[1.0, 1e300, 0.0, 0.0]], "beyond float32")]:
        with pytest.raises(StropError, match=words):
            predictor.predict(bad)


def test_a_vector_column_with_text_is_refused(tmp_path):
    path = _vectors(tmp_path / "t.csv", 20, 1)
    frame = pd.read_csv(path)
    frame["b"] = frame["b"].astype(object)
    frame.loc[4, "b"] = "n/a"
    frame.to_csv(path, index=False)
    with pytest.raises(strop.StropError, match=r"feature column 'b' .* holds 'n/a' in row 5"):
        strop.fit(None, ["model.name=mlp", "task.name=regression", f"data.train={path}", "data.label_column=y",
                         f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_a_column_named_twice_or_too_large_for_a_float_is_refused_in_plain_words(tmp_path):
    path = _vectors(tmp_path / "t.csv", 20, 1)
    base = ["model.name=mlp", "task.name=regression", f"data.train={path}", "data.label_column=y",
            f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(strop.StropError, match=r"data.feature_columns names a twice: name each column once"):
        strop.fit(None, base + ["data.feature_columns=[a,a,b]"])
    frame = pd.read_csv(path)
    frame.loc[7, "c"] = 1e300
    frame.to_csv(path, index=False)
    with pytest.raises(strop.StropError, match=r"feature column 'c' of t.csv holds 1e\+300 in row 8, beyond"):
        strop.fit(None, base)
    assert not (tmp_path / "run").exists()


def test_a_boolean_column_reads_as_0_and_1_from_csv_as_from_parquet_and_json(tmp_path):
    from strop.data.inputs import read_vectors
    from strop.data.tables import read_table

    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5], "flag": [True, False, True]})
    frame.to_csv(tmp_path / "t.csv", index=False)  # written as True / False
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)  # true / false
    (tmp_path / "lower.csv").write_text("x,flag\n0.5, true\n1.5,FALSE\n2.5,True\n")
    read = {name: np.stack(read_vectors(read_table(tmp_path / name, "data.train"), tmp_path / name, ["x", "flag"],
                                        "data.train")) for name in ("t.csv", "t.parquet", "t.jsonl", "lower.csv")}
    assert all(np.array_equal(m, [[0.5, 1], [1.5, 0], [2.5, 1]]) for m in read.values()), read


def test_a_new_run_starts_from_a_previous_runs_body_with_a_new_head(tmp_path, capsys):
    first, _ = _mlp(tmp_path, "first")
    # Same task, same target: the whole model (head included) continues.
    again, _ = _mlp(tmp_path, "again", extra=[f"model.name={first}", "train.epochs=1", "optim.lr=1e-12",
                                              "optim.warmup=0"])
    a, b = load_file(first / "model" / "model.safetensors"), load_file(again / "model" / "model.safetensors")
    for key in a:  # a rate of 1e-12 moves nothing: both body and head came from the first run
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    # A classification task on the same inputs: the body continues, a new head is built and said.
    capsys.readouterr()
    other, _ = _mlp(tmp_path, "other", task="classification",
                    extra=[f"model.name={first / 'model'}", "train.epochs=1", "optim.lr=1e-12", "optim.warmup=0",
                           "train.quiet=false"])
    said = capsys.readouterr().out
    assert "new head (the task differs" in said and "'softmax'" not in said  # the labels, not the head kind
    c = load_file(other / "model" / "model.safetensors")
    assert c["head.output.weight"].shape[0] == 2
    for key in a:
        if key.startswith("body."):
            assert torch.allclose(a[key], c[key], atol=1e-6), key


def test_a_text_run_hands_its_body_to_a_new_task(tiny_overrides, tmp_path):
    first = strop.fit(None, tiny_overrides + ["train.epochs=1"])
    rows = pd.read_csv([o.split("=", 1)[1] for o in tiny_overrides if o.startswith("data.train=")][0])
    rows["label"] = rows["text"].str.len()
    rows.to_csv(tmp_path / "lengths.csv", index=False)
    second = strop.fit(None, [o for o in tiny_overrides if not o.startswith(("model.name", "output_dir", "data."))]
                       + [f"model.name={first}", "task.name=regression", f"data.train={tmp_path / 'lengths.csv'}",
                          f"output_dir={tmp_path / 'second'}", "train.epochs=1", "optim.lr=1e-12", "optim.warmup=0"])
    a, b = load_file(first / "model" / "model.safetensors"), load_file(second / "model" / "model.safetensors")
    body = [k for k in a if k.startswith("bert.encoder")]
    assert body and all(torch.allclose(a[k], b[k], atol=1e-6) for k in body)
    assert json.loads((second / "model" / "strop.json").read_text())["task"] == "regression"


def test_a_run_started_from_a_run_keeps_its_heads_meaning_and_trains_by_its_own_settings(tmp_path):
    from strop.config import load_config
    from strop.fit import prepare

    first, _ = _mlp(tmp_path, "first", task="classification", extra=["train.epochs=1"])
    regression, _ = _mlp(tmp_path, "first-reg", extra=["train.epochs=1", "task.loss=mse"])
    train, dev = tmp_path / "train-classification.csv", tmp_path / "dev-classification.csv"
    again = prepare(load_config(None, [f"model.name={first}", "task.name=text_classification", f"data.train={train}",
                                       f"data.validation={dev}", "data.label_column=y", "train.imbalance=weights",
                                       "train.label_smoothing=0.1"])).task
    assert again.imbalance == "weights" and again.class_weights and again.label_smoothing == 0.1
    train, dev = tmp_path / "train-regression.csv", tmp_path / "dev-regression.csv"
    again = prepare(load_config(None, [f"model.name={regression}", "task.name=regression", f"data.train={train}",
                                       f"data.validation={dev}", "data.label_column=y", "task.loss=huber"])).task
    saved = json.loads((regression / "model" / "strop.json").read_text())
    assert again.loss_name == "huber"  # this run's loss; the head's outputs on the first run's scale
    assert list(again.mean) == saved["target_mean"] and list(again.std) == saved["target_std"]


def test_label_smoothing_is_said_unused_where_the_task_has_no_classes_to_smooth(tmp_path):
    from strop.config import load_config
    from strop.fit import prepare

    def notes(task):
        train = _vectors(tmp_path / f"train-{task}.csv", 40, 1, task)
        return prepare(load_config(None, ["model.name=mlp", f"data.train={train}", "data.label_column=y",
                                          f"task.name={'regression' if task == 'regression' else 'text_classification'}",
                                          "train.label_smoothing=0.1"])).notes

    assert any("train.label_smoothing=0.1 is not used" in note for note in notes("regression"))
    assert not any("label_smoothing" in note for note in notes("classification"))
