"""report.html for the folders of runs: a search (`strop search`), a cross-validation (`strop cv`) and a
learning curve (`strop curve`). Each page is a function of the folder's own result file (search.json,
cv.json, curve.json) alone, so `strop report FOLDER` rebuilds it anywhere, without the study's storage or the
data; it is written with the result file at the end of the command (a search's after every trial).
The look, the tables and the charts are report.html's (strop.report_html)."""

from __future__ import annotations

import json
import math
import sys
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from strop.errors import StropError
from strop.evaluate import diagnose
from strop.evaluate.diagnose import Finding, is_number
from strop.report_html import (cards_html, findings_html, fmt, html_table, new_figure, page, png_bytes_image,
                               png_image)
from strop.runs import atomic_write_text
from strop.tasks.base import score_text

REPORT = "report.html"
RESULT_FILES = {"search": "search.json", "cv": "cv.json", "curve": "curve.json"}
EDGE = 0.1  # a best value within this share of its range's end (log scale for log ranges) may lie beyond it
FLAT = 0.005  # complete trials whose scores all lie this close leave the searched keys without effect
FEW_TRIALS = 10  # importances from fewer complete trials than this are rough


def folder_kind(folder: Path) -> str | None:
    """"search", "cv" or "curve" for a folder holding that command's result file; None for any other."""
    return next((kind for kind, name in RESULT_FILES.items() if (folder / name).is_file()), None)


def write_folder_report(folder: str | Path) -> Path:
    """Writes FOLDER/report.html from its search.json, cv.json or curve.json and returns its path.

    Raises:
        StropError: the folder holds none of them, or one that cannot be read.
    """
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind is None:
        raise StropError(f"{folder} holds no {', '.join(RESULT_FILES.values())}: give a strop search, cv or curve "
                         "output folder")
    path = folder / RESULT_FILES[kind]
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StropError(f"{path} cannot be read ({error}): run the {kind} again into a new folder") from None
    render = {"search": search_page, "cv": cv_page, "curve": curve_page}[kind]
    report = folder / REPORT
    # resolved: `strop report .` titles the page by the folder's own name, not "."
    atomic_write_text(report, render(result, folder.resolve()), "the report")
    return report


def report_after(folder: Path, command: str) -> Path | None:
    """write_folder_report at the end of `command` (search, cv, curve): a report that fails is said on stderr
    and costs nothing else, since the results are written already."""
    try:
        return write_folder_report(folder)
    except Exception as error:  # noqa: BLE001 - the results are complete; the report is an extra
        print(f"strop {command}: warning: report.html could not be written ({type(error).__name__}: {error}); "
              f"the results are complete. Try again with: strop report {folder}", file=sys.stderr)
        return None


def _header(title: str, subtitle: str, cards: list[tuple[str, str]]) -> str:
    return f'<h1>{escape(title)}</h1><p class="sub">{escape(subtitle)}</p><div class="cards">{cards_html(cards)}</div>'


def _configuration(config: dict, how: str) -> str:
    return (f'<h2 id="config">Configuration</h2><p>{how}</p>'
            f"<pre>{escape(yaml.safe_dump(config, sort_keys=False))}</pre>")


# --- a search ------------------------------------------------------------------------------------

_SEARCH_NAV = [("diagnosis", "Diagnosis"), ("history", "History"), ("importances", "Importances"),
               ("slices", "Scores by value"), ("epochs", "Epochs"), ("trials", "Trials"), ("config", "Configuration")]


