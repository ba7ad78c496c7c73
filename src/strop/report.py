"""report.html: one self-contained page that says how well a run did and why (`strop report RUN`).

At the end of `strop fit` the main process writes two files beside the model, then the report from them:

  data_summary.json            classes, lengths, targets, duplicates and train/validation overlap of the data
  validation_predictions.jsonl one line per validation example: its input, its target, the model's output

The report is then a function of the run directory alone: `strop report RUN` rebuilds it without the data
files (which may have moved: config.yaml keeps the paths as they were typed) and without loading the model.
A run made before these files existed gets them recomputed once, from its config's data and its saved model.
The predictions are those of the saved model in fp32, what `strop evaluate` on the validation file gives.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from strop.data.images import image_key
from strop.errors import StropError
from strop.evaluate import diagnose
from strop.runs import RunDir, atomic_write_text, to_json
from strop.tasks.base import Examples, Task

DATA_SUMMARY = "data_summary.json"
PREDICTIONS = "validation_predictions.jsonl"
REPORT = "report.html"
WORST = 12  # examples listed under the worst misclassified
SHOWN = 5  # duplicates and overlaps quoted in the data summary
BINS = 10  # of the reliability diagram and the expected calibration error
# Keys that differ between runs of the same config with another seed (for instability across seeds).
_SEED_FREE_KEYS = {"output_dir", "train.seed", "train.resume", "train.quiet", "train.keep_checkpoint",
                   "train.trackers"}


# --- what fit writes -------------------------------------------------------------------------------

def report_after_fit(run_root: Path, task: Task, train: Examples, validation: Examples, model,
                     quiet: bool = False, scored: tuple[list, list] | None = None,
                     val_features: list[dict] | None = None) -> Path | None:
    """Writes the data summary, the validation predictions and report.html at the end of `strop fit` (main
    process). A report that fails is said on stderr and costs nothing else: the run is already complete.

    scored, val_features: the training loop's last validation of the saved model ((outputs, targets), in its
    order) and the encoded validation examples; where given, those outputs are reused instead of predicting
    the validation set once more (on a CPU that pass costs as much as an epoch's validation)."""
    try:
        outputs = _in_input_order(task, validation, scored, val_features) if scored is not None else None
        if outputs is None:
            from strop.predict import Predictor

            outputs = Predictor(model, task, {}).outputs(validation.inputs)
        save_report_inputs(run_root, task, train, validation, outputs)
        path = build_report(run_root)
    except Exception as error:  # noqa: BLE001 - the run is complete and saved; the report is an extra
        print(f"strop fit: warning: report.html could not be written ({type(error).__name__}: {error}); the run "
              f"is complete. Try again with: strop report {run_root}", file=sys.stderr)
        return None
    if not quiet:
        print(f"report: {path}")
    return path


def _in_input_order(task: Task, validation: Examples, scored: tuple[list, list],
                    val_features: list[dict]) -> list[np.ndarray] | None:
    """The loop's validation outputs in the order of the validation examples. The loop validates in length
    order (a stable sort by `example_length`, strop.train.loop.train); the same sort gives the permutation,
    and the targets it carries must match the examples' own, else None (the caller predicts afresh)."""
    from strop.train.cache import example_length

    outputs, targets = scored
    if val_features is None or len(outputs) != len(validation) or len(val_features) != len(validation):
        return None
    order = sorted(range(len(val_features)), key=lambda i: example_length(val_features[i]))
    expected = task.scored_targets(validation.targets)
    for position, index in enumerate(order):
        got, want = np.asarray(targets[position], dtype=np.float64), np.asarray(expected[index], dtype=np.float64)
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-6):
            return None
    in_order: list = [None] * len(order)
    for position, index in enumerate(order):
        in_order[index] = outputs[position]
    return in_order


