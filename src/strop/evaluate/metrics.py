"""Classification metrics from predicted probabilities, using scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(probabilities: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, cross-entropy loss, confusion matrix and per-class scores.

    Args:
        probabilities: (n, num_classes) predicted class probabilities.
        targets: (n,) true class ids.
        labels: class names; index = class id.
    """
    classes = list(range(len(labels)))
    predictions = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=classes, zero_division=0)
    return {
        "accuracy": float(accuracy_score(targets, predictions)),
        "macro_f1": float(f1_score(targets, predictions, labels=classes, average="macro", zero_division=0)),
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
