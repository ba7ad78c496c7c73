"""strop curve: the power-law fits recover known parameters; the forecast of a bounded score is the mean of the
saturating and the ceiling-free laws; its answers; nested, stratified subsets; the command end to end
(curve.json, curve.png)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from conftest import write_csv
from strop.curve import (LARGEST_SIZE, analyse, describe, draw, examples_for, fit_ceiling_free, fit_power_law,
                         forecast, learning_curve, nested_subsets, parameters_of, power_law, size_for)
from strop.errors import StropError

TRUE = (0.92, 1.5, 0.6)  # a, b, c
SIZES = [20, 40, 80, 160, 320, 640]


def _synthetic(params, noise=0.003, seeds=3, seed=0):
    rng = np.random.default_rng(seed)
    n = np.repeat(SIZES, seeds)
    return n, power_law(n, *params) + rng.normal(0, noise, len(n))


def test_fit_recovers_known_parameters_from_synthetic_points():
    a, b, c = fit_power_law(*_synthetic(TRUE), bounded=True)
    assert a == pytest.approx(TRUE[0], abs=0.01) and c == pytest.approx(TRUE[2], abs=0.1)
    assert b == pytest.approx(TRUE[1], rel=0.3)


def test_answers_and_their_intervals_hold_the_truth():
    n, y = _synthetic(TRUE)
    fit = analyse(n, y, target=0.85, draws=200)  # not bounded: the saturating law alone is the forecast
    true_needed = examples_for(0.85, *TRUE)  # (1.5 / 0.07) ** (1 / 0.6), about 165
    assert fit["target"]["examples"] == pytest.approx(true_needed, rel=0.1)
    true_twice = power_law(1280, *TRUE)
    twice = fit["twice_the_data"]
    assert twice["size"] == 1280 and twice["score"] == pytest.approx(true_twice, abs=0.005)
    assert twice["gain"] == pytest.approx(true_twice - power_law(640, *TRUE), abs=0.005) and twice["gain"] > 0
    low, high = twice["score_interval"]
    assert 0 < high - low < 0.05


def test_the_intervals_mostly_hold_the_truth():
    held = {"twice": 0, "examples": 0, "a": 0}
    for seed in range(12):
        fit = analyse(*_synthetic(TRUE, seed=seed), target=0.85, draws=100)
        held["twice"] += _inside(power_law(1280, *TRUE), fit["twice_the_data"]["score_interval"])
        held["examples"] += _inside(examples_for(0.85, *TRUE), fit["target"]["examples_interval"])
        held["a"] += _inside(TRUE[0], fit["parameter_intervals"]["a"])
    assert all(count >= 8 for count in held.values()), held  # 95% intervals; measured about 88% over 40 sets


def test_no_answer_lies_outside_its_own_interval_where_the_fit_sits_at_a_bound():
    # a loss falling towards 0: the fitted level sits at its bound 0, above which every resampled fit's lies
    # (draw 1 of this noise put a at 2.2e-21 with its percentile interval [1.6e-20, 0.037])
    rng = np.random.default_rng(1)
    n = np.repeat([20, 40, 80, 160, 320], 3)
    loss = np.clip(0.3 * n ** -0.3 + rng.normal(0, 0.01, len(n)), 0, None)
    result = analyse(n, loss, minimised=True, score_range=(0, math.inf), draws=200)
    answers = [(result["parameters"][k], result["parameter_intervals"][k]) for k in "abc"]
    answers += [(result["asymptote"], result["asymptote_interval"]),
                (result["twice_the_data"]["score"], result["twice_the_data"]["score_interval"]),
                (result["twice_the_data"]["gain"], result["twice_the_data"]["gain_interval"])]
    assert result["parameters"]["a"] < 1e-12
    assert all(low <= value <= high for value, (low, high) in answers)


def test_a_bounded_score_is_forecast_as_the_mean_of_the_two_laws():
    n, y = _synthetic(TRUE)
    fit = analyse(n, y, bounded=True, target=0.85, draws=100)
    saturating, (b_free, c_free) = fit_power_law(n, y, bounded=True), fit_ceiling_free(n, y)
    assert (fit["parameters"]["a"], fit["ceiling_free"]["b"], fit["ceiling_free"]["c"]) == pytest.approx(
        (saturating[0], b_free, c_free))
    at = lambda size: (power_law(size, *saturating) + power_law(size, 1.0, b_free, c_free)) / 2  # noqa: E731
    twice = fit["twice_the_data"]
    assert twice["score"] == pytest.approx(at(1280)) and twice["gain"] == pytest.approx(at(1280) - at(640))
    # the ceiling-free law runs above the saturating one far out: the forecast lies strictly between them
    assert power_law(1280, *saturating) < twice["score"] < power_law(1280, 1.0, b_free, c_free)
    # where it gets: (a + 1) / 2 less what the ceiling-free law still lacks at the largest size it answers for
    assert fit["asymptote"] == pytest.approx(at(LARGEST_SIZE)) and at(LARGEST_SIZE) < (saturating[0] + 1) / 2
    assert fit["asymptote"] == pytest.approx((saturating[0] + 1) / 2, abs=1e-4)  # c' = 0.4: 1 - b' n^-c' is near 1
    params = [*saturating, b_free, c_free]
    assert at(fit["target"]["examples"]) == pytest.approx(0.85, abs=1e-9)  # the size found reaches the target
    assert math.isinf(size_for(0.99, params)) and forecast(10**9, params) < 0.99  # above (a + 1) / 2: never


def test_where_the_score_tends_to_1_both_laws_and_their_mean_recover_it():
    truth = (1.0, 1.2, 0.4)
    fit = analyse(*_synthetic(truth), bounded=True, target=0.9, draws=100)
    assert fit["ceiling_free"]["c"] == pytest.approx(0.4, abs=0.05)
    assert fit["twice_the_data"]["score"] == pytest.approx(power_law(1280, *truth), abs=0.005)
    assert fit["target"]["examples"] == pytest.approx(examples_for(0.9, *truth), rel=0.15)


def _inside(value, bounds):
    return bounds[0] <= value <= bounds[1]


def test_a_loss_is_fitted_falling_and_an_unreachable_target_says_so():
    n = np.repeat(SIZES, 2)
    loss = 0.3 + 2.0 * n ** -0.5
    fit = analyse(n, loss, minimised=True, target=0.5, draws=50)
    assert fit["asymptote"] == pytest.approx(0.3, abs=0.01)
    assert fit["twice_the_data"]["gain"] < 0  # twice the data: a lower loss
    assert fit["target"]["examples"] == pytest.approx((2.0 / 0.2) ** 2, rel=0.05)
    # shown on the loss's own scale: loss(n) = a + b n^-c with the law's a 0.3, b 2, c 0.5
    assert "a + b * n^(-c)" in fit["model"]
    assert [fit["parameters"][k] for k in "abc"] == pytest.approx([0.3, 2.0, 0.5], rel=0.02)
    low, high = fit["parameter_intervals"]["a"]
    assert low <= 0.3 <= high
    assert forecast(1000.0, parameters_of(fit)) == pytest.approx(-(0.3 + 2.0 * 1000 ** -0.5), rel=1e-3)
    old_file = fit | {"model": "score(n) = a - b * n^(-c) fitted to -score (lower is better)",
                      "parameters": fit["parameters"] | {"a": -fit["parameters"]["a"]}}  # as written before
    assert parameters_of(old_file) == pytest.approx(parameters_of(fit))
    assert math.isinf(examples_for(0.95, *TRUE))  # above the asymptote: never
    with pytest.raises(StropError, match="three different training sizes"):
        fit_power_law([10, 10, 20, 20], [0.5, 0.5, 0.6, 0.6])


def test_a_law_rising_too_slowly_to_get_there_says_never_instead_of_overflowing():
    slow = (0.96, 1.0, 1e-3)  # c at its lower bound: 0.95 only at (1 / 0.01) ** 1000 examples, past any float
    assert math.isinf(examples_for(0.95, *slow))
    assert math.isinf(size_for(0.97, (*slow, 0.5, 1e-3)))  # below the limit (0.98), but only past LARGEST_SIZE
    assert examples_for(0.5, 0.96, 0.0, 0.5) == 0.0  # a flat curve at 0.96 is there from the start
    # a real curve (an MLP on 60 rows of a vector data set, 3 seeds) whose bootstrap draws include such laws
    n = np.tile([6, 12, 18, 30, 42, 60], 3)
    accuracy = [0.73, 0.91, 0.89, 0.91, 0.92, 0.94, 0.93, 0.94, 0.97, 0.95, 0.95, 0.96,
                0.95, 0.95, 0.94, 0.95, 0.95, 0.94]
    fit = analyse(n, accuracy, bounded=True, target=0.95)
    target = fit["target"]
    assert 0 < target["reachable_share"] < 1 and math.isinf(target["examples_interval"][1])
    assert forecast(target["examples"], parameters_of(fit)) == pytest.approx(0.95, abs=1e-9)


def test_three_points_fit_without_scipy_warning_of_a_covariance_it_cannot_estimate():
    import warnings

    from scipy.optimize import OptimizeWarning

    with warnings.catch_warnings():  # three sizes, one seed: scipy cannot estimate the covariance (unused)
        warnings.simplefilter("error", OptimizeWarning)
        fit = analyse([12, 24, 48], [0.9125, 0.9187, 0.95], bounded=True, draws=20)
    assert fit["score_at_largest"] == pytest.approx(0.95, abs=0.02)


def test_forecast_scores_are_cut_to_the_values_the_metric_can_take():
    n = np.repeat(SIZES, 2)
    error = np.maximum(0.0, -0.2 + 2.0 * n ** -0.3)  # an error whose law, fitted, levels off below 0
    free = analyse(n, error, minimised=True, draws=50)
    assert free["asymptote"] < 0 and free["asymptote_interval"][0] < 0  # the law alone
    fit = analyse(n, error, minimised=True, draws=50, score_range=(0.0, math.inf))
    assert fit["parameters"]["a"] >= 0.0 and fit["asymptote"] >= 0.0 and fit["asymptote_interval"][0] >= 0.0
    assert fit["twice_the_data"]["score"] >= 0.0 and fit["twice_the_data"]["score_interval"][0] >= 0.0
    assert fit["twice_the_data"]["gain"] < 0  # a change (lower is better), not a score
    assert fit["lower_is_better"] and not analyse(n, 1 - error, draws=20)["lower_is_better"]


def test_the_plots_band_at_twice_the_data_is_curve_jsons_interval():
    from matplotlib.figure import Figure

    n = np.repeat(SIZES, 2)
    rng = np.random.default_rng(3)
    score = 0.9 - 0.8 * n ** -0.4 + rng.normal(0, 0.01, len(n))
    points = [{"examples": int(size), "scores": {"accuracy": float(s)}} for size, s in zip(n, score)]
    result = {"metric": "accuracy", "points": points, "fit": analyse(n, score, draws=60, seed=7)}
    axes = Figure().subplots()
    draw(result, axes)
    band = axes.collections[0].get_paths()[0].vertices  # the band's outline: its upper and lower edges
    twice = result["fit"]["twice_the_data"]
    at_twice = band[np.isclose(band[:, 0], band[:, 0][np.argmin(abs(band[:, 0] - twice["size"]))])][:, 1]
    assert [min(at_twice), max(at_twice)] == pytest.approx(twice["score_interval"], abs=0.001)  # grid 1% off


def test_the_plot_keeps_the_band_and_the_curve_within_the_metric_range():
    from matplotlib.figure import Figure

    n = np.repeat(SIZES, 2)
    error = np.maximum(0.0, -0.2 + 2.0 * n ** -0.3)  # fitted, the law and its band fall below 0
    points = [{"examples": int(size), "scores": {"rmse": float(e)}} for size, e in zip(n, error)]
    result = {"metric": "rmse", "points": points,
              "fit": analyse(n, error, minimised=True, draws=50, score_range=(0.0, math.inf))}
    axes = Figure().subplots()
    draw(result, axes)
    band_lows = axes.collections[0].get_paths()[0].vertices[:, 1]
    assert band_lows.min() >= 0.0  # within the range, where the unbounded law's band goes below it
    assert min(line.get_ydata().min() for line in axes.lines) >= 0.0
    json.dumps(result["fit"])  # the range is stored as JSON can hold it: null for the unbounded side
    assert result["fit"]["score_range"] == [0.0, None]
    axes.figure.canvas.draw()  # the size axis in plain numbers, not math text (fonts a slim install lacks)
    labels = [t.get_text() for t in axes.get_xticklabels() + axes.get_xminorticklabels() if t.get_text()]
    assert labels and not any("$" in label for label in labels) and "100" in labels


def test_subsets_are_nested_stratified_and_of_the_asked_sizes():
    targets = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    subsets = nested_subsets(targets, [10, 30, 100], seed=0)
    assert [len(s) for s in subsets] == [10, 30, 100]
    assert set(subsets[0]) <= set(subsets[1]) <= set(subsets[2])
    assert Counter(targets[i] for i in subsets[0]) == {"a": 6, "b": 3, "c": 1}
    assert Counter(targets[i] for i in subsets[1]) == {"a": 18, "b": 9, "c": 3}
    assert not np.array_equal(subsets[0], nested_subsets(targets, [10], seed=1)[0])
    assert Counter(targets[i] for i in nested_subsets(targets, [3], seed=0)[0]) == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(StropError, match="fewer than the 3 classes"):
        nested_subsets(targets, [2], seed=0)
    # classes of 2, 19 and 12: by largest remainders alone, 23 examples took 2 of a and 24 took 1
    small = ["a"] * 2 + ["b"] * 19 + ["c"] * 12
    twenty_three, twenty_four = nested_subsets(small, [23, 24], seed=0)
    assert set(twenty_three) <= set(twenty_four)
    rng = np.random.default_rng(0)
    for _ in range(300):  # any mix of classes, any sizes: each subset holds the smaller ones, at its size
        mix = [f"c{k}" for k, n in enumerate(rng.integers(1, 30, rng.integers(2, 6))) for _ in range(n)]
        sizes = sorted(set(rng.integers(len(set(mix)), len(mix) + 1, 4).tolist()))
        subsets = nested_subsets(mix, sizes, seed=int(rng.integers(100)))
        assert [len(s) for s in subsets] == sizes
        assert all(set(a) <= set(b) for a, b in zip(subsets, subsets[1:]))


def test_curve_command_writes_json_and_plot(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith(("output_dir", "data.validation", "train.epochs",
                                                                "train.quiet"))]
    out = tmp_path / "curve"
    done = subprocess.run([sys.executable, "-m", "strop", "curve", *overrides, "train.epochs=2", "--fractions",
                           "0.25,0.5,1", "--seeds", "1", "--target", "0.9", "--output", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "curve.json").read_text())
    assert result["pool_examples"] == 144 and result["sizes"] == [36, 72, 144]  # 10% of 160 held out
    assert result["classes"] == 2  # the report's advice weighs it (few-shot is not for many classes)
    assert [p["examples"] for p in result["points"]] == [36, 72, 144]
    assert {"parameters", "ceiling_free", "twice_the_data", "target"} <= set(result["fit"])  # accuracy: both laws
    assert (out / "curve.png").stat().st_size > 1000 and not (out / "runs").exists()
    assert "twice the data" in done.stdout and "levels off" in done.stdout
    # Its report: the curve as an image, a row per size, one answer; rebuilt alike by strop report.
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and 'id="points"' in page
    assert all(f"<tr><td>{size}</td>" in page for size in (36, 72, 144))
    assert "mean of a - b * n^(-c) and 1 - b&#x27; * n^(-c&#x27;)" in page and "c&#x27;</td>" in page
    assert sum(page.count(f'data-finding="{name}"') for name in ("more_data_helps", "levels_off", "unknown")) == 1
    (out / "report.html").unlink()
    assert subprocess.run([sys.executable, "-m", "strop", "report", str(out), "-q"]).returncode == 0
    assert (out / "report.html").read_text() == page
    # asked again, for another metric and target, from the points it measured: nothing trains
    from strop.cli import main

    assert main(["curve", "--refit", str(out), "--metric", "loss", "--target", "0.5", "-q"]) == 0
    again = json.loads((out / "curve.json").read_text())
    assert again["points"] == result["points"] and again["metric"] == "loss" and again["fit"]["lower_is_better"]
    assert again["fit"]["target"]["score"] == 0.5 and "loss" in (out / "report.html").read_text()
    assert main(["curve", "--refit", str(out), "--target", "0.9", "-q"]) == 0  # no --metric: the lead one again
    assert json.loads((out / "curve.json").read_text())["metric"] == "accuracy"
    assert main(["curve", "--refit", str(out), "--metric", "rmse"]) == 2  # not measured by a classifier's runs
    assert main(["curve", "--refit", str(out), "train.epochs=3"]) == 2
    assert main(["curve", "--refit", str(tmp_path / "none")]) == 2
    # what only a training curve reads is refused, not ignored (--output: the answer would be looked for elsewhere)
    assert main(["curve", "--refit", str(out), "--output", str(tmp_path / "elsewhere"), "--seeds", "2"]) == 2
    assert not (tmp_path / "elsewhere").exists()


def test_a_target_the_metric_cannot_take_is_refused_before_any_run(tiny_overrides, tmp_path):
    from strop.curve import learning_curve

    out = tmp_path / "curve"
    with pytest.raises(StropError, match=r"--target 2 is a value accuracy cannot take \(it lies in \[0, 1\]\)"):
        learning_curve(None, tiny_overrides, target=2.0, output=out, quiet=True)
    assert not out.exists()
    with pytest.raises(StropError, match=r"--target -0.1 is a value loss cannot take"):
        learning_curve(None, tiny_overrides, target=-0.1, metric="loss", output=out, quiet=True)


def test_a_curve_without_training_data_names_its_own_command(tiny_model_dir, tmp_path):
    from strop.curve import learning_curve

    with pytest.raises(StropError, match=r"data.train is not set: give the training file, e.g. strop curve "
                                         r"data.train=reviews.csv"):
        learning_curve(None, [f"model.name={tiny_model_dir}"], output=tmp_path / "curve", quiet=True)
    assert not (tmp_path / "curve").exists()


def test_fractions_that_give_fewer_than_three_sizes_are_refused_before_any_run(tiny_overrides, tmp_path, monkeypatch):
    from strop import curve

    monkeypatch.setattr("strop.cv.fit_and_score", lambda *a, **k: pytest.fail("a run was trained"))
    out = tmp_path / "curve"
    with pytest.raises(StropError, match=r"--fractions 0.5,0.501,0.502 of the 160 training examples give 1 "
                                         r"different size \(80, 80, 80\)"):
        curve.learning_curve(None, tiny_overrides, fractions=(0.5, 0.501, 0.502), output=out, quiet=True)
    with pytest.raises(StropError, match="at least three training sizes; --fractions gives 2"):
        curve.learning_curve(None, tiny_overrides, fractions=(0.5, 1.0), output=out, quiet=True)
    assert not out.exists()
    two = write_csv(tmp_path / "two.csv", [("a good film", "positive"), ("a bad film", "negative")])
    with pytest.raises(StropError, match=r"needs at least three training sizes, and 2 training examples give at "
                                         r"most 2: add examples$"):  # not 'give fractions further apart'
        curve.learning_curve(None, [*tiny_overrides, f"data.train={two}"], fractions=(0.5, 0.75, 1.0), output=out,
                             quiet=True)
    assert not out.exists()


def test_the_terminal_answer_reads_right_for_an_error_in_small_units():
    n = np.repeat(SIZES, 2)
    error = 1e-4 * (0.5 + 2.0 * n ** -0.5) * np.tile([0.99, 1.01], len(SIZES))  # levels off at 5e-5
    fit = analyse(n, error, minimised=True, draws=50, target=1e-5, score_range=(0.0, math.inf))
    text = describe({"metric": "rmse", "seeds": [1, 2], "sizes": list(SIZES), "fit": fit,
                     "points": [{"examples": int(size), "scores": {"rmse": float(e)}} for size, e in zip(n, error)]})
    assert "not reached by the fitted curve (it levels off at 5e-05)" in text
    assert "0.0000" not in text  # small numbers in significant digits (the seeds agree: no spread shown as 0)


def test_an_interval_over_draws_that_never_reach_the_target_ends_at_infinity():
    from strop.curve import interval

    low, high = interval([500.0] * 90 + [math.inf] * 10)
    assert low == 500.0 and math.isinf(high)  # not nan: the report says "never"


def test_a_target_reached_below_the_fewest_examples_measured_is_not_extrapolated():
    from strop.curve import describe

    sizes = [20, 40, 80, 160]
    perfect = analyse(np.repeat(sizes, 2), [1.0] * 8, bounded=True, target=0.99, draws=50)  # a flat, perfect curve
    assert perfect["target"]["below_measured"] and perfect["target"]["examples"] < 20  # the fit's own answer
    result = {"metric": "accuracy", "seeds": [1, 2], "sizes": sizes, "fit": perfect,
              "points": [{"examples": n, "scores": {"accuracy": 1.0}} for n in np.repeat(sizes, 2).tolist()]}
    assert "accuracy 0.99: reached already by the fewest examples measured (20)" in describe(result)
    rising = analyse(np.repeat(SIZES, 2), power_law(np.repeat(SIZES, 2), *TRUE), target=0.85, draws=50)
    assert not rising["target"]["below_measured"]  # reached within or beyond the measured sizes


@pytest.mark.parametrize("command", ["cv", "curve"])
def test_an_interrupted_study_says_what_it_kept_and_continues_with_resume(command, tiny_overrides, tmp_path,
                                                                          monkeypatch, capsys):
    from strop import curve, cv

    calls, interrupt = [], [True]

    def one_run_then_ctrl_c(cfg, train_file, score_file, seed, run_dir, keep_runs, **_):
        calls.append(run_dir.name)
        if len(calls) == 2 and interrupt[0]:
            raise KeyboardInterrupt
        run_dir.mkdir(parents=True)  # a run's files, which no --keep-runs asked for
        return {"accuracy": 0.5 + 0.1 * len(calls), "macro_f1": 0.5, "loss": 0.7}, 72

    def study(*extra, folds=2):
        if command == "cv":
            return cv.cross_validate(None, [*tiny_overrides, *extra], folds=folds, seeds=1, output=out, quiet=True)
        return curve.learning_curve(None, [*tiny_overrides, *extra], fractions=(0.3, 0.6, 1.0), seeds=1,
                                    output=out, quiet=True)

    monkeypatch.setattr("strop.cv.fit_and_score", one_run_then_ctrl_c)
    out = tmp_path / command
    with pytest.raises(KeyboardInterrupt):
        study()
    said = capsys.readouterr().err
    assert f"strop {command} stopped: the 1 run(s) that finished are recorded in {out}" in said
    assert f"run the same command with --output {out} train.resume=true" in said  # a default folder is named too
    assert not (out / "runs").exists() and (out / f"{command}.json").is_file()
    from strop.cli import main

    assert main(["report", str(out)]) == 2  # unfinished: its report says how to continue it
    assert f"with --output {out} train.resume=true" in capsys.readouterr().err
    with pytest.raises(StropError, match="train.resume=true continues an interrupted strop .* give it with --output"):
        (cv.cross_validate(None, [*tiny_overrides, "train.resume=true"], folds=2, quiet=True) if command == "cv" else
         curve.learning_curve(None, [*tiny_overrides, "train.resume=true"], fractions=(0.3, 0.6, 1.0), quiet=True))
    with pytest.raises(StropError, match="already holds files: choose another folder, or continue"):
        study()
    # Changed settings are refused, and the recorded run stays.
    with pytest.raises(StropError, match="cannot continue the study .* another optim.lr"):
        study("train.resume=true", "optim.lr=0.5")
    if command == "cv":
        with pytest.raises(StropError, match="another --folds"):
            study("train.resume=true", folds=3)
    # Changed rows in the same file are refused before anything in the study's folder is written.
    train_file = Path(next(o for o in tiny_overrides if o.startswith("data.train=")).split("=", 1)[1])
    original, files = train_file.read_bytes(), {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    train_file.write_bytes(original.replace(b"good", b"fine", 1))
    try:
        with pytest.raises(StropError, match=f"cannot continue the study in {out}: data.train differs"):
            study("train.resume=true")
    finally:
        train_file.write_bytes(original)
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == files
    assert len(json.loads((out / f"{command}.json").read_text())[{"cv": "runs", "curve": "points"}[command]]) == 1
    # Continued: only the runs not recorded train, and the study ends with every run.
    interrupted, interrupt[0] = calls.pop(), False
    calls.clear()
    result = study("train.resume=true")
    assert calls[0] == interrupted and len(calls) == {"cv": 1, "curve": 2}[command]
    runs = result["runs"] if command == "cv" else result["points"]
    assert len(runs) == {"cv": 2, "curve": 3}[command] and runs[0]["scores" if command == "curve" else "metrics"][
        "accuracy"] == pytest.approx(0.6)  # the recorded run, kept as measured
    assert result["config"]["train"]["resume"] is False  # recorded as an uninterrupted study records it
    with pytest.raises(StropError, match="is finished"):
        study("train.resume=true")


def test_the_terminal_says_where_the_mean_of_the_laws_tends_and_warns_of_three_points():
    n = np.repeat(SIZES, 2)
    accuracy = (0.9 - 0.8 * n ** -0.4) * np.tile([0.995, 1.005], len(SIZES))
    fit = analyse(n, accuracy, bounded=True, draws=50, score_range=(0.0, 1.0))
    points = [{"examples": int(size), "scores": {"accuracy": float(a)}} for size, a in zip(n, accuracy)]
    text = describe({"metric": "accuracy", "seeds": [1, 2], "sizes": list(SIZES), "fit": fit, "points": points})
    assert "levels off at accuracy" not in text  # the ceiling-free law does not level off
    assert f"the saturating law levels off at {fit['parameters']['a']:.4f}" in text and "warning" not in text
    few = analyse(n[::2][:3], accuracy[::2][:3], bounded=True, draws=50, score_range=(0.0, 1.0))
    text = describe({"metric": "accuracy", "seeds": [1], "sizes": list(SIZES[:3]), "fit": few, "points": points[::2][:3]})
    assert "warning: 3 points for a law of 3 parameters" in text


def test_a_flat_curve_is_said_to_show_no_gain_whatever_the_laws_forecast():
    n = np.repeat(SIZES, 2)
    flat = np.full(len(n), 0.2)  # a model that predicts one of five balanced classes at every size
    fit = analyse(n, flat, bounded=True, draws=50, score_range=(0.0, 1.0))
    points = [{"examples": int(size), "scores": {"accuracy": 0.2}} for size in n]
    text = describe({"metric": "accuracy", "seeds": [1, 2], "sizes": list(SIZES), "fit": fit, "points": points})
    assert f"the measured accuracy at {SIZES[-1]:,} examples (0.2000) is within the seeds' spread" in text
    rising = (0.9 - 0.8 * n ** -0.4) * np.tile([0.995, 1.005], len(SIZES))
    points = [{"examples": int(size), "scores": {"accuracy": float(a)}} for size, a in zip(n, rising)]
    fit = analyse(n, rising, bounded=True, draws=50, score_range=(0.0, 1.0))
    assert "seeds' spread" not in describe({"metric": "accuracy", "seeds": [1, 2], "sizes": list(SIZES), "fit": fit,
                                            "points": points})


def test_the_target_answer_says_why_it_is_not_reached_and_keeps_its_interval_to_the_sizes_measured():
    from strop.curve import shown

    n = np.repeat(SIZES, 2)
    fit = analyse(n, power_law(n, *TRUE), draws=20)
    result = {"metric": "accuracy", "seeds": [1, 2], "sizes": list(SIZES), "fit": fit,
              "points": [{"examples": int(size), "scores": {"accuracy": 0.8}} for size in n]}
    fit["asymptote"] = 0.76
    fit["target"] = {"score": 0.7, "examples": math.inf, "examples_interval": [math.inf, math.inf],
                     "reachable_share": 0.1, "below_measured": False}
    assert "tends there so slowly that it would take more than 1e+15 examples" in describe(result)
    fit["target"]["score"] = 0.8
    assert "(it levels off at 0.7600)" in describe(result)
    fit["target"] = {"score": 0.7, "examples": 762.0, "examples_interval": [0.002, math.inf],
                     "reachable_share": 0.9, "below_measured": False}
    assert "about 762 labelled examples [fewer than 20, never]" in describe(result)
    assert shown(-0.0) == "0.0000" and shown(-0.0, signed=True) == "+0.0000"


def _result(sizes, scores, fit, metric="accuracy"):
    """A curve.json's result as `describe` reads it: one point a score."""
    return {"metric": metric, "seeds": [1], "sizes": sorted(set(sizes)), "fit": fit,
            "points": [{"examples": n, "scores": {metric: v}} for n, v in zip(sizes, scores)]}