def save_report_inputs(run_root: Path, task: Task, train: Examples, validation: Examples,
                       outputs: list[np.ndarray]) -> None:
    """data_summary.json and validation_predictions.jsonl, each written atomically."""
    atomic_write_text(run_root / DATA_SUMMARY, to_json(data_summary(task, train, validation), indent=2) + "\n",
                      "the data summary")
    # the outputs as computed, not rounded as predictions are written: the report's scores, computed from them,
    # are then the run's (6 digits tied a near-constant model's values, and moved its rank correlation)
    lines = [to_json({"input": _plain(x), "target": _plain(t), "output": _plain(np.asarray(o, dtype=np.float64))},
                     ensure_ascii=False)
             for x, t, o in zip(validation.inputs, validation.targets, outputs)]
    atomic_write_text(run_root / PREDICTIONS, "".join(line + "\n" for line in lines), "the validation predictions")


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# --- the data --------------------------------------------------------------------------------------

def data_summary(task: Task, train: Examples, validation: Examples) -> dict[str, Any]:
    """Classes (or targets, or entity types), lengths, duplicates and train/validation overlap."""
    kind = "image" if "image" in task.input_kinds else _input_kind(train.inputs[0]) if len(train) else "text"
    summary: dict[str, Any] = {"input": kind, "train_examples": len(train), "validation_examples": len(validation)}
    if kind == "vector":
        summary["features"] = len(train.feature_columns or train.inputs[0])
    elif kind == "image":
        pass  # image sizes are the backbone's preprocessing's business; duplicates are found by content
    else:
        summary["lengths"] = _length_summary([_words(x) for x in train.inputs], [_words(x) for x in validation.inputs])
    summary.update(_target_summary(task, train, validation))
    summary.update(_duplicates(train, validation, _comparison_key(task)))
    return summary


_REPEATS_SAID: set = set()  # (train source, validation source): said once a process (self-training's rounds)


def say_repeats(task: Task, train: Examples, validation: Examples) -> None:
    """Says on stderr, before a run trains, what the report would show only after it: validation inputs that
    are training inputs too (the validation scores read higher than on new data), and training inputs given
    with different targets (the model cannot fit both)."""
    from strop.data.tables import say_note

    if (train.source, validation.source) in _REPEATS_SAID:
        return
    _REPEATS_SAID.add((train.source, validation.source))
    found = _duplicates(train, validation, _comparison_key(task))
    overlap, repeats = found["overlap"], found["duplicates"]
    if overlap["count"]:
        say_note(f"data: {overlap['count']} of {len(validation)} validation inputs also occur in the training data "
                 f"(e.g. {overlap['examples'][0][:80]!r}): the validation scores will read higher than on new data; "
                 "remove them from one of the two files (report.html lists them)")
    if repeats["conflicting"]:
        example = repeats["examples"][0]
        say_note(f"data.train: {repeats['conflicting']} input(s) occur with different targets (e.g. "
                 f"{example['input'][:80]!r} as {' and '.join(map(repr, example['targets']))}): the model cannot fit "
                 "both; correct or remove the wrong ones")


def _input_kind(x) -> str:
    if isinstance(x, str):
        return "text"
    if isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, str) for v in x):
        return "text pair"
    if isinstance(x, np.ndarray):
        return "vector"
    return "words"


def _words(x) -> int:
    """Length of an input in words (whitespace-separated; of both texts of a pair)."""
    if isinstance(x, str):
        return len(x.split())
    if isinstance(x, tuple):
        return sum(len(part.split()) for part in x)
    return len(x)


def _length_summary(train: list[int], validation: list[int]) -> dict[str, Any]:
    def stats(values: list[int]) -> dict[str, float]:
        if not values:
            return {}
        array = np.asarray(values)
        return {"min": int(array.min()), "median": float(np.median(array)), "mean": round(float(array.mean()), 2),
                "p95": float(np.percentile(array, 95)), "max": int(array.max())}

    top = max(train + validation + [1])
    edges = np.unique(np.linspace(0, top + 1, min(top + 2, 31)).round().astype(int)).tolist()
    return {"unit": "words", "train": stats(train), "validation": stats(validation),
            "histogram": {"edges": edges, "train": np.histogram(train, edges)[0].tolist(),
                          "validation": np.histogram(validation, edges)[0].tolist()}}


