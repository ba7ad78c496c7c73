"""`strop evaluate`: score a trained run on a labelled file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from strop.data.labelled import load_labelled_texts
from strop.errors import StropError
from strop.predict import Predictor


def evaluate_file(predictor: Predictor, path: str | Path, text_column: str | None = None,
                  label_column: str | None = None) -> dict:
    """Accuracy, macro-F1, loss, confusion matrix and per-class scores of the model on a labelled file.

    Columns default to those the model was trained with.

    Raises:
        StropError: unreadable file, missing columns, or labels the model does not know.
    """
    data = load_labelled_texts(path, text_column or predictor.info["text_column"],
                               label_column or predictor.info["label_column"], "--data")
    known = set(predictor.labels)
    unknown = sorted(set(data.labels) - known)
    if unknown:
        raise StropError(f"--data: labels {', '.join(unknown)} are not among the model's labels "
                         f"({', '.join(predictor.labels)})")
    index = {name: i for i, name in enumerate(predictor.labels)}
    targets = np.array([index[label] for label in data.labels])
    return predictor.task.metrics(predictor.predict_proba(data.texts), targets)