def test_a_flat_bounded_curve_gets_no_higher_than_its_points_and_a_lower_target_is_reached_already():
    sizes = [18, 36, 54, 90, 126, 180]
    fit = analyse(sizes, [0.55] * 6, bounded=True, target=0.3, draws=50)  # it crashed finding the size for 0.3
    # (a + 1) / 2 would be 0.775: the ceiling-free law of a flat curve rises too slowly to get anywhere near 1
    assert 0.55 <= fit["asymptote"] < 0.57 and fit["asymptote_interval"][1] < 0.6
    assert fit["target"]["below_measured"] and fit["target"]["examples"] < 1
    text = describe(_result(sizes, [0.55] * 6, fit))
    assert "accuracy 0.3: reached already by the fewest examples measured (18)" in text


def test_a_target_the_fewest_examples_measured_reach_is_reached_even_where_the_fit_runs_below_it():
    sizes, scores = [36, 36, 90, 90, 180, 180], [0.494, 0.510, 0.507, 0.578, 0.713, 0.766]
    fit = analyse(sizes, scores, bounded=True, target=0.5, draws=50)
    assert forecast(36, parameters_of(fit)) < 0.5 < np.mean(scores[:2])  # fitted below the target, measured above
    assert fit["target"]["below_measured"]


def test_the_curve_warns_where_its_points_get_worse_or_its_law_does_not_level_off():
    sizes = [20, 20, 40, 40, 80, 80, 160, 160]
    falling = [0.70, 0.71, 0.66, 0.67, 0.61, 0.60, 0.55, 0.56]
    text = describe(_result(sizes, falling, analyse(sizes, falling, bounded=True, draws=50)))
    assert "warning: the measured accuracy is worse at 160 examples (0.5550) than at 20 (0.7050)" in text
    noisy = [0.70, 0.66, 0.69, 0.67, 0.70, 0.66, 0.69, 0.66]  # 0.68 at 20 and 0.675 at 160: within the seeds' spread
    assert "is worse" not in describe(_result(sizes, noisy, analyse(sizes, noisy, bounded=True, draws=50)))
    # an unbounded score rising by the same step each doubling (a loss cannot: its level is held at 0 or above)
    steady = [-1.60, -1.58, -1.35, -1.33, -1.10, -1.12, -0.87, -0.85]
    fit = analyse(sizes, steady, draws=50)
    assert fit["parameters"]["c"] < 0.01
    assert re.search(r"warning: c is 0\.00\d+, near 0", describe(_result(sizes, steady, fit, "score")))
    rising = power_law(np.array(sizes), *TRUE)
    assert "warning" not in describe(_result(sizes, rising, analyse(sizes, rising, bounded=True, draws=50)))