def search_page(result: dict, folder: Path) -> str:
    """The trials of a search: the best one, scores over trials, parameter importances, each parameter's
    scores by value, the epochs' validation scores the pruner saw, every trial, and what the search says."""
    metric, counts, best = result["metric"], result.get("counts", {}), result.get("best")
    cards = [(score_text(best["value"]) if best else "none", f"best validation {metric}"),
             (f"{counts.get('finished', 0)}/{result.get('trials_wanted', '?')}", "trials finished"),
             (str(counts.get("complete", 0)), "complete"), (str(counts.get("pruned", 0)), "pruned"),
             (str(counts.get("fail", 0)), "failed")]
    header = _header(f"strop search: {result.get('study', folder.name)}",
                     f"{result.get('direction', 'maximize')} validation {metric} · study in "
                     f"{result.get('storage', '?')} · {folder}", cards)
    if best:
        link = f"{best['run']}/{REPORT}"
        header += ("<p>Best: trial " + fmt(best["trial"]) + " (" + ", ".join(
            f"{escape(k)} = {escape(_shown(v))}" for k, v in best["params"].items()) + ")"
            + (f' · <a href="{escape(link)}">its run\'s report</a>' if (folder / link).is_file() else "")
            + f" · refit it with <code>strop fit {escape(str(folder / 'best.yaml'))} output_dir=...</code></p>")
    parts = [header, findings_html(search_findings(result), "The search found a best trial inside the ranges it "
                                   "searched, and no trial failed."),
             _history(result), _importances(result), _slices(result), _epochs(result), _trials(result, folder)]
    return page(f"strop search report: {result.get('study', folder.name)}", [p for p in parts if p], _SEARCH_NAV)


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _complete(result: dict) -> list[dict]:
    return [t for t in result.get("trials", []) if t.get("state") == "complete" and is_number(t.get("value"))]


def search_findings(result: dict) -> list[Finding]:
    """Best values at the edge of their range, failed trials, too few trials for the importances, and scores
    the searched keys hardly move."""
    out, complete = [], _complete(result)
    best, metric = result.get("best"), result["metric"]
    for key, spec in (result.get("space") or {}).items():
        (kind, bounds), = spec.items()
        value = (best or {}).get("params", {}).get(key)
        if kind == "choice" or best is None or not is_number(value):
            continue
        low, high = bounds
        scale = (lambda v: math.log(v)) if kind.startswith("log") else (lambda v: v)
        position = (scale(value) - scale(low)) / (scale(high) - scale(low))
        if position <= EDGE or position >= 1 - EDGE:
            end, direction = ("lower", "down") if position <= EDGE else ("upper", "up")
            out.append(Finding(
                "range_edge", f"The best {key} is at the {end} end of its range",
                f"The best trial's {key} = {_shown(value)} lies in the {end} {EDGE:.0%} of the range searched "
                f"[{_shown(low)}, {_shown(high)}]: better values may lie beyond it.",
                [f"Widen the range of {key} {direction} in the search section and search again (a new output_dir, "
                 "or --study-name)."]))
    failed = [t for t in result.get("trials", []) if t.get("state") == "fail" and t.get("error")]
    if failed:
        shown = "; ".join(f"trial {t['number']} ({', '.join(f'{k}={_shown(v)}' for k, v in t['params'].items())}): "
                          f"{t['error']}" for t in failed[:3])
        out.append(Finding(
            "failed_trials", f"{len(failed)} trial(s) failed",
            f"Their settings made the fit fail: {shown}.",
            ["Narrow the ranges that hold the failing values (a too-high learning rate diverges; a large batch "
             "may not fit in memory), or fix the error the message names."]))
    if 0 < len(complete) < FEW_TRIALS and len(result.get("space") or {}) > 1:
        out.append(Finding(
            "few_trials", "Too few complete trials to rank the parameters",
            f"{len(complete)} complete trial(s): the importances below rest on few points and may change with more.",
            [f"Run more trials: the same command with a larger --trials (e.g. --trials {max(2 * FEW_TRIALS, 20)}) "
             "continues the study."]))
    values = [t["value"] for t in complete]
    if len(values) >= 3 and max(values) - min(values) < FLAT and metric in diagnose.BOUNDED_METRICS:
        out.append(Finding(
            "flat", "The searched keys hardly change the score",
            f"All {len(values)} complete trials score within {max(values) - min(values):.4f} {metric} of each "
            "other.",
            ["Search other keys (method.name, train.epochs, model.name), or spend the time on more labelled data "
             "(strop curve estimates how much it would help)."]))
    return out