def _target_summary(task: Task, train: Examples, validation: Examples) -> dict[str, Any]:
    info = task.info()
    if "targets" in info:  # regression: numbers, per target column
        columns = info["targets"]
        out = {}
        for j, column in enumerate(columns):
            t = np.asarray([row[j] for row in train.targets], dtype=np.float64)
            v = np.asarray([row[j] for row in validation.targets], dtype=np.float64)
            edges = np.histogram_bin_edges(np.concatenate([t, v]), bins=20)
            out[column] = {"train": _number_stats(t), "validation": _number_stats(v),
                           "histogram": {"edges": edges.tolist(), "train": np.histogram(t, edges)[0].tolist(),
                                         "validation": np.histogram(v, edges)[0].tolist()}}
        return {"class_kind": None, "targets": out}
    if task.level == "token":
        from seqeval.metrics.sequence_labeling import get_entities

        def entity_counts(examples: Examples) -> Counter:
            return Counter(kind for tags in examples.targets for kind, _, _ in get_entities(list(tags)))

        counts_t, counts_v = entity_counts(train), entity_counts(validation)
        tags = Counter(tag for tags in train.targets for tag in tags)
        return {"class_kind": "entity type", "tags": {tag: tags.get(tag, 0) for tag in info["labels"]},
                "classes": {kind: {"train": counts_t.get(kind, 0), "validation": counts_v.get(kind, 0)}
                            for kind in sorted(set(counts_t) | set(counts_v))},
                "tokens": sum(tags.values())}
    labels = info.get("labels", [])
    multi = train.targets and isinstance(train.targets[0], (tuple, list))
    flat = (lambda targets: [label for labels in targets for label in labels]) if multi else (lambda targets: targets)
    counts_t, counts_v = Counter(flat(train.targets)), Counter(flat(validation.targets))
    summary = {"class_kind": "label" if multi else "class",
               "classes": {name: {"train": counts_t.get(name, 0), "validation": counts_v.get(name, 0)}
                           for name in labels}}
    if multi:
        summary["labels_per_example"] = round(sum(len(t) for t in train.targets) / max(len(train), 1), 3)
    return summary


def _number_stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max())}


def _comparison_key(task: Task):
    """How the task's inputs are compared for repeats and overlaps: images by their bytes, others by `_key`."""
    return image_key if "image" in task.input_kinds else _key


def _key(x):
    """An input made comparable as splits compare them (`strop.data.splits.input_key`), vectors by their values
    to 9 decimals (a copy written with fewer digits is a copy)."""
    from strop.data.splits import input_key

    if isinstance(x, np.ndarray):
        return tuple(np.round(x.astype(np.float64), 9).tolist())
    return input_key(x)


def _shown(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, tuple) and all(isinstance(v, str) for v in x):
        return " ‖ ".join(x)
    if isinstance(x, np.ndarray):
        return "[" + ", ".join(f"{v:.4g}" for v in x[:8]) + (", ...]" if len(x) > 8 else "]")
    return " ".join(x)


def _hashable(target):
    return tuple(target) if isinstance(target, (list, tuple, np.ndarray)) else target


def _duplicates(train: Examples, validation: Examples, key=_key) -> dict[str, Any]:
    """Repeated training inputs (and those repeated with different targets), validation inputs in training."""
    seen: dict[Any, set] = {}
    first: dict[Any, Any] = {}
    keys = [key(x) for x in train.inputs]
    for k, x, target in zip(keys, train.inputs, train.targets or [None] * len(train)):
        seen.setdefault(k, set()).add(_hashable(target))
        first.setdefault(k, x)
    counts = Counter(keys)
    repeated = [k for k, n in counts.items() if n > 1]
    conflicting = [k for k in repeated if len(seen[k]) > 1]
    overlap = [x for x in validation.inputs if key(x) in seen]
    return {"duplicates": {"train": sum(counts[k] - 1 for k in repeated), "distinct": len(repeated),
                           "conflicting": len(conflicting),
                           "examples": [{"input": _shown(first[k]), "copies": counts[k],
                                         "targets": sorted(map(str, seen[k]))} for k in (conflicting or repeated)[:SHOWN]]},
            "overlap": {"count": len(overlap), "examples": [_shown(x) for x in overlap[:SHOWN]]}}