def test_a_label_the_held_out_share_takes_whole_is_blamed_on_the_split_not_on_data_validation(tiny_overrides, tmp_path):
    from conftest import make_texts

    from strop.curve import learning_curve
    from strop.data.splits import random_split
    from strop.tasks.base import Examples

    rows = [(t, y) for t, y in make_texts(60, seed=2)]
    _, held_out = random_split(Examples(list(range(60)), [[y] for _, y in rows], "x"), 0.1, 42)
    rare = held_out.inputs[0]  # the one example of label "rare" lands in the held-out share of train.seed 42
    rows[rare] = (rows[rare][0], rows[rare][1] + "|rare")
    train = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(train, index=False)
    overrides = [o for o in tiny_overrides if not o.startswith(("data.", "train.seed"))] + [
        f"data.train={train}", "task.name=multilabel_classification", "train.seed=42"]
    out = tmp_path / "curve"
    with pytest.raises(StropError, match=r"the validation share held out of data.train \(data.validation_fraction="
                                         r"0.1\) takes every example of label\(s\) rare, .*give data.validation=FILE"):
        learning_curve(None, overrides, output=out, quiet=True)
    assert not out.exists()


def test_an_error_curve_never_levels_off_below_0_so_0_is_never_reached():
    # an error falling steadily over the sizes measured: unbounded, the law through it levels off near -0.2
    n = np.repeat(SIZES, 2)
    rmse = -0.2 + 2 * np.power(n, -0.2) + np.random.default_rng(0).normal(0, 0.003, len(n))
    fit = analyse(n, rmse, minimised=True, target=0.0, draws=100, score_range=(0.0, math.inf))
    assert fit["parameters"]["a"] >= 0 and min(fit["parameter_intervals"]["a"]) >= 0
    assert math.isinf(fit["target"]["examples"]) and fit["target"]["reachable_share"] == 0