def _history(result: dict) -> str:
    complete = _complete(result)
    if not complete:
        return ""
    maximise = result.get("direction", "maximize") == "maximize"
    figure, axes = new_figure(7.0, 3.4)
    numbers = [t["number"] for t in complete]
    values = [t["value"] for t in complete]
    axes.scatter(numbers, values, color="#4c72b0", zorder=3, label="complete")
    running = np.maximum.accumulate(values) if maximise else np.minimum.accumulate(values)
    axes.step(numbers, running, where="post", color="#2f9e62", label="best so far")
    pruned = [(t["number"], list(t["epochs"].values())[-1]) for t in result.get("trials", [])
              if t.get("state") == "pruned" and t.get("epochs")]
    if pruned:
        axes.scatter(*zip(*pruned), marker="x", color="#888", label="pruned (its last epoch)")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {result['metric']}")
    axes.legend(fontsize=8)
    axes.xaxis.get_major_locator().set_params(integer=True)
    return f'<h2 id="history">Scores over the trials</h2>{png_image(figure, "scores over the trials")}'


def _importances(result: dict) -> str:
    found = result.get("importances")
    if not found:
        return ('<h2 id="importances">Parameter importances</h2><p class="muted">Computed once the search has '
                "three complete trials.</p>")
    shares = sorted(found["shares"].items(), key=lambda item: item[1])
    figure, axes = new_figure(6.4, 0.5 + 0.45 * len(shares))
    axes.barh([k for k, _ in shares], [v for _, v in shares], color="#4c72b0")
    axes.set_xlabel("share of the score's variation explained")
    axes.set_xlim(0, 1)
    table = html_table(["parameter", "importance"], [[k, v] for k, v in reversed(shares)], digits=3)
    return (f'<h2 id="importances">Parameter importances</h2><p>How much of the variation of the '
            f"{found['complete_trials']} complete trials' validation {escape(result['metric'])} each parameter "
            f"explains ({escape(found['method'])}); pruned and failed trials are left out.</p>"
            f"{png_image(figure, 'parameter importances')}{table}")


def _slices(result: dict) -> str:
    complete, space = _complete(result), result.get("space") or {}
    if not complete or not space:
        return ""
    columns, rows = min(len(space), 3), math.ceil(len(space) / 3)
    figure, grid = new_figure(3.3 * columns, 3.0 * rows, columns, rows)
    grid = np.atleast_1d(grid).ravel()
    for axes, (key, spec) in zip(grid, space.items()):
        (kind, bounds), = spec.items()
        values = [t["params"].get(key) for t in complete]
        scores = [t["value"] for t in complete]
        if kind == "choice":
            labels = [_shown(c) for c in bounds]
            axes.scatter([labels.index(_shown(v)) if _shown(v) in labels else -1 for v in values], scores,
                         color="#4c72b0")
            axes.set_xticks(range(len(labels)), labels)
            axes.set_xlim(-0.5, len(labels) - 0.5)
        else:
            axes.scatter(values, scores, color="#4c72b0")
            if kind.startswith("log"):
                from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

                axes.set_xscale("log")  # ticks at 1, 2 and 5 of each decade: a range within one decade gets some
                axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
                axes.xaxis.set_minor_formatter(NullFormatter())
                axes.tick_params(axis="x", labelrotation=30)
        axes.set_xlabel(key)
        axes.set_ylabel(result["metric"])
    for axes in grid[len(space):]:
        axes.set_visible(False)
    figure.tight_layout()
    return (f'<h2 id="slices">Scores by each parameter\'s value</h2><p>Each complete trial, once per parameter.</p>'
            f"{png_image(figure, 'scores by each parameter value')}")


def _epochs(result: dict) -> str:
    trials = [t for t in result.get("trials", []) if t.get("epochs")]
    if not trials:
        return ""
    figure, axes = new_figure(7.0, 3.4)
    for t in trials:
        epochs = [int(k) for k in t["epochs"]]
        style = {"complete": ("-", "#4c72b0", 1.0), "pruned": ("--", "#999", 0.8)}.get(t["state"], (":", "#d9822b", 0.8))
        axes.plot(epochs, list(t["epochs"].values()), style[0], color=style[1], alpha=style[2], marker="o", markersize=3)
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"validation {result['metric']}")
    axes.xaxis.get_major_locator().set_params(integer=True)
    return (f'<h2 id="epochs">Validation score by epoch</h2><p>What the pruner saw: complete trials solid, pruned '
            f"ones dashed.</p>{png_image(figure, 'validation score by epoch')}")