# --- reading a run ---------------------------------------------------------------------------------

def build_report(run_dir: str | Path) -> Path:
    """Writes run_dir/report.html from the run directory (rebuilding the data summary and validation
    predictions first where the run has none) and returns its path.

    Raises:
        StropError: the folder is no complete run.
    """
    from strop.report_html import render

    run = RunDir(Path(run_dir))
    if run.summary.is_file() and json.loads(run.summary.read_text(encoding="utf-8")).get("task") == "masked_lm":
        raise StropError(f"{run.root} is a run of strop pretrain, which has no report: its summary.json holds the "
                         "validation loss and perplexity, and its model/ is what strop fit model.name=... starts "
                         "from; a report comes with that fit")
    if not run.summary.is_file() or not (run.model / "strop.json").is_file():
        raise StropError(f"{run.root} holds no complete run (no summary.json or model/strop.json): give the run "
                         "directory of a strop fit that finished")
    if not (run.root / PREDICTIONS).is_file() or not (run.root / DATA_SUMMARY).is_file():
        _recompute_inputs(run)
    page = render(analyse(run.root))
    path = run.root / REPORT
    atomic_write_text(path, page, "the report")
    return path


def _recompute_inputs(run: RunDir) -> None:
    """For a run made before the report: its data read again as its config says, its model's predictions."""
    from strop.config import load_config
    from strop.fit import load_splits, resolve_config
    from strop.predict import load

    cfg = resolve_config(load_config(run.config))
    predictor = load(run.root)
    try:
        splits = load_splits(cfg, predictor.model.body.kind)
    except StropError as error:
        raise StropError(f"{run.root} has no {PREDICTIONS} (a run from before the report), and its data cannot be "
                         f"read again as its config.yaml says ({error}); run strop report from the folder the run "
                         "was started in") from None
    save_report_inputs(run.root, predictor.task, splits.train, splits.validation,
                       predictor.outputs(splits.validation.inputs))


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _read_lines(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def analyse(run_dir: str | Path) -> dict[str, Any]:
    """Everything report.html shows, as plain data: the run's files, the per-task analysis of the validation
    predictions, the scores of other seeds, and the diagnosis."""
    from strop.model import read_info
    from strop.tasks import TASKS

    run = RunDir(Path(run_dir))
    info = read_info(run.model)
    task = TASKS.get(info["task"]).from_info(info)
    summary = _read_json(run.summary, {})
    history = _read_lines(run.metrics)
    data = _read_json(run.root / DATA_SUMMARY, {})
    rows = _read_lines(run.root / PREDICTIONS)
    config_text = run.config.read_text(encoding="utf-8") if run.config.is_file() else ""
    import yaml

    config = yaml.safe_load(config_text) or {}
    # the name resolved: `strop report .` is titled by the run's folder
    analysis = {"run": str(run.root), "name": run.root.resolve().name, "task": task.name, "info": info,
                "summary": summary, "history": history, "data": data, "config_text": config_text, "config": config,
                "provenance": _read_json(run.provenance, {}), "n_predictions": len(rows),
                # method.name=fewshot: the stage that tuned the body on pairs before the head's epochs
                "contrastive": _read_lines(run.root / "contrastive" / "metrics.jsonl"),
                # a self-training round: every round of its folder so far, from self_training.json
                "self_training": _self_training_rounds(run.root)}
    analysis.update(analyse_predictions(task, rows))
    metric = summary.get("metric") or task.lead_metric
    analysis["seeds"] = seed_scores(run.root, config, metric)
    analysis["findings"] = findings(analysis, task, config)
    analysis["checked"] = checks_made(analysis, task, config)
    return analysis


# --- the validation predictions, per task ----------------------------------------------------------

def analyse_predictions(task: Task, rows: list[dict]) -> dict[str, Any]:
    """The task's metrics and tables over the validation predictions, the decisions for calibration, the
    worst errors, and the loss of a model that knows only the label frequencies (for underfitting)."""
    from strop.tasks.classification import Classification
    from strop.tasks.multilabel import MultiLabel
    from strop.tasks.regression import Regression
    from strop.tasks.token_classification import TokenClassification

    if not rows:
        return {"kind": None}
    targets = task.scored_targets([_as_target(r["target"]) for r in rows])
    outputs = [np.asarray(r["output"], dtype=np.float64) for r in rows]
    metrics = task.metrics(outputs, targets)
    for kind, analyser in ((Classification, _classes), (MultiLabel, _multilabel), (Regression, _regression),
                           (TokenClassification, _tokens)):
        if isinstance(task, kind):
            return {"metrics": metrics, **analyser(task, rows, outputs, targets)}
    return {"kind": None, "metrics": metrics}  # a task the report does not know yet: curves and scores only


def _as_target(value):
    return tuple(value) if isinstance(value, list) and value and not isinstance(value[0], str) else value


def _input_text(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, list) and len(x) == 2 and all(isinstance(v, str) for v in x) and " " in "".join(x):
        return " ‖ ".join(x)
    if isinstance(x, list) and x and all(isinstance(v, (int, float)) for v in x):
        return "[" + ", ".join(f"{v:.4g}" for v in x[:8]) + (", ...]" if len(x) > 8 else "]")
    if isinstance(x, list):
        return " ".join(map(str, x))
    return str(x)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Reliability diagram data and the expected calibration error (Guo et al. 2017): decisions grouped by
    confidence into equal-width bins; ECE = sum over bins of |accuracy - mean confidence| * share of decisions."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if n:
            accuracy, mean_confidence = float(correct[mask].mean()), float(confidence[mask].mean())
            ece += abs(accuracy - mean_confidence) * n / len(confidence)
        else:
            accuracy = mean_confidence = None
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": n, "accuracy": accuracy,
                      "confidence": mean_confidence})
    return {"bins": table, "ece": float(ece), "decisions": int(len(confidence)),
            "confidence": float(confidence.mean()) if len(confidence) else None,
            "accuracy": float(correct.mean()) if len(correct) else None}