def test_multilabel_subsets_hold_every_label_and_a_share_too_small_for_them_is_refused():
    targets = [["a"] if i % 2 else ["b"] for i in range(70)]
    for i in (3, 50, 66):  # a rare label: a random 20% would often lack it
        targets[i] = ["a", "z"]
    for seed in range(10):
        subsets = nested_subsets(targets, [14, 35, 70], seed=seed)
        assert all({"a", "b", "z"} <= {x for i in subset for x in targets[i]} for subset in subsets)
        assert set(subsets[0]) <= set(subsets[1]) <= set(subsets[2])
        assert [len(s) for s in subsets] == [14, 35, 70]
    with pytest.raises(StropError, match="gives 2 examples, and 3 are needed to hold each of the 3 labels"):
        nested_subsets(targets, [2, 35, 70], seed=0)


def test_a_regression_curve_runs_its_fractions_and_fits_its_error(tmp_path):
    """A regression's targets are tuples of numbers: they are no label sets that every subset must hold."""
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": x[:, 0] - 0.5 * x[:, 1] + 0.1 * rng.normal(size=150)})
    frame.to_csv(tmp_path / "train.csv", index=False)
    assert len(nested_subsets([(v,) for v in frame["y"]], [30, 150], seed=0)[0]) == 30
    result = learning_curve(None, ["model.name=mlp", "task.name=regression", "model.hidden=[8]", "data.label_column=y",
                                   f"data.train={tmp_path / 'train.csv'}", "train.epochs=2", "train.quiet=true"],
                            fractions=(0.3, 0.6, 1.0), seeds=1, output=tmp_path / "curve", quiet=True)
    assert result["metric"] == "rmse" and len(result["points"]) == 3
    assert json.loads((tmp_path / "curve" / "curve.json").read_text())["metric"] == "rmse"