def _trials(result: dict, folder: Path) -> str:
    keys = list(result.get("space") or {})
    rows = [[t["number"], t["state"], t.get("value"), *[_shown(t["params"].get(k, "")) for k in keys],
             len(t.get("epochs") or {}), t.get("seconds"), t.get("run") or "", t.get("error") or ""]
            for t in result.get("trials", [])]
    return (f'<h2 id="trials">Trials</h2>'
            + html_table(["trial", "state", result["metric"], *keys, "epochs", "seconds", "run", "error"], rows,
                         numeric_from=2)
            + f'<p class="muted">search.json in {escape(str(folder))} holds the same, for scripts.</p>')


# --- a cross-validation ---------------------------------------------------------------------------

_CV_NAV = [("diagnosis", "Diagnosis"), ("scores", "Scores"), ("runs", "Runs"), ("config", "Configuration")]


def _lead(result: dict) -> str:
    from strop.tasks import TASKS

    names = list(result["summary"])
    task = (result.get("config") or {}).get("task", {}).get("name")
    lead = getattr(TASKS.get(task), "lead_metric", None) if task in TASKS.names() else None
    return lead if lead in names else names[0]


def cv_page(result: dict, folder: Path) -> str:
    """A cross-validation's scores: mean, spread and 95% interval of each metric, every run's scores, and
    how much the folds and seeds disagree."""
    if not result.get("runs") or "summary" not in result:
        raise StropError(f"{folder / RESULT_FILES['cv']} holds no finished cross-validation: continue it with the "
                         f"strop cv command that started it, with --output {folder} train.resume=true")
    metric = _lead(result)
    lead = result["summary"][metric]
    folds, seeds = result["folds"], len(result["seeds"])
    cards = [(score_text(lead["mean"]) + (f" ± {score_text(lead['std'])}" if lead["std"] is not None else ""), metric),
             (f"[{score_text(lead['ci95'][0])}, {score_text(lead['ci95'][1])}]" if lead["ci95"] else "—",
              "95% interval of the mean"),
             (str(len(result["runs"])), f"runs ({folds} fold(s) x {seeds} seed(s))")]
    header = _header(f"strop cv: {folder.name}", f"scored on {result['scored_on']} · {folder}", cards)
    summary_rows = [[name, s["mean"], s["std"], *(s["ci95"] or [None, None]),
                     min(r["metrics"][name] for r in result["runs"]), max(r["metrics"][name] for r in result["runs"])]
                    for name, s in result["summary"].items()]
    scores = (f'<h2 id="scores">Scores</h2>{_cv_chart(result, metric)}'
              + html_table(["metric", "mean", "std", "95% low", "95% high", "min", "max"], summary_rows)
              + '<p class="muted">Folds share training data, so the interval is the usual approximation.</p>')
    names = list(result["summary"])
    # trained on: what the run trained on, of its fold's training rows (the rest validated it, where no
    # data.validation was given); a cv.json from before trained_on was recorded gives the fold's rows
    rows = [[r["seed"], r["fold"] or "", *[r["metrics"][n] for n in names],
             r.get("trained_on", r.get("train_examples", "")), r.get("train_examples", ""),
             r.get("scored_examples", "")] for r in result["runs"]]
    runs = f'<h2 id="runs">Runs</h2>' + html_table(["seed", "fold", *names, "trained on", "fold's training rows",
                                                    "scored on"], rows)
    # the rule of thumb is a spread in a score's own units (accuracy, F1, r2); an error in the target's units has
    # none, so a regression's folds and seeds are judged on its r2 (or spearman), which the runs also measured
    judged = agreement_metric(result, metric)
    agree = ("Folds and seeds agree within the rule of thumb." if judged == metric else
             f"Folds and seeds agree within the rule of thumb on {judged} ({metric} is in the target's units, "
             "which have none)." if judged else
             f"{metric} is in the target's units, for which strop has no rule of thumb on the spread of folds and "
             "seeds: read it in the runs below.")
    parts = [header, findings_html(cv_findings(result, judged) if judged else [], agree),
             scores, runs, _configuration(result.get("config") or {}, "The config every run used (each with its own "
                                          "fold and seed).")]
    return page(f"strop cv report: {folder.name}", parts, _CV_NAV)


