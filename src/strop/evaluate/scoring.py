"""`strop evaluate`: score a trained run on a labelled file, with the metrics of its task."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from strop.config import DataConfig
from strop.data.inputs import listed, spelled_differently
from strop.data.splits import amounts_hint
from strop.errors import StropError
from strop.predict import Predictor


def saved_columns(info: dict, **overrides: str | None) -> DataConfig:
    """The data columns a model was trained with (from its strop.json), with the given ones replaced."""
    known = {key: info[key] for key in ("text_column", "text_pair_column", "label_column", "label_separator",
                                         "tag_column", "path_column") if info.get(key) is not None}
    data = DataConfig(**known, feature_columns=tuple(info.get("feature_columns") or ()))
    return replace(data, **{k: v for k, v in overrides.items() if v is not None})


def evaluate_file(predictor: Predictor, path: str | Path, text_column: str | None = None,
                  label_column: str | None = None, text_pair_column: str | None = None,
                  show: str | None = None) -> dict:
    """The task's metrics (for classification: accuracy, macro-F1, loss, confusion matrix and per-class
    scores) of the model on a labelled file. Columns default to those the model was trained with. `show`: the
    name its progress shows under, where given.

    Raises:
        StropError: unreadable file, missing columns, or labels the model does not know.
    """
    task = predictor.task
    columns = saved_columns(predictor.info, text_column=text_column, label_column=label_column,
                            text_pair_column=text_pair_column)
    data = type(task).read(path, columns, predictor.model.body.kind, "--data")
    known = set(task.info().get("labels", []))
    if known:
        seen = {t for target in data.targets for t in (target if isinstance(target, (list, tuple)) else [target])}
        unknown = sorted(seen - known)
        if unknown:
            raise StropError(f"--data: labels {listed(unknown)} are not among the model's labels "
                             f"({listed(sorted(known))}): check --label-column, or evaluate a run trained on these "
                             "labels" + spelled_differently(unknown, sorted(known), "the model")
                             + amounts_hint(list(seen)))
    return task.metrics(predictor.outputs(data.inputs, show), task.scored_targets(data.targets))