def test_fractions_that_round_to_one_size_train_it_once(tiny_overrides, tmp_path, monkeypatch, capsys):
    from strop import curve

    trained = []

    def fake_run(cfg, train_file, validation, seed, run_dir, keep, **_):
        trained.append(train_file.name)
        return {"accuracy": 0.5 + 0.1 * len(trained), "loss": 1.0}, 72

    monkeypatch.setattr("strop.cv.fit_and_score", fake_run)
    loud = [o for o in tiny_overrides if not o.startswith("train.quiet")]
    result = curve.learning_curve(None, loud, fractions=(0.1, 0.101, 0.5, 1.0), seeds=1, output=tmp_path / "curve")
    assert sorted(trained) == sorted(set(trained)) and len(trained) == 3
    assert result["sizes"] == [16, 80, 160] and result["fractions"] == [0.1, 0.5, 1.0]
    assert "--fractions 0.1 and 0.101 give 16 examples: each size is measured once" in capsys.readouterr().out


def test_a_target_the_runs_reach_where_the_fit_says_more_is_told_as_measured():
    sizes, scores = [40, 40, 80, 80, 160, 160], [0.60, 0.64, 0.70, 0.71, 0.80, 0.76]
    fit = analyse(sizes, scores, bounded=True, target=0.78, draws=50)
    assert fit["target"]["measured"] == {"examples": 160, "score": pytest.approx(0.78)}
    fit["target"]["examples"] = 200.0  # as a fit running below the largest size's mean would answer
    result = {"metric": "accuracy", "fit": fit, "seeds": [1, 2], "sizes": [40, 80, 160],
              "points": [{"examples": n, "seed": s, "scores": {"accuracy": v}}
                         for n, s, v in zip(sizes, [1, 2] * 3, scores)]}
    assert "the runs of 160 examples reach it already (mean 0.7800)" in describe(result)