def _cv_chart(result: dict, metric: str) -> str:
    figure, axes = new_figure(6.4, 3.2)
    seeds = result["seeds"]
    for i, seed in enumerate(seeds):
        runs = [r for r in result["runs"] if r["seed"] == seed]
        axes.scatter([r["fold"] or i + 1 for r in runs], [r["metrics"][metric] for r in runs], label=f"seed {seed}",
                     zorder=3)
    lead = result["summary"][metric]
    axes.axhline(lead["mean"], color="#2f9e62", label="mean")
    if lead["ci95"]:
        axes.axhspan(*lead["ci95"], color="#2f9e62", alpha=0.15, label="95% interval of the mean")
    axes.set_xlabel("fold" if result["folds"] >= 2 else "run")
    axes.set_ylabel(metric)
    axes.legend(fontsize=8)
    axes.xaxis.get_major_locator().set_params(integer=True)
    return png_image(figure, f"{metric} of every run")


def agreement_metric(result: dict, metric: str) -> str | None:
    """The metric the spread of folds and seeds is judged on: the lead one where it is a share (accuracy, F1,
    r2), else the first unit-free one the runs measured (r2, spearman), else None."""
    if metric in diagnose.BOUNDED_METRICS:
        return metric
    return next((name for name in ("r2", "spearman") if name in result["summary"]), None)


def cv_findings(result: dict, metric: str) -> list[Finding]:
    """Seeds that disagree (diagnose's rule, on each seed's mean over the folds), folds that disagree, and a
    regression that predicts worse than the targets' mean (r2 below 0)."""
    out = []
    r2 = (result["summary"].get("r2") or {}).get("mean")
    if r2 is not None and r2 < 0:
        out.append(Finding(
            "below_the_mean", "Worse than predicting the mean",
            f"The runs' mean r2 is {r2:.4f}: below 0, their predictions are further from the targets than the "
            "targets' own mean would be.",
            ["Train longer or at another learning rate (strop lr-find): an r2 below 0 after training is most often "
             "a model that has not learnt yet.",
             "Look at the targets: outliers, or a scale far from 1, slow training down.",
             "Check that the inputs carry what the targets depend on."]))
    accuracy, majority = (result["summary"].get("accuracy") or {}).get("mean"), result.get("majority_share")
    if accuracy is not None and majority is not None and accuracy <= majority:
        out.append(Finding(
            "chance", "No better than the most frequent class",
            f"The runs' mean accuracy is {accuracy:.4f}; always predicting the most frequent class scores "
            f"{majority:.4f} on these data: the model has learned nothing the label frequencies do not give.",
            ["Train longer (train.epochs) or at another learning rate (strop lr-find): with few examples a class, a "
             "run may stop before it learns.",
             "Check that the labels follow from the inputs (a shifted label column, texts cut short by "
             "model.max_length).",
             "With many classes and few examples of each, more examples a class help most (strop curve estimates "
             "how many)."]))
    per_seed = {s: [r["metrics"][metric] for r in result["runs"] if r["seed"] == s] for s in result["seeds"]}
    by_seed = {f"seed {s}": float(np.mean(scores)) for s, scores in per_seed.items()}
    unstable = diagnose.instability(by_seed, metric)
    if unstable:
        out.append(unstable)
    # Each seed draws its own folds, so fold k of one seed and fold k of another hold different examples: the
    # folds' spread is measured within each seed (pooled over the seeds), never across a fold number.
    variances = [np.var(scores, ddof=1) for scores in per_seed.values() if len(scores) >= 2]
    if result["folds"] >= 2 and variances:
        spread = float(np.sqrt(np.mean(variances)))
        lowest = min(result["runs"], key=lambda r: r["metrics"][metric])
        highest = max(r["metrics"][metric] for r in result["runs"])
        if metric in diagnose.BOUNDED_METRICS and spread > diagnose.SEED_SPREAD:
            out.append(Finding(
                "fold_spread", "The folds disagree",
                f"Held-out folds score from {lowest['metrics'][metric]:.4f} (seed {lowest['seed']}, fold "
                f"{lowest['fold']}) to {highest:.4f} {metric}; the folds of a seed differ by a standard deviation "
                f"of {spread:.4f}: a single validation split would be off by about that much.",
                ["Report the cross-validated mean with its interval, not one split's score.",
                 "More labelled data narrows it (strop curve estimates how much more would help).",
                 f"Look at the examples of the lowest fold (seed {lowest['seed']}, fold {lowest['fold']}; with "
                 "--keep-runs its run is kept): a group of inputs unlike the rest may live there."]))
    return out