def _entropy(counts: list[int]) -> float | None:
    total = sum(counts)
    if total == 0:
        return None
    return float(-sum(c / total * math.log(c / total) for c in counts if c))


def _classes(task, rows, outputs, targets) -> dict[str, Any]:
    probabilities = np.stack(outputs)
    truth = np.asarray(targets)
    decided = task.decide(probabilities)
    confidence = probabilities[np.arange(len(decided)), decided]
    correct = decided == truth
    wrong = np.flatnonzero(~correct)
    worst = sorted(wrong, key=lambda i: -confidence[i])[:WORST]
    return {"kind": "classes",
            "calibration": calibration_bins(confidence, correct),
            "confident_errors": int(((~correct) & (confidence >= diagnose.CONFIDENT)).sum()),
            "confident_decisions": int((confidence >= diagnose.CONFIDENT).sum()),
            "decisions": int(len(correct)), "errors": int(len(wrong)),
            "worst": [{"input": _input_text(rows[i]["input"]), "target": task.labels[truth[i]],
                       "predicted": task.labels[decided[i]], "confidence": float(confidence[i]),
                       "p_target": float(probabilities[i, truth[i]])} for i in worst]}


def _multilabel(task, rows, outputs, targets) -> dict[str, Any]:
    probabilities, truth = np.stack(outputs), np.stack(targets)
    decided = (probabilities >= np.asarray(task.thresholds)).astype(np.int64)
    confidence = np.where(decided == 1, probabilities, 1 - probabilities)
    correct = decided == truth
    counts = {name: {"tp": int(((decided[:, j] == 1) & (truth[:, j] == 1)).sum()),
                     "fp": int(((decided[:, j] == 1) & (truth[:, j] == 0)).sum()),
                     "fn": int(((decided[:, j] == 0) & (truth[:, j] == 1)).sum()),
                     "tn": int(((decided[:, j] == 0) & (truth[:, j] == 0)).sum())} for j, name in enumerate(task.labels)}
    cells = [(i, j) for i, j in zip(*np.nonzero(~correct))]
    worst = sorted(cells, key=lambda c: -confidence[c])[:WORST]
    return {"kind": "multilabel", "label_counts": counts,
            "calibration": calibration_bins(confidence.ravel(), correct.ravel()),
            "confident_errors": int(((~correct) & (confidence >= diagnose.CONFIDENT)).sum()),
            "confident_decisions": int((confidence >= diagnose.CONFIDENT).sum()),
            "decisions": int(correct.size), "errors": int((~correct).sum()),
            "worst": [{"input": _input_text(rows[i]["input"]), "label": task.labels[j],
                       "target": "present" if truth[i, j] else "absent",
                       "predicted": "present" if decided[i, j] else "absent",
                       "confidence": float(confidence[i, j]),
                       "given": ", ".join(rows[i]["target"])} for i, j in worst]}