def test_train_quiet_in_the_config_quiets_the_curve_as_it_quiets_a_fit(tiny_overrides, tmp_path, monkeypatch, capsys):
    from strop import curve

    monkeypatch.setattr("strop.cv.fit_and_score", lambda cfg, train_file, *a, **_: (
        {"accuracy": 0.5 + int(train_file.stem.split("-")[0][1:]) / 1000, "loss": 1.0}, 72))  # n40-seed42
    loud = [o for o in tiny_overrides if not o.startswith("train.quiet")]
    curve.learning_curve(None, loud, fractions=(0.25, 0.5, 1.0), seeds=1, output=tmp_path / "loud")
    assert "examples" in capsys.readouterr().out
    curve.learning_curve(None, loud + ["train.quiet=true"], fractions=(0.25, 0.5, 1.0), seeds=1,
                         output=tmp_path / "quiet")
    assert capsys.readouterr().out == ""


def test_a_fit_crossing_the_target_below_the_fewest_size_whose_runs_fall_short_is_not_said_reached_there():
    from strop.curve import describe

    sizes = np.repeat([10, 20, 40, 80, 160], 3).tolist()
    scores = [0.4682, 0.4726, 0.4673, 0.7514, 0.7542, 0.7609, 0.7139, 0.7219, 0.7192, 0.819, 0.8124, 0.8144,
              0.7894, 0.7772, 0.7809]
    fit = analyse(sizes, scores, bounded=True, target=0.493, draws=50, score_range=(0.0, 1.0))
    assert fit["target"]["examples"] < 10 and not fit["target"]["below_measured"]  # the runs of 10 average 0.4694
    text = describe(_result(sizes, scores, fit))
    assert "reached already" not in text
    assert "accuracy 0.493: the fitted curve crosses it below the fewest examples measured (10), but their runs " \
           "average 0.4694" in text and "the runs of 20 examples are the fewest that reach it (mean 0.7555)" in text