# --- a learning curve ----------------------------------------------------------------------------

_CURVE_NAV = [("diagnosis", "Answers"), ("curve", "Curve"), ("points", "Points"), ("config", "Configuration")]


def curve_page(result: dict, folder: Path) -> str:
    """A learning curve: the runs, the fitted power law with its band, and the answers (the score at twice the
    data, where the curve levels off, the labels a target needs)."""
    from strop.curve import PLOT_FILE, describe, draw, scores_by_size

    if "fit" not in result:
        raise StropError(f"{folder / RESULT_FILES['curve']} holds no finished learning curve: continue it with the "
                         f"strop curve command that started it, with --output {folder} train.resume=true")
    metric, fit = result["metric"], result["fit"]
    if "target" in fit:  # "never" is infinite, which curve.json holds as null
        target = fit["target"]
        target["examples"] = math.inf if target["examples"] is None else target["examples"]
        target["examples_interval"] = [math.inf if v is None else v for v in target["examples_interval"]]
    twice = fit["twice_the_data"]
    cards = [(f"{fit['score_at_largest']:.4f}", f"{metric} at {fit['largest_size']:,.0f} examples (fitted)"),
             (f"{twice['gain']:+.4f}", "change at twice the data (lower is better)" if fit.get("lower_is_better")
              else "gain at twice the data"),
             (f"{fit['asymptote']:.4f}", "where the curve levels off")]
    if "target" in fit:
        t = fit["target"]
        reached = t.get("measured")
        needed = ("never" if math.isinf(t["examples"]) else f"≤ {min(result['sizes']):,}" if t.get("below_measured")
                  # fitted below the fewest size, whose runs fall short of it: the measured answer
                  else f"{reached['examples']:,.0f} (measured)" if reached and t["examples"] < min(result["sizes"])
                  # within the sizes measured, where no size's runs reach it: the fit's answer, said as such
                  else f"{t['examples']:,.0f} (fitted; no run reached it)" if reached is None
                  and t["examples"] <= max(result["sizes"]) else f"{t['examples']:,.0f}")
        cards.append((needed, f"examples for {metric} {t['score']}"))
    header = _header(f"strop curve: {folder.name}", f"{metric} against labelled training examples · "
                     f"{len(result['seeds'])} seed(s) per size · {folder}", cards)
    answers = findings_html(curve_findings(result), "", title="Answers") + f"<pre>{escape(describe(result))}</pre>"
    if (folder / PLOT_FILE).is_file():  # strop curve drew it from the same result: its 200 fits are not redone
        image = png_bytes_image((folder / PLOT_FILE).read_bytes(), "learning curve")
    else:
        figure, axes = new_figure(6.4, 4.2)
        draw(result, axes)
        image = png_image(figure, "learning curve")
    chart = f'<h2 id="curve">Curve</h2>{image}'
    rows = [[size, float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else "–", len(values)]
            for size, values in scores_by_size(result).items()]
    p, q = fit["parameters"], fit["parameter_intervals"]
    free = fit.get("ceiling_free")  # a bounded score: the forecast is the mean of this law and a - b n^-c
    extra = [[f"{k}'", free[k], *free[f"{k}_interval"]] for k in "bc"] if free else []
    fitted = html_table(["parameter", "value", "95% low", "95% high"], [[k, p[k], *q[k]] for k in "abc"] + extra)
    points = (f'<h2 id="points">Points</h2>' + html_table(["examples", f"{metric} mean", "std", "seeds"], rows)
              + f"<h3>The fit: {escape(fit['model'])}</h3>{fitted}")
    parts = [header, answers, chart, points,
             _configuration(result.get("config") or {}, "The config every run used (each on its own subset).")]
    return page(f"strop curve report: {folder.name}", parts, _CURVE_NAV)


