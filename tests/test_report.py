"""report.html: written by every fit of every task (and of vectors), rebuilt by `strop report`, self-contained,
with each of its sections; the diagnosis's rules on synthetic histories and predictions."""

import base64
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import strop
import strop.report  # strop.report.X below: not imported by `import strop` itself
from strop.evaluate import diagnose
from strop.tasks import TASKS
from test_tasks import _fit

COMMON = ["diagnosis", "data", "curves", "worst", "config"]


def sections(task: str) -> set[str]:
    """The sections a task's report has: a residual plot for regression, the classes' tables for the others."""
    from strop.tasks.regression import Regression

    if issubclass(TASKS.get(task), Regression):
        return set(COMMON + ["residuals", "scores"])
    return set(COMMON + ["confusion", "scores", "calibration"])

VOID = {"meta", "img", "br", "hr", "input", "link", "col", "source", "wbr", "area", "base", "embed", "track"}


class _Checker(HTMLParser):
    """Collects resource URLs and the ids, and checks that every opened element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls, self.ids, self.images = [], [], [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href", "data", "poster", "srcset"):
            if attrs.get(key):
                self.urls.append(attrs[key])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_self_contained(page: str) -> _Checker:
    """Asserts the page is well-formed HTML that needs nothing from the network, and returns what it found."""
    assert page.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    for url in checker.urls:  # resources and links: data URIs or in-page anchors only
        assert url.startswith(("data:", "#")), url
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page), "a CSS resource from the network"
    assert "<script" not in page and "<link" not in page
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return checker


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """One tiny run per task, made once for the module."""
    made = {}

    def get(task):
        if task not in made:
            made[task] = _fit(task, tiny_model_dir, tmp_path_factory.mktemp(task))[0]
        return made[task]
    return get


# The tasks on the tiny BERT; image classification has its own test below.
TEXT_TASKS = [name for name in TASKS.names() if "text" in TASKS.get(name).input_kinds]


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_every_task_gets_a_self_contained_report_with_its_sections(task, runs):
    run = runs(task)
    for name in ("report.html", "data_summary.json", "validation_predictions.jsonl"):
        assert (run / name).is_file(), name
    page = (run / "report.html").read_text(encoding="utf-8")
    checker = check_self_contained(page)
    assert sections(task) <= checker.ids, sections(task) - checker.ids
    assert len(checker.images) >= 2  # curves and at least one more chart
    rows = [json.loads(line) for line in (run / "validation_predictions.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert len(rows) == summary["validation_examples"]
    # The report's scores are the run's: the predictions saved are those of the saved model.
    analysis = strop.report.analyse(run)
    for metric, value in summary["validation"].items():
        assert analysis["metrics"][metric] == pytest.approx(value, abs=1e-4), metric


def test_classification_report_shows_the_numbers_of_the_run(runs):
    run = runs("text_classification")
    analysis = strop.report.analyse(run)
    data = json.loads((run / "data_summary.json").read_text())
    assert data["classes"] == {"negative": {"train": 20, "validation": 10}, "positive": {"train": 20, "validation": 10}}
    matrix = np.asarray(analysis["metrics"]["confusion_matrix"])
    assert matrix.sum() == 20
    page = (run / "report.html").read_text()
    assert f"{analysis['calibration']['ece']:.4f}" in page  # the expected calibration error is printed
    for name in ("negative", "positive"):
        assert f"<th>{name}</th>" in page
    assert len(analysis["worst"]) == analysis["errors"] or len(analysis["worst"]) == strop.report.WORST
    confidences = [w["confidence"] for w in analysis["worst"]]
    assert confidences == sorted(confidences, reverse=True)  # the most confident errors first


def test_strop_report_rebuilds_the_page_and_an_old_run_gets_its_predictions_recomputed(runs):
    from strop.cli import main

    run = runs("text_classification")
    before = (run / "validation_predictions.jsonl").read_text()
    (run / "report.html").unlink()
    (run / "validation_predictions.jsonl").unlink()  # as a run from before the report
    (run / "data_summary.json").unlink()
    assert main(["report", str(run), "--quiet"]) == 0
    check_self_contained((run / "report.html").read_text())
    again = [json.loads(line) for line in (run / "validation_predictions.jsonl").read_text().splitlines()]
    first = [json.loads(line) for line in before.splitlines()]
    assert [r["input"] for r in again] == [r["input"] for r in first]
    assert np.allclose([r["output"] for r in again], [r["output"] for r in first], atol=1e-5)


def test_a_report_rebuilt_from_inside_the_run_is_titled_and_compared_as_from_outside(runs, monkeypatch):
    import shutil

    import yaml

    from strop.cli import main

    run = runs("text_classification")
    beside = run.parent / "seed-7"  # the same config with another seed, beside it
    shutil.copytree(run, beside)
    config = yaml.safe_load((beside / "config.yaml").read_text())
    config["train"]["seed"], config["output_dir"] = 7, str(beside)
    (beside / "config.yaml").write_text(yaml.safe_dump(config))
    summary = json.loads((beside / "summary.json").read_text())
    summary["validation"][summary["metric"]] = 0.01  # far from the run's: unstable across seeds
    (beside / "summary.json").write_text(json.dumps(summary))
    monkeypatch.chdir(run)
    assert main(["report", ".", "--quiet"]) == 0
    page = (run / "report.html").read_text()
    assert f"<title>strop report: {run.name}</title>" in page and 'data-finding="instability"' in page
    shutil.rmtree(beside)


def test_the_loops_validation_outputs_are_reused_in_the_examples_order():
    from strop.report import _in_input_order
    from strop.tasks import Examples

    task = TASKS.get("text_classification")(labels=("neg", "pos"))
    validation = Examples(["a b c", "a", "a b"], ["pos", "neg", "pos"], "v")
    features = [{"input_ids": [0] * 3}, {"input_ids": [0]}, {"input_ids": [0] * 2}]  # validated shortest first
    outputs = [np.array([0.9, 0.1]), np.array([0.2, 0.8]), np.array([0.3, 0.7])]
    reordered = _in_input_order(task, validation, (outputs, [0, 1, 1]), features)
    assert [o.tolist() for o in reordered] == [[0.3, 0.7], [0.9, 0.1], [0.2, 0.8]]
    # targets that do not match the examples' mean another order: the caller predicts afresh
    assert _in_input_order(task, validation, (outputs, [1, 0, 1]), features) is None


def test_fit_writes_the_report_without_predicting_the_validation_set_again(tiny_overrides, monkeypatch, capsys):
    from strop.predict import Predictor

    def no_second_pass(self, inputs):
        raise AssertionError("the validation set was predicted again")

    monkeypatch.setattr(Predictor, "outputs", no_second_pass)
    run = strop.fit(None, tiny_overrides)
    assert (run / "report.html").is_file() and "warning" not in capsys.readouterr().err


def test_strop_report_refuses_a_folder_without_a_run(tmp_path, capsys):
    from strop.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "no complete run" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "typo")]) == 2
    assert f"{tmp_path / 'typo'}: no such folder; give the run directory" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_vector_runs_get_a_report(kind, tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train", 120), ("dev", 40)):
        x = rng.normal(size=(n, 3))
        frame = pd.DataFrame(x, columns=["a", "b", "c"])
        frame["y"] = x[:, 0] + 0.5 * x[:, 1] if kind == "regression" else np.where(x[:, 0] > 0, "up", "down")
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    task = "regression" if kind == "regression" else "text_classification"
    run = strop.fit(None, ["model.name=mlp", f"task.name={task}", f"data.train={tmp_path / 'train.csv'}",
                           f"data.validation={tmp_path / 'dev.csv'}", "data.label_column=y", "train.quiet=true",
                           "train.epochs=3", f"output_dir={tmp_path / 'run'}"])
    page = (run / "report.html").read_text()
    checker = check_self_contained(page)
    assert sections(task) <= checker.ids
    if kind == "regression":  # errors, not misclassifications, and in the target's units
        assert '<h2 id="worst">Largest errors</h2>' in page and "in the target's units" in page
        assert "misclassified" not in page
    data = json.loads((run / "data_summary.json").read_text())
    assert data["input"] == "vector" and data["features"] == 3 and "lengths" not in data
    # the epoch table marks the saved epoch only (metrics.jsonl flags each best-so-far epoch)
    flagged = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
               if json.loads(line).get("best")]
    assert page.count("<td>best</td>") == 1 and len(flagged) >= 1
    assert re.search(r"<b>\d+(\.\d)? s</b><span>training time", page) and "<b>0 s</b>" not in page
    from strop.report_html import render

    healthy = render({**strop.report.analyse(run), "findings": []})  # says only the checks this run had
    assert "No problem found" in healthy and "compared by their values" in healthy
    if kind == "regression":
        assert not any(claim in healthy for claim in ("label frequencies", "every class", "errors are confident"))
        assert "beyond predicting the mean" in healthy and "three times the RMSE" in healthy
    else:
        assert "every class has enough examples" in healthy


def test_image_runs_get_a_report_with_thumbnails_of_the_worst_errors(tmp_path):
    if "image_classification" not in TASKS.names():
        pytest.skip("no image_classification task registered")
    timm = pytest.importorskip("timm", reason='image models need pip install "strop[vision]"')
    import torch
    from PIL import Image
    from timm.models import save_for_hf

    model = tmp_path / "tiny-timm"
    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_efficientnet", pretrained=False), model, safe_serialization=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c, name in ((0, "red"), (2, "blue")):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                array = rng.integers(0, 90, (20, 20, 3), dtype=np.uint8)
                array[..., c] = rng.integers(160, 255, (20, 20))
                Image.fromarray(array).save(tmp_path / split / name / f"{i}.png")
    Image.open(tmp_path / "train" / "red" / "0.png").save(tmp_path / "val" / "red" / "copy.png")  # a leak
    run = strop.fit(None, ["task.name=image_classification", f"model.name={model}", f"data.train={tmp_path / 'train'}",
                           f"data.validation={tmp_path / 'val'}", f"output_dir={tmp_path / 'run'}", "data.image_size=32",
                           "train.epochs=2", "train.batch_size=8", "train.quiet=true", "train.mixed_precision=no"])
    page = (run / "report.html").read_text()
    checker = check_self_contained(page)
    assert sections("image_classification") <= checker.ids
    data = json.loads((run / "data_summary.json").read_text())
    assert data["input"] == "image" and "lengths" not in data
    assert data["overlap"]["count"] == 1  # the same picture under another name, found by its bytes
    analysis = strop.report.analyse(run)
    if analysis["worst"]:  # each wrong image is shown as a thumbnail
        assert page.count("<img") >= 2 + len(analysis["worst"])


def test_a_failing_report_warns_and_keeps_the_run(tiny_overrides, monkeypatch, capsys):
    import strop.report

    def broken(run_dir):
        raise RuntimeError("no room for charts")

    monkeypatch.setattr(strop.report, "build_report", broken)
    run = strop.fit(None, tiny_overrides)
    assert (run / "summary.json").is_file() and (run / "model" / "model.safetensors").is_file()
    assert not (run / "report.html").exists()
    err = capsys.readouterr().err
    assert "report.html could not be written" in err and "no room for charts" in err and "strop report" in err


# --- the diagnosis -----------------------------------------------------------------------------------

def _history(train_losses, val_losses):
    return [{"epoch": i + 1, "train_loss": t, "val_loss": v} for i, (t, v) in enumerate(zip(train_losses, val_losses))]


OVERFIT = _history([0.60, 0.35, 0.20, 0.10, 0.05, 0.02], [0.45, 0.38, 0.40, 0.48, 0.60, 0.75])
HEALTHY = _history([0.60, 0.40, 0.30, 0.25, 0.22, 0.21], [0.50, 0.40, 0.35, 0.33, 0.32, 0.32])


def test_overfitting_is_found_in_a_rising_validation_loss_and_not_in_a_healthy_run():
    finding = diagnose.overfitting(OVERFIT, best_epoch=2)
    assert finding is not None and finding.name == "overfitting"
    assert "0.380 (epoch 2)" in finding.evidence and "0.750 (epoch 6, +97%)" in finding.evidence
    assert any("train.epochs=2" in fix for fix in finding.fixes)
    assert any("method.name=bitfit" in fix for fix in finding.fixes)
    frozen = diagnose.overfitting(OVERFIT, best_epoch=2, trains_body=False)  # bitfit would train more, not less
    assert not any("bitfit" in fix for fix in frozen.fixes) and any("frozen" in fix for fix in frozen.fixes)
    assert diagnose.overfitting(HEALTHY) is None
    # a validation loss that rises while the training loss rises too is not overfitting
    assert diagnose.overfitting(_history([0.3, 0.4, 0.5, 0.6], [0.3, 0.4, 0.5, 0.6])) is None
    assert diagnose.overfitting(OVERFIT[:2]) is None  # too short to say


def test_a_validation_loss_of_zero_is_not_overfitting_nor_a_division_by_zero():
    # easy data: the validation loss reaches 0 (written -0.0) and stays there while the training loss falls
    flat = _history([0.5, 0.2, 0.1, 0.05, 0.02], [0.3, -0.0, -0.0, 0.0, 0.0001])
    assert diagnose.overfitting(flat, best_epoch=2) is None
    rising = _history([0.5, 0.2, 0.1, 0.05, 0.02], [0.3, 0.0, 0.1, 0.3, 0.5])
    finding = diagnose.overfitting(rising, best_epoch=2)
    assert "rose from 0.000 (epoch 2) to 0.500 (epoch 5) while" in finding.evidence
    # a loss near 0 rising by less than 0.01 is no evidence; its rise is not given as a percentage of nearly 0
    assert diagnose.overfitting(_history([0.5, 0.2, 0.1, 0.05, 0.02], [0.3, 1e-8, 0.001, 0.002, 0.008])) is None
    near_zero = diagnose.overfitting(_history([0.5, 0.2, 0.1, 0.05, 0.02], [0.3, 1e-8, 0.01, 0.02, 0.04]))
    assert "to 0.040 (epoch 5) while" in near_zero.evidence and "%" not in near_zero.evidence


def test_the_fixes_name_settings_of_the_model_that_read_the_inputs():
    from strop.report import findings

    stuck = _history([0.70, 0.69, 0.69], [0.70, 0.69, 0.69])
    scarce = {"a": {"train": 200, "validation": 50}, "b": {"train": 8, "validation": 2}}
    task = TASKS.get("text_classification")

    def fixes(inputs, history, method="full"):
        data = {**_analysis(history)["data"], "classes": scarce, "input": inputs}
        found = findings(_analysis(history, data=data), task, {"train": {"imbalance": "auto"}, "method": {"name": method}})
        return " ".join(fix for finding in found for fix in finding.fixes)

    text, vector = fixes("text", stuck), fixes("vector", stuck)  # underfitting and few examples
    assert "model.max_length" in text and "larger pretrained model" in text and "method.name=fewshot" in text
    assert "model.hidden=" in vector
    for words in ("max_length", "pretrained", "bitfit", "fewshot"):  # an MLP has none of them
        assert words not in vector
    assert "method.name=fewshot" not in fixes("text", stuck, method="fewshot")  # it ran already
    overfit_vector = fixes("vector", OVERFIT)
    assert "model.hidden=[32]" in overfit_vector and "freeze_layers" not in overfit_vector


def _analysis(history, **changes):
    """What `findings` reads, for a healthy two-class run unless `changes` say otherwise."""
    analysis = {"history": history, "summary": {"best_epoch": 4, "metric": "accuracy"},
                "data": {"class_kind": "class", "train_examples": 400, "validation_examples": 100,
                         "classes": {"a": {"train": 200, "validation": 50}, "b": {"train": 200, "validation": 50}},
                         "duplicates": {"conflicting": 0}, "overlap": {"count": 0}},
                "confident_errors": 1, "decisions": 100, "calibration": {"ece": 0.03}, "seeds": {}}
    analysis.update(changes)
    return analysis


def _names(analysis, config=None):
    from strop.report import findings

    return [f.name for f in findings(analysis, TASKS.get("text_classification"), config or {"train": {}})]


def test_the_diagnosis_of_a_healthy_run_is_empty_and_each_rule_fires_on_its_problem():
    assert _names(_analysis(HEALTHY)) == []
    assert _names(_analysis(OVERFIT)) == ["overfitting"]
    stuck = _history([0.70, 0.69, 0.69], [0.70, 0.69, 0.69])  # ln 2 = 0.693: two balanced classes, nothing learned
    assert _names(_analysis(stuck)) == ["underfitting"]
    scarce = {"a": {"train": 200, "validation": 50}, "b": {"train": 8, "validation": 2}}
    data = {**_analysis(HEALTHY)["data"], "classes": scarce}
    learned = _history([0.2, 0.1, 0.05], [0.2, 0.15, 0.14])  # below the 0.17 of predicting 200:8 frequencies
    assert _names(_analysis(learned, data=data)) == ["few_examples", "imbalance"]
    assert _names(_analysis(learned, data=data), {"train": {"imbalance": "auto"}}) == ["few_examples"]
    recalled = {"a": {"recall": 0.9, "support": 50}, "b": {"recall": 1.0, "support": 2}}  # b not missed here
    assert _names(_analysis(learned, data=data, metrics={"per_class": recalled})) == ["few_examples"]
    # a training loss of 0.21 is above the 0.17 of predicting 200:8 frequencies, but class weights (auto) make the
    # loss the run minimises that of balanced classes, whose constant guess costs ln 2
    assert _names(_analysis(HEALTHY, data=data), {"train": {"imbalance": "none"}}) == [
        "underfitting", "few_examples", "imbalance"]
    assert _names(_analysis(HEALTHY, data=data), {"train": {"imbalance": "auto"}}) == ["few_examples"]
    assert _names(_analysis(HEALTHY, confident_errors=9)) == ["label_noise"]
    conflicting = {**_analysis(HEALTHY)["data"], "duplicates": {"conflicting": 2}}
    assert _names(_analysis(HEALTHY, data=conflicting)) == ["label_noise"]
    assert _names(_analysis(HEALTHY, seeds={"1": 0.91, "2": 0.84, "3": 0.88})) == ["instability"]
    assert _names(_analysis(HEALTHY, seeds={"1": 0.91, "2": 0.905, "3": 0.90})) == []
    leaked = {**_analysis(HEALTHY)["data"], "overlap": {"count": 7}}
    assert _names(_analysis(HEALTHY, data=leaked)) == ["leakage"]
    over = {"ece": 0.2, "decisions": 100, "confidence": 0.95, "accuracy": 0.75}
    assert _names(_analysis(HEALTHY, calibration=over)) == ["calibration"]
    assert _names(_analysis(HEALTHY, calibration={**over, "decisions": 1})) == []  # one decision measures nothing


def test_the_fixes_fit_the_direction_of_miscalibration_and_the_task():
    from strop.report import findings

    def found(task, **changes):
        return {f.name: f for f in findings(_analysis(HEALTHY, **changes), TASKS.get(task), {"train": {}})}

    over = {"ece": 0.2, "decisions": 100, "confidence": 0.95, "accuracy": 0.75}
    fixes = " ".join(found("text_classification", calibration=over)["calibration"].fixes)
    assert "overconfident" in found("text_classification", calibration=over)["calibration"].evidence
    assert "train.label_smoothing=0.1" in fixes
    under = found("text_classification", calibration={**over, "confidence": 0.7, "accuracy": 0.97})["calibration"]
    assert "underconfident" in under.evidence and "label_smoothing" not in " ".join(under.fixes)
    # a regression's repeats and outliers are noise in amounts, not wrong labels; multi-label reads no smoothing
    conflicting = {**_analysis(HEALTHY)["data"], "duplicates": {"conflicting": 2}}
    assert "label_noise" not in found("regression", confident_errors=9, data=conflicting)
    assert "label_smoothing" not in " ".join(found("multilabel_classification", confident_errors=9)["label_noise"].fixes)


def test_the_report_page_says_the_diagnosis_in_words(runs):
    from strop.report_html import render

    analysis = strop.report.analyse(runs("text_classification"))
    page = render({**analysis, "history": OVERFIT, "findings": [diagnose.overfitting(OVERFIT, 2)]})
    assert 'data-finding="overfitting"' in page and "memorises the training examples" in page
    healthy = render({**analysis, "findings": []})
    assert "No problem found" in healthy and "data-finding" not in healthy


def test_expected_calibration_error_of_known_decisions():
    from strop.report import calibration_bins

    # 10 decisions at 0.95 confidence, 5 right: |0.5 - 0.95| = 0.45; 10 at 0.55, all right: 0.45 -> ECE 0.45
    confidence = np.array([0.95] * 10 + [0.55] * 10)
    correct = np.array([True] * 5 + [False] * 5 + [True] * 10)
    result = calibration_bins(confidence, correct)
    assert result["ece"] == pytest.approx(0.45)
    assert sum(b["n"] for b in result["bins"]) == 20
    assert calibration_bins(np.array([0.8, 0.8]), np.array([True, False]))["ece"] == pytest.approx(0.3)


def test_data_summary_finds_duplicates_conflicts_and_overlap():
    from strop.report import data_summary
    from strop.tasks import Examples

    task = TASKS.get("text_classification")(labels=("neg", "pos"))
    train = Examples(["Good film", "good  film", "bad film", "Bad Film", "fine"], ["pos", "pos", "neg", "pos", "pos"], "t")
    validation = Examples(["GOOD film", "new text"], ["pos", "neg"], "v")
    summary = data_summary(task, train, validation)
    assert summary["duplicates"]["train"] == 2 and summary["duplicates"]["distinct"] == 2
    assert summary["duplicates"]["conflicting"] == 1
    assert summary["duplicates"]["examples"][0]["targets"] == ["neg", "pos"]
    assert summary["overlap"] == {"count": 1, "examples": ["GOOD film"]}
    assert summary["classes"] == {"neg": {"train": 1, "validation": 1}, "pos": {"train": 4, "validation": 1}}
    assert summary["lengths"]["train"]["max"] == 2


def test_a_fit_says_before_it_trains_what_its_validation_shares_with_training(tiny_overrides, tmp_path, capsys):
    from conftest import write_csv

    train = write_csv(tmp_path / "train.csv", [(f"film number {i} was good", "positive") for i in range(8)]
                      + [(f"film number {i} was bad", "negative") for i in range(8)] + [("a film", "negative")]
                      + [("A  film", "positive")])
    dev = write_csv(tmp_path / "dev.csv", [("FILM number 3 was good", "positive"), ("new and bad", "negative")])
    strop.fit(None, tiny_overrides + [f"data.train={train}", f"data.validation={dev}", "train.epochs=1"])
    said = capsys.readouterr().err
    assert "data: 1 of 2 validation inputs also occur in the training data (e.g. 'FILM number 3 was good')" in said
    assert "data.train: 1 input(s) occur with different targets (e.g. 'a film' as 'negative' and 'positive')" in said


def test_instability_is_read_from_runs_of_the_same_config_with_other_seeds(tmp_path):
    from strop.report import seed_scores

    config = {"train": {"seed": 1, "epochs": 3}, "optim": {"lr": 1e-4}, "output_dir": "x"}
    for seed, score, lr in ((1, 0.9, 1e-4), (2, 0.8, 1e-4), (3, 0.5, 1e-3)):  # seed 3 has another rate
        folder = tmp_path / f"run-{seed}"
        folder.mkdir()
        (folder / "config.yaml").write_text(json.dumps({**config, "train": {"seed": seed, "epochs": 3},
                                                        "optim": {"lr": lr}, "output_dir": str(folder)}))
        (folder / "summary.json").write_text(json.dumps({"validation": {"accuracy": score}}))
    assert seed_scores(tmp_path / "run-1", config, "accuracy") == {"1": 0.9, "2": 0.8}


def test_the_underfitting_baseline_is_the_loss_the_run_minimises():
    from strop.report import chance_loss

    data = {"class_kind": "class", "classes": {"a": {"train": 90}, "b": {"train": 10}}}
    frequencies = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.325: a constant 90/10 prediction
    assert chance_loss("text_classification", data, {"train": {"imbalance": "none"}}) == pytest.approx(frequencies)
    for setting in ("weights", "auto", "sample"):  # balanced by the loss or the sampling: the uniform guess
        assert chance_loss("text_classification", data, {"train": {"imbalance": setting}}) == pytest.approx(math.log(2))
    assert chance_loss("text_classification", data, {"train": {"imbalance": "focal"}}) is None


def test_labels_the_chart_font_lacks_do_not_warn_once_a_glyph():
    import warnings

    from strop.report_html import new_figure, png_image

    figure, axes = new_figure()
    axes.bar(["食べ物", "спорт"], [1, 2])  # the bundled font has Cyrillic, not CJK
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert png_image(figure, "chart").startswith('<img alt="chart" src="data:image/png;base64,')
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_few_examples_advise_fewer_parameters_only_to_a_run_that_trains_many():
    from strop.report import findings

    scarce = {"a": {"train": 200, "validation": 50}, "b": {"train": 8, "validation": 2}}
    analysis = _analysis(_history([0.2, 0.1, 0.05], [0.2, 0.15, 0.14]),
                         data={**_analysis(HEALTHY)["data"], "classes": scarce})
    task = TASKS.get("text_classification")

    def advice(method):
        config = {"train": {"imbalance": "auto"}, "method": {"name": method}}
        return " ".join(" ".join(f.fixes) for f in findings(analysis, task, config) if f.name == "few_examples")

    full = advice("full")
    assert "method.name=bitfit or freeze" in full and "method.name=fewshot (contrastive pairs" in full
    for method in ("fewshot", "freeze"):  # they train few parameters already: that advice was a contradiction
        assert "bitfit or freeze" not in advice(method) and "Label more examples" in advice(method)
    assert "method.name=fewshot (contrastive" not in advice("fewshot")
    # with more classes than its contrastive groups hold, method.name=auto chooses full: not advised either
    many = TASKS.get("text_classification")(tuple(f"c{i}" for i in range(10)))
    config = {"train": {"imbalance": "auto"}, "method": {"name": "full"}}
    fixes = " ".join(" ".join(f.fixes) for f in findings(analysis, many, config) if f.name == "few_examples")
    assert "Label more examples" in fixes and "method.name=fewshot" not in fixes


def test_imbalance_is_not_said_to_miss_rare_classes_that_validation_recalls_as_well_as_the_others():
    from strop.evaluate import diagnose

    counts = {"common": 300, "usual": 250, "rare": 20, "scarce": 30}

    def per_class(rare, scarce):
        return {"common": {"recall": 0.9, "support": 60}, "usual": {"recall": 0.8, "support": 50},
                "rare": {"recall": rare, "support": 4}, "scarce": {"recall": scarce, "support": 6}}

    assert diagnose.imbalance(counts, "none", per_class(1.0, 0.85)) is None  # both rare at or above the others' 0.85
    missed = diagnose.imbalance(counts, "none", per_class(0.25, 1.0))
    assert "(rare, scarce) are recalled 0.62 of the time on average (the lowest 0.25), the others 0.85" in missed.evidence
    unscored = {**per_class(1.0, 1.0), "rare": {"recall": 0.0, "support": 0}}  # not in validation: not measured
    assert diagnose.imbalance(counts, "none", unscored).evidence.endswith("the rare classes tend to be missed.")
    assert diagnose.imbalance(counts, "none").name == "imbalance"  # no validation scores: said as before
    assert diagnose.imbalance(counts, "auto", per_class(0.25, 1.0)) is None  # something was done about it


def test_a_tiny_score_reads_as_the_terminal_shows_it_in_the_report_and_the_compression_table():
    """An rmse of 3.2e-06 (targets in millionths) was 0.0000 in report.html and compress.md, though the terminal
    said 3.2e-06."""
    from strop.compress import table_text
    from strop.evaluate.diagnose import instability
    from strop.report_html import fmt, html_table

    assert fmt(3.2e-6) == "3.2e-06" and fmt(-0.004) == "-0.004" and fmt(0.5) == "0.5000" and fmt(0.0) == "0.0000"
    assert fmt(7.25, 1) == "7.2" and fmt(123456.0) == "1.235e+05"  # other precisions as asked; large as before
    assert '<td class="num">3.2e-06</td>' in html_table(["metric", "value"], [["rmse", 3.2e-6]])
    row = {"form": "fp32", "runtime": "torch", "size_mb": 1.0, "parameters": 10, "ms_per_example_batch1": 1.0,
           "ms_per_example_batch32": 0.1, "speedup_batch1": 1.0, "rmse": 3.2e-6, "loss": 1e-11}
    assert table_text([row], ["rmse", "loss"]).endswith("| 3.2e-06 | 1e-11 |")
    unstable = instability({"1": 1e-6, "2": 5e-6, "3": 9e-6}, "rmse")
    assert unstable is not None and "from 1e-06 to 9e-06 (standard deviation 4e-06" in unstable.evidence