def test_a_curve_that_has_levelled_off_is_not_forecast_to_gain_from_its_law_alone():
    """0.60 at 10 examples, then 0.80 at every size to 320: the bounded forecast (half of it a law without a
    ceiling) fits 0.82 at 320, where all three runs score 0.80, and forecast a gain; said, and no 'more labels'."""
    from strop.report_studies import curve_findings

    rng = np.random.default_rng(0)
    sizes = np.repeat([10, 20, 40, 80, 160, 320], 3).tolist()
    scores = [round(m + e, 4) for m in (0.60, 0.80, 0.80, 0.80, 0.80, 0.80) for e in rng.normal(0, 0.005, 3)]
    fit = analyse(sizes, scores, bounded=True, draws=50, score_range=(0.0, 1.0))
    result = _result(sizes, scores, fit) | {"seeds": [1, 2, 3]}
    assert fit["twice_the_data"]["gain_interval"][0] > 0 and fit["score_at_largest"] > 0.81  # the law's say
    assert re.search(r"warning: the fitted accuracy at 320 examples \(0\.8\d+\) is outside the 95% interval of its "
                     r"runs' mean \(0\.79\d+ ", describe(result))
    assert [f.name for f in curve_findings(result)] == ["unknown"]
    rising = power_law(np.array(sizes), *TRUE) + np.tile([-0.004, 0.0, 0.004], 6)  # a curve its law follows
    assert "outside the 95% interval" not in describe(_result(sizes, rising, analyse(sizes, rising, bounded=True,
                                                                                      draws=50)))