def _regression(task, rows, outputs, targets) -> dict[str, Any]:
    predicted, truth = np.stack(outputs), np.stack(targets)  # (n, targets)
    standardised = np.abs(predicted - truth) / np.asarray(task.std)
    worst = np.argsort(-standardised.max(axis=1))[:WORST]
    rmse = np.sqrt(((predicted - truth) ** 2).mean(axis=0))
    outliers = int((np.abs(predicted - truth) > 3 * np.maximum(rmse, 1e-12)).any(axis=1).sum())
    return {"kind": "regression", "columns": list(task.columns),
            "points": {c: {"true": truth[:, j].tolist(), "predicted": predicted[:, j].tolist()}
                       for j, c in enumerate(task.columns)},
            "confident_errors": outliers, "decisions": int(len(truth)),
            "worst": [{"input": _input_text(rows[i]["input"]),
                       "target": ", ".join(f"{v:.4g}" for v in truth[i]),
                       "predicted": ", ".join(f"{v:.4g}" for v in predicted[i]),
                       "error": ", ".join(f"{v:+.4g}" for v in predicted[i] - truth[i])} for i in worst]}


def _tokens(task, rows, outputs, targets) -> dict[str, Any]:
    tags = list(task.tags)
    decided = [o.argmax(axis=1) for o in outputs]
    confidence = np.concatenate([o.max(axis=1) for o in outputs]) if outputs else np.zeros(0)
    flat_true = np.concatenate(targets) if targets else np.zeros(0, dtype=int)
    flat_pred = np.concatenate(decided) if decided else np.zeros(0, dtype=int)
    correct = flat_true == flat_pred
    matrix = np.zeros((len(tags), len(tags)), dtype=np.int64)
    np.add.at(matrix, (flat_true, flat_pred), 1)

    def sentence_badness(i: int) -> float:
        wrong = decided[i] != targets[i]
        return float(outputs[i].max(axis=1)[wrong].max()) if wrong.any() else -1.0

    worst = [i for i in sorted(range(len(rows)), key=lambda i: -sentence_badness(i)) if sentence_badness(i) >= 0][:WORST]
    return {"kind": "tokens", "labels": tags, "confusion_matrix": matrix.tolist(),
            "calibration": calibration_bins(confidence, correct),
            "confident_errors": int(((~correct) & (confidence >= diagnose.CONFIDENT)).sum()),
            "confident_decisions": int((confidence >= diagnose.CONFIDENT).sum()),
            "decisions": int(len(correct)), "errors": int((~correct).sum()),
            "worst": [{"words": [{"word": str(w), "target": tags[t], "predicted": tags[p]}
                                 for w, t, p in zip(rows[i]["input"], targets[i], decided[i])],
                       "confidence": sentence_badness(i)} for i in worst]}


