"""strop soup: averaged weights of several runs (greedy or uniform) load and predict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import strop
from strop.cli import main
from strop.errors import StropError
from strop.soup import ensemble, soup

TEXTS = ["great fun film , love it", "awful boring plot , worst film"]


def _fit(tiny_model_dir, text_data, output, *extra):
    return strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
                            f"data.validation={text_data['dev']}", f"output_dir={output}", "train.epochs=2",
                            "optim.lr=1e-3", "train.quiet=true", "train.patience=0", "model.max_length=32",
                            "train.batch_size=16", "train.mixed_precision=no", *extra])


@pytest.fixture(scope="module")
def runs(tiny_model_dir, text_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("soup")
    return [_fit(tiny_model_dir, text_data, folder / "a", "train.seed=1"),
            _fit(tiny_model_dir, text_data, folder / "b", "train.seed=2"),
            _fit(tiny_model_dir, text_data, folder / "c", "train.seed=3", "method.name=lora")]


def test_uniform_soup_is_the_mean_of_the_weights_and_predicts(runs, tmp_path):
    report = soup(runs[:2], tmp_path / "soup", uniform=True, quiet=True)
    assert all(entry["used"] for entry in report["ingredients"])
    a, b = (load_file(r / "model" / "model.safetensors") for r in runs[:2])
    mixed = load_file(tmp_path / "soup" / "model.safetensors")
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(mixed[key], (a[key] + b[key]) / 2, atol=1e-6), key
    predictor = strop.load(tmp_path / "soup")
    assert predictor.predict_proba(TEXTS).shape == (2, 2)
    info = json.loads((tmp_path / "soup" / "strop.json").read_text())
    assert info["soup"]["method"] == "uniform" and len(info["soup"]["ingredients"]) == 2


def test_greedy_soup_never_scores_below_its_best_ingredient(runs, tmp_path, capsys):
    assert main(["soup", *map(str, runs), "--output", str(tmp_path / "soup")]) == 0  # a LoRA run among them
    info = json.loads((tmp_path / "soup" / "strop.json").read_text())["soup"]
    best = max(entry["score"] for entry in info["ingredients"])
    assert info["soup_score"] >= best
    assert info["ingredients"][0]["used"]  # the best run starts the soup
    assert "soup of" in capsys.readouterr().out
    predictor = strop.load(tmp_path / "soup")
    assert predictor.predict(TEXTS)[0] in ("negative", "positive")


def test_runs_of_another_base_model_are_warned_of_not_refused(runs, tmp_path, capsys):
    import shutil

    other = shutil.copytree(runs[1], tmp_path / "other")
    info = json.loads((other / "model" / "strop.json").read_text())
    (other / "model" / "strop.json").write_text(json.dumps({**info, "base_model": "another/model"}))
    soup([runs[0], runs[1]], tmp_path / "same", uniform=True, quiet=True)
    assert "warning" not in capsys.readouterr().err
    soup([runs[0], other], tmp_path / "soup", uniform=True, quiet=True)
    err = capsys.readouterr().err
    assert f"warning: {other} was fine-tuned from another/model and {runs[0]} from " in err
    assert "--ensemble" in err and (tmp_path / "soup" / "model.safetensors").is_file()
    # one base named two ways, and a run started from a run of it: the same model, nothing to warn of
    base = info["base_model"]
    for i, name in enumerate([os.path.relpath(base), str(Path(base).parent / "." / Path(base).name), str(runs[0])]):
        (other / "model" / "strop.json").write_text(json.dumps({**info, "base_model": name}))
        soup([runs[0], other], tmp_path / f"same{i}", uniform=True, quiet=True)
        assert "warning" not in capsys.readouterr().err, name


def test_a_soup_of_a_single_run_twice_is_that_run(runs, tmp_path):
    soup([runs[0], runs[0]], tmp_path / "soup", uniform=True, quiet=True)
    np.testing.assert_allclose(strop.load(tmp_path / "soup").predict_proba(TEXTS),
                               strop.load(runs[0]).predict_proba(TEXTS), atol=1e-6)


def test_runs_with_other_labels_are_refused(runs, tiny_model_dir, tmp_path):
    from conftest import write_csv

    other = write_csv(tmp_path / "other.csv", [row for i in range(20) for row in ((f"good {i}", "yes"),
                                                                                   (f"bad {i}", "no"))])
    different = strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={other}", f"output_dir={tmp_path / 'd'}",
                                 "train.epochs=1", "train.quiet=true", "model.max_length=16"])
    with pytest.raises(StropError, match="same task and labels") as refused:
        soup([runs[0], different], tmp_path / "soup", quiet=True)
    assert "['no', 'yes']" in str(refused.value) and "softmax" not in str(refused.value)  # labels, not the head
    assert not (tmp_path / "soup").exists()
    with pytest.raises(StropError, match="at least two"):
        soup([runs[0]], tmp_path / "soup", quiet=True)


# --- ensembles of predictions ----------------------------------------------------------------------------------

def test_an_ensemble_predicts_the_mean_of_its_members_and_loads_as_one_model(runs, tiny_model_dir, text_data,
                                                                             tmp_path, capsys):
    mlp_free = [runs[0], runs[2]]  # a full run and a LoRA run: an ensemble needs no shared weights
    assert main(["soup", *map(str, mlp_free), "--ensemble", "--output", str(tmp_path / "ens")]) == 0
    report = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [m["folder"] for m in report["members"]] == ["members/0", "members/1"]
    assert "ensemble of 2: accuracy" in capsys.readouterr().out
    members = [strop.load(run, device="cpu") for run in mlp_free]
    together = strop.load(tmp_path / "ens", device="cpu")
    expected = np.mean([m.predict_proba(TEXTS) for m in members], axis=0)
    assert np.allclose(together.predict_proba(TEXTS), expected, atol=1e-6)
    assert together.predict(TEXTS) == [together.labels[i] for i in expected.argmax(axis=1)]
    # predict reads every member, not the first alone: a member sure of the last class carries the mean there
    sure = np.eye(len(together.labels))[-1] * 100
    together.members[1].outputs = lambda inputs, show=None: [sure for _ in inputs]
    assert together.predict(TEXTS) == [together.labels[-1]] * len(TEXTS)
    # scored like any model: strop evaluate on the validation file gives the recorded score
    assert main(["evaluate", str(tmp_path / "ens"), "--data", str(text_data["dev"]), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(report["ensemble_score"])
    # an ensemble.json edited to name itself (or a folder outside) as a member is refused, not followed
    for stray in (".", "..", "members/0/../.."):
        (tmp_path / "ens" / "ensemble.json").write_text(json.dumps({**report, "members": [{"folder": stray}]}))
        with pytest.raises(StropError, match="is not inside the ensemble folder"):
            strop.load(tmp_path / "ens", device="cpu")


def test_commands_on_one_models_weights_refuse_an_ensemble_and_int8_serving_quantises_every_member(runs, tmp_path,
                                                                                                  capsys):
    from strop.serve import quantized

    assert main(["soup", str(runs[0]), str(runs[2]), "--ensemble", "--output", str(tmp_path / "ens")]) == 0
    capsys.readouterr()
    for command in (["export", str(tmp_path / "ens"), "--format", "onnx", "--output", str(tmp_path / "e.onnx")],
                    ["export", str(tmp_path / "ens"), "--format", "merged", "--output", str(tmp_path / "merged")],
                    ["compress", str(tmp_path / "ens")]):
        assert main(command) == 2  # they would take the first member's weights for the whole
        err = capsys.readouterr().err
        assert "is an ensemble of 2 models" in err and str(tmp_path / "ens" / "members" / "1") in err
    assert not (tmp_path / "e.onnx").exists() and not (tmp_path / "merged").exists()
    together = quantized(strop.load(tmp_path / "ens", device="cpu"), tmp_path / "ens")
    assert all(any("quantized" in type(layer).__module__ for layer in m.model.modules()) for m in together.members)


def test_an_ensemble_refuses_other_labels_and_uniform(runs, tiny_model_dir, tmp_path):
    from conftest import make_texts, write_csv

    other = [(text, "yes" if label == "positive" else "no") for text, label in make_texts(40, seed=5)]
    data = {"train": write_csv(tmp_path / "t.csv", other), "dev": write_csv(tmp_path / "d.csv", other[:10])}
    odd = _fit(tiny_model_dir, data, tmp_path / "odd")
    with pytest.raises(StropError, match="an ensemble needs runs of the same task and labels"):
        ensemble([runs[0], odd], tmp_path / "ens", quiet=True)
    assert not (tmp_path / "ens").exists()
    assert main(["soup", *map(str, runs[:2]), "--ensemble", "--uniform", "--output", str(tmp_path / "u")]) != 0
    assert not (tmp_path / "u").exists()


def test_runs_of_a_softmax_and_a_sigmoid_head_ensemble_and_a_soup_names_the_head(runs, tiny_model_dir, text_data,
                                                                                  tmp_path):
    sigmoid = _fit(tiny_model_dir, text_data, tmp_path / "sigmoid", "model.head=sigmoid")
    with pytest.raises(StropError, match="head: sigmoid against softmax") as refused:
        soup([runs[0], sigmoid], tmp_path / "soup", quiet=True)
    assert "--ensemble" in str(refused.value)
    assert not (tmp_path / "soup").exists()
    # both give probabilities of the same two classes: an ensemble averages them
    ensemble([runs[0], sigmoid], tmp_path / "ens", quiet=True)
    members = [strop.load(run, device="cpu") for run in (runs[0], sigmoid)]
    expected = np.mean([m.predict_proba(TEXTS) for m in members], axis=0)
    assert np.allclose(strop.load(tmp_path / "ens", device="cpu").predict_proba(TEXTS), expected, atol=1e-6)


def test_runs_that_tuned_other_thresholds_combine_with_one_tuned_again(runs, text_data, tmp_path):
    import shutil

    import pandas as pd

    from strop.evaluate.metrics import best_threshold

    copies = []
    for run, threshold in zip(runs[:2], (0.05, 0.2)):  # as two seeds of an imbalanced two-class run tune them
        copy = shutil.copytree(run, tmp_path / f"{run.name}-t")
        info = json.loads((copy / "model" / "strop.json").read_text())
        (copy / "model" / "strop.json").write_text(json.dumps({**info, "positive": "negative",
                                                               "threshold": threshold}))
        copies.append(copy)
    report = soup(copies, tmp_path / "soup", uniform=True, quiet=True)  # refused before: "other outputs"
    joined = ensemble(copies, tmp_path / "ensemble", quiet=True)
    dev = pd.read_csv(text_data["dev"])
    is_negative = (dev["label"] == "negative").to_numpy()
    for folder in ("soup", "ensemble"):  # each decides with a threshold tuned on its own validation outputs
        combined = strop.load(tmp_path / folder)
        p_negative = np.stack(combined.outputs(dev["text"].tolist()))[:, 0]
        assert combined.task.threshold == pytest.approx(best_threshold(p_negative, is_negative))
    assert joined["threshold"] == strop.load(tmp_path / "ensemble").task.threshold and 0 <= report["soup_score"] <= 1


def test_runs_of_which_one_kept_no_threshold_combine_and_the_ensemble_decides_as_it_was_scored(runs, text_data,
                                                                                               tmp_path):
    """A run keeps its tuned threshold only where it does not lower its macro-F1, so seeds of one config may differ
    in having one: they combine (in either order, the combination tuned again), and an ensemble that kept none
    decides by the most probable class, not by its first member's threshold."""
    import shutil

    copy = shutil.copytree(runs[0], tmp_path / "with-threshold")
    info = json.loads((copy / "model" / "strop.json").read_text())
    (copy / "model" / "strop.json").write_text(json.dumps({**info, "positive": "negative", "threshold": 0.05}))
    for order, name in (([runs[1], copy], "a"), ([copy, runs[1]], "b")):  # refused before: "positive: ..."
        soup(order, tmp_path / f"soup-{name}", uniform=True, quiet=True)
        report = ensemble(order, tmp_path / f"ens-{name}", quiet=True)
        assert "threshold" in report and strop.load(tmp_path / f"ens-{name}").task.threshold == report["threshold"]
    stored = json.loads((tmp_path / "ens-b" / "ensemble.json").read_text())
    (tmp_path / "ens-b" / "ensemble.json").write_text(json.dumps({**stored, "threshold": None}))
    kept_none = strop.load(tmp_path / "ens-b")
    assert kept_none.task.threshold is None  # the member's 0.05 would decide otherwise than the score measured
    p = np.asarray(kept_none.predict_proba(TEXTS))
    assert kept_none.predict(TEXTS) == [kept_none.task.labels[i] for i in p.argmax(axis=1)]
