"""The reports of a search, a cross-validation and a learning curve: what their diagnosis says for results
made to show each finding, and `strop report FOLDER` for each kind of folder. (The real commands' reports
are checked in test_search, test_cv and test_curve; in a browser in test_report_browser.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strop.cli import main
from strop.report_studies import cv_findings, curve_findings, search_findings, write_folder_report


def search_result(lrs: list[float], scores: list[float | None], errors: dict[int, str] = None) -> dict:
    """search.json as strop search writes it, for trials with these learning rates and scores (None: failed)."""
    errors = errors or {}
    trials = [{"number": i, "state": "fail" if s is None else "complete", "value": s, "params": {"optim.lr": lr},
               "run": f"trial-{i:04d}", "epochs": {} if s is None else {"1": s - 0.05, "2": s},
               **({"error": errors[i]} if i in errors else {})} for i, (lr, s) in enumerate(zip(lrs, scores))]
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    return {"study": "s", "storage": "sqlite:///s", "metric": "accuracy", "direction": "maximize",
            "trials_wanted": len(trials), "counts": {"complete": len(complete), "finished": len(trials)},
            "space": {"optim.lr": {"log_uniform": [1.0e-5, 1.0e-3]}},
            "best": {"trial": best["number"], "value": best["value"], "params": best["params"], "run": best["run"]},
            "trials": trials, "importances": {"method": "fANOVA", "complete_trials": len(complete),
                                              "shares": {"optim.lr": 1.0}}}


def names(findings) -> set[str]:
    return {f.name for f in findings}


def test_a_best_value_at_the_end_of_its_range_says_to_widen_it():
    edge = search_result([1e-5, 1e-4, 9e-4], [0.70, 0.80, 0.90])
    inside = search_result([1e-5, 1e-4, 9e-4], [0.70, 0.90, 0.80])
    [finding] = search_findings(edge)
    assert finding.name == "range_edge" and "upper end" in finding.title and "up" in finding.fixes[0]
    assert search_findings(inside) == []
    low = search_findings(search_result([1.1e-5, 1e-4, 9e-4], [0.9, 0.8, 0.7]))
    assert names(low) == {"range_edge"} and "lower end" in low[0].title


def test_failed_trials_are_named_with_their_values_and_error():
    result = search_result([1e-4, 3e-4, 9e-3], [0.8, 0.9, None], errors={2: "the loss is not a number"})
    finding = next(f for f in search_findings(result) if f.name == "failed_trials")
    assert "trial 2" in finding.evidence and "the loss is not a number" in finding.evidence


def test_scores_the_space_hardly_moves_are_called_flat():
    result = search_result([1e-4, 2e-4, 3e-4, 4e-4], [0.801, 0.802, 0.800, 0.803])
    assert "flat" in names(search_findings(result))


def cv_result(scores: dict[tuple[int, int], float], folds: int) -> dict:
    runs = [{"seed": seed, "fold": fold, "metrics": {"accuracy": value}} for (seed, fold), value in scores.items()]
    from strop.cv import summarise

    return {"folds": folds, "seeds": sorted({seed for seed, _ in scores}), "scored_on": "the held-out fold",
            "runs": runs, "summary": {"accuracy": summarise([r["metrics"]["accuracy"] for r in runs])},
            "config": {"task": {"name": "text_classification"}}}


def test_cv_tells_folds_that_disagree_from_seeds_that_do():
    folds_differ = cv_result({(1, 1): 0.70, (1, 2): 0.90, (2, 1): 0.71, (2, 2): 0.89}, folds=2)
    seeds_differ = cv_result({(1, 1): 0.70, (1, 2): 0.71, (2, 1): 0.90, (2, 2): 0.89}, folds=2)
    agree = cv_result({(1, 1): 0.80, (1, 2): 0.81, (2, 1): 0.80, (2, 2): 0.81}, folds=2)
    assert names(cv_findings(folds_differ, "accuracy")) == {"fold_spread"}
    assert names(cv_findings(seeds_differ, "accuracy")) == {"instability"}
    assert cv_findings(agree, "accuracy") == []
    # each seed draws its own folds: fold 1 of seed 1 is not fold 1 of seed 2, so their numbers are not averaged
    # (averaged by fold number these two seeds' folds would agree exactly)
    crossed = cv_result({(1, 1): 0.70, (1, 2): 0.90, (2, 1): 0.90, (2, 2): 0.70}, folds=2)
    finding = next(f for f in cv_findings(crossed, "accuracy") if f.name == "fold_spread")
    assert "from 0.7000 (seed 1, fold 1) to 0.9000" in finding.evidence and "0.1414" in finding.evidence


def test_cv_runs_no_better_than_the_most_frequent_class_are_said():
    """A 77-class model that predicts one intent (accuracy 0.011) read "No problem found"."""
    chance = cv_result({(1, 1): 0.011, (1, 2): 0.012}, folds=2)
    chance["majority_share"] = 1 / 77
    finding = next(f for f in cv_findings(chance, "accuracy") if f.name == "chance")
    assert "0.0115" in finding.evidence and "0.0130" in finding.evidence
    learned = cv_result({(1, 1): 0.61, (1, 2): 0.62}, folds=2)
    learned["majority_share"] = 0.55
    assert "chance" not in names(cv_findings(learned, "accuracy"))
    assert "chance" not in names(cv_findings(cv_result({(1, 1): 0.01, (1, 2): 0.01}, folds=2), "accuracy"))  # unknown


def curve_result(gain: float, interval: tuple[float, float], lower_is_better: bool = False,
                 measured_gain: float = 0.1) -> dict:
    """A curve.json of 2 seeds at 250 and 1,000 examples, whose measured scores improve by measured_gain."""
    model = "score(n) = a - b * n^(-c)" + (" fitted to -score (lower is better)" if lower_is_better else "")
    metric, sign = ("loss", -1.0) if lower_is_better else ("accuracy", 1.0)
    points = [{"examples": n, "seed": seed, "scores": {metric: 0.7 + sign * (measured_gain * (n == 1000) + noise)}}
              for n in (250, 1000) for seed, noise in ((1, 0.005), (2, -0.005))]
    return {"metric": metric, "sizes": [250, 1000], "points": points, "fit": {  # fitted where the runs are
        "model": model, "largest_size": 1000.0, "score_at_largest": 0.7 + sign * measured_gain, "asymptote": 0.85,
        "twice_the_data": {"size": 2000.0, "gain": gain, "gain_interval": list(interval)}}}


def measured_curve() -> dict:
    """curve.json for points drawn around a known power law, 3 seeds at 4 sizes, fitted as strop curve does."""
    import numpy as np

    from strop.curve import analyse

    rng = np.random.default_rng(0)
    points = [{"examples": n, "seed": seed, "scores": {"accuracy": 0.9 - 0.9 * n ** -0.5 + rng.normal(0, 0.01)}}
              for seed in (42, 43, 44) for n in (50, 100, 200, 400)]
    result = {"config": {"task": {"name": "text_classification"}}, "metric": "accuracy", "sizes": [50, 100, 200, 400],
              "seeds": [42, 43, 44], "points": points}
    result["fit"] = analyse([p["examples"] for p in points], [p["scores"]["accuracy"] for p in points],
                            bounded=True, target=0.88)
    return result


def cv_folds() -> dict:
    return cv_result({(42, 1): 0.81, (42, 2): 0.78, (42, 3): 0.84, (43, 1): 0.80, (43, 2): 0.79, (43, 3): 0.85}, 3)


@pytest.mark.parametrize("gain, interval, lower, expected", [
    (0.03, (0.01, 0.05), False, "more_data_helps"),
    (0.001, (-0.002, 0.004), False, "levels_off"),
    (0.02, (-0.01, 0.06), False, "unknown"),
    (-0.03, (-0.05, -0.01), True, "more_data_helps"),  # a loss that falls with more data
    (0.03, (0.01, 0.05), True, "levels_off"),  # a loss that would rise: no gain
])
def test_the_curve_answers_whether_more_labels_help(gain, interval, lower, expected):
    assert names(curve_findings(curve_result(gain, interval, lower))) == {expected}


@pytest.mark.parametrize("lower", [False, True])
def test_a_forecast_gain_that_no_measured_point_shows_is_not_called_worth_labelling(lower):
    gain, interval = (-0.03, (-0.05, -0.01)) if lower else (0.03, (0.01, 0.05))
    [finding] = curve_findings(curve_result(gain, interval, lower, measured_gain=0.0))
    assert finding.name == "unknown" and "show no gain with more data" in finding.evidence
    assert "Label more examples" not in " ".join(finding.fixes)


@pytest.mark.parametrize("scale", [1.0, 1e-4, 1e4])
def test_an_error_curve_verdict_does_not_depend_on_the_target_units(scale):
    result = curve_result(-0.10 * scale, (-0.15 * scale, -0.05 * scale), lower_is_better=True)
    result["metric"] = "rmse"
    for point in result["points"]:  # measured in the target's units too, 59.5 at the largest size
        point["scores"] = {"rmse": point["scores"]["loss"] * scale * 59.5 / 0.6}
    result["fit"]["score_at_largest"] = 59.5 * scale  # 0.10 of 59.5: a change of 0.17%, under the flat share
    assert names(curve_findings(result)) == {"levels_off"}
    result["fit"]["twice_the_data"].update(gain=-3.0 * scale, gain_interval=[-4.0 * scale, -2.0 * scale])
    assert names(curve_findings(result)) == {"more_data_helps"}


def test_the_advice_for_more_labels_fits_the_model_and_task():
    def advice(task, model, method="full", classes=None):
        result = curve_result(0.03, (0.01, 0.05))
        result["config"] = {"task": {"name": task}, "model": {"name": model}, "method": {"name": method}}
        result["classes"] = classes
        return " ".join(curve_findings(result)[0].fixes)

    assert "fewshot" in advice("text_classification", "minilm-l6") and "data.unlabeled" in advice(
        "text_classification", "minilm-l6")
    assert "fewshot" not in advice("text_classification", "mlp") and "data.unlabeled" in advice(
        "text_classification", "mlp")
    assert "fewshot" not in advice("regression", "mlp") and "data.unlabeled" not in advice("regression", "mlp")
    assert "fewshot" not in advice("text_classification", "minilm-l6", "fewshot")  # it already trained so
    # as method.name=auto decides: not for more classes than few-shot's groups hold (77 intents)
    assert "fewshot" in advice("text_classification", "minilm-l6", classes=6)
    assert "fewshot" not in advice("text_classification", "minilm-l6", classes=77)


def test_strop_report_rebuilds_a_search_folder_and_refuses_an_unknown_one(tmp_path, capsys):
    folder = tmp_path / "search"
    folder.mkdir()
    (folder / "search.json").write_text(json.dumps(search_result([1e-5, 1e-4, 9e-4], [0.7, 0.8, 0.9])))
    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert 'data-finding="range_edge"' in page and "trial-0002" in page
    assert str(folder / "report.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    assert "no complete run" in capsys.readouterr().err and not (tmp_path / "report.html").exists()


def test_a_cv_report_claims_agreement_only_for_scores_with_a_rule_of_thumb(tmp_path):
    from strop.cv import summarise

    spread = {(1, 1): 40.0, (1, 2): 80.0, (2, 1): 41.0, (2, 2): 79.0}  # an rmse, folds far apart
    result = cv_result(spread, folds=2)
    for run in result["runs"]:
        run["metrics"] = {"rmse": run["metrics"].pop("accuracy")}
    result.update(summary={"rmse": summarise(list(spread.values()))}, config={"task": {"name": "regression"}})
    (tmp_path / "cv.json").write_text(json.dumps(result))
    page = write_folder_report(tmp_path).read_text()
    assert "agree within the rule of thumb" not in page and "no rule of thumb" in page
    accuracy = tmp_path / "accuracy"
    accuracy.mkdir()
    (accuracy / "cv.json").write_text(json.dumps(cv_result({(1, 1): 0.8, (1, 2): 0.81}, folds=2)))
    assert "agree within the rule of thumb" in write_folder_report(accuracy).read_text()


def test_a_cv_folder_with_no_finished_runs_gets_a_clear_message(tmp_path):
    (tmp_path / "cv.json").write_text(json.dumps({"folds": 2, "seeds": [1], "runs": []}))
    with pytest.raises(Exception, match="no finished cross-validation"):
        write_folder_report(Path(tmp_path))


def test_a_target_the_curve_never_reaches_reads_never(tmp_path):
    result = measured_curve()
    result["fit"]["target"].update(score=0.99, examples=float("inf"), examples_interval=[2000.0, float("inf")])
    from strop.runs import atomic_write_json

    atomic_write_json(tmp_path / "curve.json", result, "the learning curve")  # inf written as null
    page = write_folder_report(tmp_path).read_text()
    assert "<b>never</b><span>examples for accuracy 0.99</span>" in page and "not reached" in page


def test_an_error_curve_card_speaks_of_a_change_not_a_gain(tmp_path):
    from strop.curve import analyse
    from strop.runs import atomic_write_json

    result = measured_curve()
    errors = [1 - p["scores"]["accuracy"] for p in result["points"]]
    for point, error in zip(result["points"], errors):
        point["scores"] = {"rmse": error}
    result["metric"] = "rmse"
    result["fit"] = analyse([p["examples"] for p in result["points"]], errors, minimised=True, draws=50)
    atomic_write_json(tmp_path / "curve.json", result, "the learning curve")
    page = write_folder_report(tmp_path).read_text()
    assert "change at twice the data (lower is better)" in page and "gain at twice the data" not in page
    assert "gain at twice the data" in write_folder_report(_accuracy_folder(tmp_path)).read_text()


def _accuracy_folder(tmp_path):
    from strop.runs import atomic_write_json

    folder = tmp_path / "accuracy"
    folder.mkdir()
    atomic_write_json(folder / "curve.json", measured_curve(), "the learning curve")
    return folder


def test_a_report_that_fails_only_warns_after_the_results_are_written(tmp_path, capsys, monkeypatch):
    import strop.report_studies as studies

    (tmp_path / "cv.json").write_text(json.dumps(cv_folds()))
    monkeypatch.setattr(studies, "cv_page", lambda result, folder: 1 / 0)
    assert studies.report_after(tmp_path, "cv") is None
    err = capsys.readouterr().err
    assert "strop cv: warning: report.html could not be written (ZeroDivisionError" in err
    assert f"strop report {tmp_path}" in err and not (tmp_path / "report.html").exists()


def test_a_curve_of_one_seed_shows_no_spread_in_its_points_table(tmp_path):
    from strop.runs import atomic_write_json

    result = measured_curve()
    result["points"] = [p for p in result["points"] if p["seed"] == 42]
    result["seeds"] = [42]
    atomic_write_json(tmp_path / "curve.json", result, "the learning curve")
    page = write_folder_report(tmp_path).read_text()
    points = page[page.index('id="points"'):]
    assert "<td>–</td><td class=\"num\">1</td>" in points and "None" not in points


def test_a_regression_cv_is_judged_on_its_r2_where_its_lead_metric_has_no_rule_of_thumb(tmp_path):
    from strop.cv import summarise

    r2 = {(1, 1): -0.43, (1, 2): -0.36, (2, 1): 0.62, (2, 2): 0.75}  # the seeds disagree, and on average below 0
    result = cv_result(r2, folds=2)
    for run in result["runs"]:
        run["metrics"] = {"rmse": 1.0 + run["metrics"]["accuracy"], "r2": run["metrics"].pop("accuracy")}
    result.update(summary={"rmse": summarise([1 + v for v in r2.values()]), "r2": summarise([-0.5, -0.4, 0.1, 0.2])},
                  config={"task": {"name": "regression"}})
    (tmp_path / "cv.json").write_text(json.dumps(result))
    page = write_folder_report(tmp_path).read_text()
    assert "Unstable across seeds" in page and "Worse than predicting the mean" in page  # it said: no problem found
    calm = tmp_path / "calm"
    calm.mkdir()
    steady = cv_result({(1, 1): 0.80, (1, 2): 0.81, (2, 1): 0.80, (2, 2): 0.81}, folds=2)
    for run in steady["runs"]:
        run["metrics"] = {"rmse": 0.3, "r2": run["metrics"].pop("accuracy")}
    steady.update(summary={"rmse": summarise([0.3] * 4), "r2": summarise([0.80, 0.81, 0.80, 0.81])},
                  config={"task": {"name": "regression"}})
    (calm / "cv.json").write_text(json.dumps(steady))
    page = write_folder_report(calm).read_text()
    assert "agree within the rule of thumb on r2 (rmse is in the target&#x27;s units" in page
