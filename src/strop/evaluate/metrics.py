"""Classification metrics from predicted probabilities, using scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(probabilities: np.ndarray, targets: np.ndarray, labels: list[str],
                           predictions: np.ndarray | None = None) -> dict:
    """Accuracy, macro-F1, cross-entropy loss, confusion matrix and per-class scores.

    Args:
        probabilities: (n, num_classes) predicted class probabilities.
        targets: (n,) true class ids.
        labels: class names; index = class id.
        predictions: (n,) predicted class ids where a decision rule other than the most probable class is
            used (a tuned threshold); default the argmax.
    """
    classes = list(range(len(labels)))
    predictions = probabilities.argmax(axis=1) if predictions is None else predictions
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=classes, zero_division=0)
    return {
        "accuracy": float(accuracy_score(targets, predictions)),
        # Over the classes the scored data have or the model predicts: a class absent from both (a small
        # validation split without it) would count as F1 0 and understate every other class's score.
        "macro_f1": float(f1_score(targets, predictions, labels=sorted(set(targets.tolist()) | set(predictions.tolist())),
                                   average="macro", zero_division=0)),
        "classes_scored": len(set(targets.tolist()) | set(predictions.tolist())),
        "loss": cross_entropy(probabilities, targets),
        "n": int(len(targets)),
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(targets, predictions, labels=classes).tolist(),  # rows: true
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(labels)},
    }


def cross_entropy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-probability of the true class (the training loss, for softmax and sigmoid heads)."""
    true_class = probabilities[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(true_class, 1e-12, 1.0)).mean())


def regression_metrics(predicted: np.ndarray, targets: np.ndarray, columns: list[str], std: np.ndarray,
                       loss_name: str = "mse") -> dict:
    """MAE, RMSE, R² and Spearman's rank correlation, averaged over the target columns and per column;
    `loss` is the training loss (on standardised targets). predicted, targets: (n, columns)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, r2_score

    per_target = {}
    for j, name in enumerate(columns):
        p, t = predicted[:, j], targets[:, j]
        rho = spearmanr(p, t).statistic if len(t) > 1 and np.ptp(t) > 0 and np.ptp(p) > 0 else 0.0
        per_target[name] = {"rmse": float(np.sqrt(np.mean((p - t) ** 2))), "mae": float(mean_absolute_error(t, p)),
                            "r2": float(r2_score(t, p)) if len(t) > 1 else 0.0, "spearman": float(rho)}
    error = (predicted - targets) / std  # standardised, as in training
    if loss_name == "huber":
        absolute = np.abs(error)
        loss = float(np.where(absolute < 1, 0.5 * error ** 2, absolute - 0.5).mean())
    else:
        loss = float((error ** 2).mean())
    mean = {key: float(np.mean([s[key] for s in per_target.values()])) for key in ("rmse", "mae", "r2", "spearman")}
    return {**mean, "loss": loss, "n": int(len(targets)), "targets": columns, "per_target": per_target}


def multilabel_metrics(probabilities: np.ndarray, targets: np.ndarray, labels: list[str],
                       thresholds: np.ndarray) -> dict:
    """Micro and macro F1, exact-match (subset) accuracy, mean binary cross-entropy, per-label scores.
    probabilities, targets: (n, labels); a label is predicted where its probability reaches its threshold."""
    predicted = (probabilities >= thresholds).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(targets, predicted, zero_division=0)
    clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
    bce = -(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)).mean()
    # macro-F1 over the labels the scored data have or the model predicts, as for single-label classification:
    # a label absent from both would count as F1 0 and understate every other label's score
    present = np.flatnonzero((targets.sum(axis=0) > 0) | (predicted.sum(axis=0) > 0))
    return {
        "micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, predicted, average="macro", zero_division=0,
                                   labels=present if len(present) else None)),
        "labels_scored": int(len(present)),
        "exact_match": float((predicted == targets).all(axis=1).mean()),
        "loss": float(bce), "n": int(len(targets)), "labels": list(labels),
        "thresholds": {name: float(t) for name, t in zip(labels, thresholds)},
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(labels)},
    }


def tune_thresholds(probabilities: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per label, the threshold in 0.05 … 0.95 with the best F1 on these outputs (0.5 where the label never
    occurs: there is nothing to tune on). Ties go to the threshold nearest 0.5."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    chosen = []
    for j in range(targets.shape[1]):
        if targets[:, j].sum() == 0:
            chosen.append(0.5)
            continue
        scores = [f1_score(targets[:, j], probabilities[:, j] >= t, zero_division=0) for t in grid]
        best = max(scores)
        chosen.append(float(min((t for t, s in zip(grid, scores) if s == best), key=lambda t: abs(t - 0.5))))
    return chosen


def entity_metrics(outputs: list[np.ndarray], targets: list[np.ndarray], tags: list[str], scheme: str) -> dict:
    """Entity-level precision, recall and F1 (micro over entities, seqeval's default mode, which reads IOB1,
    IOB2 and BIOES), per entity type; token accuracy; mean negative log-likelihood of the true tags.
    outputs: per sentence (words, tags) probabilities; targets: per sentence (words,) tag ids."""
    from seqeval.metrics import classification_report, f1_score as entity_f1, precision_score, recall_score

    predicted = [[tags[i] for i in p.argmax(axis=1)] for p in outputs]
    true = [[tags[i] for i in t] for t in targets]
    flat_p = np.concatenate([p.argmax(axis=1) for p in outputs]) if outputs else np.zeros(0)
    flat_t = np.concatenate(targets) if targets else np.zeros(0)
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(tags)))
    report = classification_report(true, predicted, output_dict=True, zero_division=0)
    per_type = {kind: {"precision": float(s["precision"]), "recall": float(s["recall"]), "f1": float(s["f1-score"]),
                       "support": int(s["support"])}
                for kind, s in report.items() if not kind.endswith(" avg")}
    return {
        "f1": float(entity_f1(true, predicted, zero_division=0)),
        "precision": float(precision_score(true, predicted, zero_division=0)),
        "recall": float(recall_score(true, predicted, zero_division=0)),
        "accuracy": float((flat_p == flat_t).mean()) if len(flat_t) else 0.0,
        "loss": cross_entropy(probabilities, flat_t.astype(np.int64)) if len(flat_t) else 0.0,
        "n": int(len(targets)), "scheme": scheme, "labels": list(tags), "per_type": per_type,
    }


def best_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold on `scores` (probabilities of the positive class) with the best F1 of that class, among
    0.05 … 0.95; ties go to the one nearest 0.5."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    f1s = [f1_score(positive, scores >= t, zero_division=0) for t in grid]
    best = max(f1s)
    return float(min((t for t, f in zip(grid, f1s) if f == best), key=lambda t: abs(t - 0.5)))