def chance_loss(task_name: str, data: dict[str, Any], config: dict) -> float | None:
    """The training loss of a model that predicts only the label frequencies of the training data (with class
    weights or balanced sampling, the uniform prediction's: what the loss sees is balanced)."""
    from strop.tasks.classification import IMBALANCE_RATIO

    classes = data.get("classes") or {}
    train_counts = [c["train"] for c in classes.values()]
    if data.get("class_kind") == "class":
        setting = (config.get("train") or {}).get("imbalance") or "none"
        present = [n for n in train_counts if n > 0]
        if setting == "focal" or not present:
            return None  # another loss than cross-entropy
        if setting in ("weights", "sample") or (setting == "auto" and max(present) >= IMBALANCE_RATIO * min(present)):
            return math.log(len(present))
        return _entropy(train_counts)
    if data.get("class_kind") == "label":
        n = data.get("train_examples") or 0
        if not n:
            return None
        shares = [min(max(c / n, 1e-12), 1 - 1e-12) for c in train_counts]
        return float(np.mean([-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in shares]))
    if data.get("class_kind") == "entity type":
        return _entropy(list((data.get("tags") or {}).values()))
    if data.get("targets") is not None and (config.get("task") or {}).get("loss", "mse") == "mse":
        return 1.0  # MSE on standardised targets of the mean's prediction
    return None


# --- other seeds and the diagnosis -----------------------------------------------------------------

def _flat_config(config: dict) -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def seed_scores(run_root: Path, config: dict, metric: str) -> dict[str, float]:
    """The validation `metric` of the complete runs beside this one (same parent folder) whose config differs
    from this run's only in train.seed (and output_dir), by seed; this run's included."""
    mine = {k: v for k, v in _flat_config(config).items() if k not in _SEED_FREE_KEYS}
    run_root = run_root.resolve()  # `strop report .`: the parent of "." is "." itself
    scores = {}
    try:
        siblings = sorted(p for p in run_root.parent.iterdir() if p.is_dir())
    except OSError:
        return {}
    for folder in siblings:
        summary = _read_json(folder / "summary.json")
        if folder.resolve() != run_root.resolve() and not summary:
            continue
        try:
            import yaml

            other = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError):
            continue
        flat = _flat_config(other)
        if {k: v for k, v in flat.items() if k not in _SEED_FREE_KEYS} != mine or not summary:
            continue
        value = (summary.get("validation") or {}).get(metric)
        if isinstance(value, (int, float)):
            seed = str(flat.get("train.seed"))
            if seed not in scores or folder.resolve() == run_root.resolve():
                scores[seed] = float(value)
    return scores if len(scores) > 1 else {}