def test_a_target_the_fit_reaches_within_the_sizes_where_no_runs_reach_it_says_so():
    """The runs of 320 examples score 0.888 to 0.894 and no size reaches 0.9, yet the fit (within its runs'
    interval but for a hair) answered 'about 305 labelled examples' alone."""
    rng = np.random.default_rng(0)
    means = {20: 0.78, 40: 0.86, 80: 0.88, 160: 0.89, 320: 0.895}
    sizes = np.repeat(list(means), 3).tolist()
    scores = [means[n] + rng.normal(0, 0.003) for n in sizes]
    fit = analyse(sizes, scores, bounded=True, target=0.9, draws=50, score_range=(0.0, 1.0))
    assert fit["target"]["examples"] <= 320 and fit["target"]["measured"] is None
    result = _result(sizes, scores, fit) | {"seeds": [1, 2, 3]}
    assert re.search(r"accuracy 0\.9: about \d+ labelled examples .*; measured, no size's runs reach it \(those of "
                     r"320 examples average 0\.89\d+\): the fitted curve runs above them", describe(result))


def test_a_curve_names_each_runs_bars_times_its_runs_and_shows_the_fits_progress(tiny_overrides, tmp_path,
                                                                                   monkeypatch, capsys):
    from strop import curve

    names = []

    def fake_run(cfg, train_file, validation, seed, run_dir, keep, show=None, **_):
        names.append(show)
        return {"accuracy": 0.5 + 0.1 * len(names), "loss": 1.0}, 72

    monkeypatch.setattr("strop.cv.fit_and_score", fake_run)
    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)
    monkeypatch.setattr(curve, "_BOOTSTRAPS", {})  # no fits of these points left in memory by an earlier test
    fitted = []
    fits = curve._bootstrap_fits
    monkeypatch.setattr(curve, "_bootstrap_fits", lambda *args: fitted.append(args) or fits(*args))
    loud = [o for o in tiny_overrides if not o.startswith("train.quiet")]
    curve.learning_curve(None, loud, fractions=(0.1, 0.5, 1.0), seeds=1, output=tmp_path / "curve")
    # curve.json's intervals, curve.png's band and report.html's chart: one bootstrap
    assert len(fitted) == 1 and (tmp_path / "curve" / "curve.png").exists()
    assert names == ["16 examples, seed 42", "80 examples, seed 42", "160 examples, seed 42"]
    captured = capsys.readouterr()
    assert "16 examples, seed 42: accuracy 0.6000  (0 s)\n" in captured.out  # one size: no forecast yet
    assert "80 examples, seed 42: accuracy 0.7000  (0 s; about 0 s left)" in captured.out
    assert "fitting the curve (bootstrap): 1/500 fits" in captured.err
    curve.learning_curve(None, loud, fractions=(0.1, 0.5, 1.0), seeds=1, output=tmp_path / "quiet", quiet=True)
    assert names[3:] == [None] * 3 and capsys.readouterr().err == ""