def curve_findings(result: dict) -> list[Finding]:
    """What the curve says about labelling more: worth it (the gain at twice the data is above zero in its
    whole 95% interval), not worth it (below FLAT in its whole interval), or not yet known. FLAT is in the
    metric's units where they are a share (accuracy, F1, r2); for an error in the target's units (rmse, mae,
    loss) it is that share of the score, so the verdict does not depend on the units."""
    from strop.curve import fit_misses_largest, lower_is_better, measured_trend, shown
    from strop.methods.auto import fewshot_fits
    from strop.selftrain import PSEUDO_LABEL_TASKS

    metric, fit = result["metric"], result["fit"]
    twice = fit["twice_the_data"]
    better = -1.0 if lower_is_better(fit) else 1.0  # a loss improves as it falls
    gain = better * twice["gain"]
    low, high = sorted(better * g for g in twice["gain_interval"])
    flat = FLAT if metric in diagnose.BOUNDED_METRICS else FLAT * abs(fit["score_at_largest"])
    said = (f"At twice the data ({twice['size']:,.0f} examples) the fitted curve moves {metric} by "
            f"{shown(twice['gain'], True)} [{shown(twice['gain_interval'][0], True)}, "
            f"{shown(twice['gain_interval'][1], True)}] from {shown(fit['score_at_largest'])} at "
            f"{fit['largest_size']:,.0f}")
    trend = measured_trend(result)[0]
    if low > 0 and gain >= flat and trend in ("flat", "worse"):  # the law's shape forecasts what no point shows
        return [Finding("unknown", "The curve cannot yet tell whether more labels help",
                        said + ", but the measured scores show no gain with more data (see the warnings): the "
                        "forecast gain is the law's shape, not something measured.",
                        ["Check the runs (a model that predicts one class, too few epochs), then measure larger "
                         "sizes (--fractions) or more seeds (--seeds)."])]
    if low > 0 and gain >= flat and fit_misses_largest(result):  # the gain starts from a score no run has
        return [Finding("unknown", "The curve cannot yet tell whether more labels help",
                        said + ", but that fitted score lies outside the interval of the runs measured there (see "
                        "the warnings): the law does not follow the largest sizes, whose scores may have levelled "
                        "off, so its forecast gain is not something measured.",
                        ["Read the points: where the largest sizes score alike, more labels of the same kind may "
                         "change little; measure larger sizes (--fractions) to tell."])]
    if low > 0 and gain >= flat:
        config = result.get("config", {})
        task_name, method = config.get("task", {}).get("name"), config.get("method", {}).get("name")
        input_kind = "vector" if config.get("model", {}).get("name") == "mlp" else "text"
        fewshot = fewshot_fits(task_name, input_kind, method, result.get("classes"))
        scarce = (["method.name=fewshot"] if fewshot else []) \
            + (["self-training on unlabelled data (data.unlabeled)"] if task_name in PSEUDO_LABEL_TASKS else [])
        meanwhile = ([f"Meanwhile, methods for scarce labels may take part of the gain: {', or '.join(scarce)}."]
                     if scarce else [])
        return [Finding("more_data_helps", "More labels would help", said + ".",
                        ["Label more examples, drawn like the ones you have.", *meanwhile])]
    if high < flat:
        return [Finding("levels_off", "The curve has levelled off",
                        said + ": more labels of the same kind would change little (" +
                        ("the forecast tends to " if fit.get("ceiling_free") else "it levels off at ") +
                        f"{shown(fit['asymptote'])}).",
                        ["Change the model or the method (a larger backbone, full fine-tuning instead of a frozen "
                         "one) rather than labelling more.", "Check the labels: noise caps the score."])]
    return [Finding("unknown", "The curve cannot yet tell whether more labels help",
                    said + ": its 95% interval holds both a worthwhile gain and none.",
                    ["Run more seeds per size (--seeds) or more sizes (--fractions) to narrow it."])]