def findings(analysis: dict[str, Any], task: Task, config: dict) -> list[diagnose.Finding]:
    """Every rule of strop.evaluate.diagnose applied to the run; an empty list for a healthy run."""
    data, summary, history = analysis["data"], analysis["summary"], analysis["history"]
    classes = {name: c["train"] for name, c in (data.get("classes") or {}).items()}
    train_cfg = config.get("train") or {}
    inputs = data.get("input") or "text"  # the fixes name settings of the model that read them
    smoothing = task.reads_label_smoothing
    labelled = task.name not in ("regression", "reconstruction")  # targets that are labels (or tags), not amounts
    method = config.get("method") or {}
    trains_all = method.get("name") == "full" and method.get("freeze_layers") in (0, None)
    calibrated = analysis.get("calibration") or {}
    rules = [
        diagnose.overfitting(history, summary.get("best_epoch"), _trains_body(config), inputs, smoothing),
        diagnose.underfitting(history, chance_loss(task.name, data, config), inputs, data.get("targets") is not None,
                              trains_all),
        diagnose.few_examples(classes, data.get("class_kind") or "class", inputs, _fewshot_fits(task, inputs, config),
                              (config.get("method") or {}).get("name"))
        if classes else None,
        # a regression's targets differ between repeats and far from the fit by noise, not by wrong labels
        diagnose.label_noise(analysis.get("confident_errors", 0), analysis.get("decisions", 0),
                             (data.get("duplicates") or {}).get("conflicting", 0),
                             analysis.get("confident_decisions"), smoothing) if labelled else None,
        diagnose.instability(analysis.get("seeds") or {}, summary.get("metric") or task.lead_metric),
        diagnose.leakage((data.get("overlap") or {}).get("count", 0), data.get("validation_examples", 0)),
        diagnose.imbalance(classes, train_cfg.get("imbalance"), (analysis.get("metrics") or {}).get("per_class"))
        if data.get("class_kind") == "class" else None,
        diagnose.calibration(calibrated.get("ece"), calibrated.get("decisions") or 0, calibrated.get("confidence"),
                             calibrated.get("accuracy"), smoothing),
    ]
    return [finding for finding in rules if finding is not None]


def checks_made(analysis: dict[str, Any], task: Task, config: dict) -> list[str]:
    """The diagnosis's checks that could find something in this run (`findings`' rules that had what they
    read), so that a healthy run's page claims only those: a regression has no classes, an autoencoder no
    label frequencies or decisions."""
    data = analysis["data"]
    checked = ["overfitting"]
    if chance_loss(task.name, data, config) is not None:
        checked.append("underfitting")
    if data.get("classes"):
        checked.append("classes")
    if analysis.get("decisions"):
        checked.append("confidence")
    return checked + ["overlap"]


def _fewshot_fits(task: Task, inputs: str, config: dict) -> bool:
    """Whether method.name=fewshot could train this run's task and did not (what few_examples suggests)."""
    from strop.methods.auto import fewshot_fits

    labels = getattr(task, "labels", None)
    return fewshot_fits(task.name, inputs, (config.get("method") or {}).get("name"),
                        None if labels is None else len(labels))


def _trains_body(config: dict) -> bool:
    """Whether the run's method trains the pretrained body (its Method class says)."""
    from strop.methods import METHODS

    name = (config.get("method") or {}).get("name", "full")
    return getattr(METHODS.get(name), "trains_body", True) if name in METHODS.names() else True


def _self_training_rounds(run_root: Path) -> list[dict]:
    """The rounds of the self-training whose round `run_root` is (self_training.json beside it); [] otherwise."""
    from strop.selftrain import REPORT_FILE

    if not run_root.name.startswith("round-"):
        return []
    return _read_json(run_root.parent / REPORT_FILE, {}).get("rounds", [])


def report(run_dir: str | Path, quiet: bool = False) -> Path:
    """`strop report RUN`: rebuilds RUN/report.html and returns its path; RUN may also be the output folder of
    a strop search, cv or curve, whose report is rebuilt from its search.json, cv.json or curve.json, or a
    self-training folder, whose last round's report is rebuilt.

    Raises:
        StropError: the folder is no complete run nor such a folder, or (for a run from before the report)
            its data cannot be read again.
    """
    from strop.report_studies import folder_kind, write_folder_report
    from strop.selftrain import last_round

    if not Path(run_dir).is_dir():
        raise StropError(f"{run_dir}: no such folder; give the run directory of a strop fit (or the folder of a "
                         "search, cv, curve or self-training)")
    run_dir = last_round(Path(run_dir)) or run_dir  # a self-training folder: its last round's run, its model
    path = write_folder_report(run_dir) if folder_kind(Path(run_dir)) else build_report(run_dir)
    if not quiet:
        print(f"report: {path}")
    return path
