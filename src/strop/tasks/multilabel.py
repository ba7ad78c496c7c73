"""Multi-label classification: each example has a set of labels (a label column holding several, separated
by data.label_separator, default '|'). One sigmoid logit per label with binary cross-entropy; a decision
threshold per label is tuned on the validation data after training and saved with the model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from strop.data.inputs import clean_strings, normalise_labels, refuse_missing, require_column, spelled_differently
from strop.data.tables import is_missing, say_note
from strop.errors import StropError
from strop.evaluate.metrics import multilabel_metrics, tune_thresholds
from strop.tasks.base import TASKS, Examples, compact
from strop.tasks.classification import _input_fields, label_names
from strop.tasks.sentence import SentenceTask


OTHER_SEPARATORS = (";", ",", "|", "/")  # what files use between labels, checked where each row has one label


def _say_other_separator(sets: list[tuple[str, ...]], separator: str, path) -> None:
    """Where every row of a text column has one label and labels hold another separator, says so: most likely
    the file separates labels with it, and each row's set was read as one label."""
    if max(len(labels) for labels in sets) > 1:
        return
    names = sorted({label for labels in sets for label in labels})
    written = [s for s in OTHER_SEPARATORS if s != separator and any(s in name for name in names)]
    if written:
        say_note(f"data.train: every example in {Path(path).name} has one label, and labels hold '{written[0]}' (e.g. "
                 f"{next(n for n in names if written[0] in n)!r}): if it separates labels, set "
                 f"data.label_separator='{written[0]}'")


@TASKS.register("multilabel_classification")
@dataclass(frozen=True)
class MultiLabel(SentenceTask):
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    separator: str = "|"

    name = "multilabel_classification"
    metric_names = ("micro_f1", "macro_f1", "exact_match", "loss")
    metric_ranges = {**dict.fromkeys(("micro_f1", "macro_f1", "exact_match"), (0.0, 1.0)), "loss": (0.0, np.inf)}
    lead_metric = "micro_f1"

    @classmethod
    def read_targets(cls, frame, path, data_cfg, what: str) -> list[tuple[str, ...]]:
        require_column(frame, data_cfg.label_column, path, what, "label_column")
        raw, separator = frame[data_cfg.label_column], data_cfg.label_separator
        listed = raw.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).to_numpy(dtype=bool)
        texts = clean_strings(raw.where(~listed, None).rename(data_cfg.label_column), path, what)
        # a JSON or Parquet list is the row's set, each item a label as written (a separator in one is part of
        # its name); a null in it is no label, and 1.0 is 1 as in a cell: all items cleaned in one pass
        rows_of_items = [[row] * sum(not is_missing(x) for x in value) if is_list else []
                         for row, (value, is_list) in enumerate(zip(raw.tolist(), listed))]
        items = pd.Series([x for value, is_list in zip(raw.tolist(), listed) if is_list for x in value
                           if not is_missing(x)], dtype=object, name=data_cfg.label_column)
        cleaned = iter(clean_strings(items, path, what))
        items_of_rows = [[next(cleaned) for _ in of_row] if is_list else ([] if text is None else text.split(separator))
                         for of_row, is_list, text in zip(rows_of_items, listed, texts)]
        items_of_rows = [[x.strip() for x in row if x and x.strip()] for row in items_of_rows]
        # every label written one way, and look-alikes said, as for single labels (strop.data.inputs)
        flat = [x for row in items_of_rows for x in row]
        named = iter(normalise_labels(pd.Series(flat, dtype=object), flat, path, what))
        sets = [tuple(sorted({next(named) for _ in row})) or None for row in items_of_rows]
        refuse_missing(sets, "label set", path, what, f" (labels separated by '{separator}')")
        if not listed.any() and what == "data.train":
            _say_other_separator(sets, separator, path)
        return sets

    @classmethod
    def from_data(cls, train: Examples, validation: Examples | None, cfg) -> MultiLabel:
        names = label_names([label for labels in train.targets for label in labels])
        if len(names) < 2:
            raise StropError(f"data.train: every example in {Path(train.source).name} has only the label "
                             f"'{names[0]}'; multi-label classification needs at least two labels (is "
                             f"data.label_separator='{cfg.data.label_separator}' the separator the file uses?)")
        separator = cfg.data.label_separator
        if validation is not None:
            unseen = sorted({label for labels in validation.targets for label in labels} - set(names))
            if unseen:
                raise StropError(f"data.validation: labels {', '.join(unseen)} do not occur in the training data; "
                                 "add training examples of them or remove them" + spelled_differently(unseen, names))
        return cls(tuple(names), (0.5,) * len(names), separator)

    def info(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "thresholds": list(self.thresholds), "separator": self.separator}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> MultiLabel:
        return cls(tuple(info["labels"]), tuple(info["thresholds"]), info.get("separator", "|"))

    def output_space(self) -> tuple:
        return self.labels

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def plain_head(self) -> str | None:
        return "AutoModelForSequenceClassification"

    def encode_targets(self, targets: list[tuple[str, ...]]) -> list[list[float]]:
        index = {name: i for i, name in enumerate(self.labels)}
        rows = []
        for labels in targets:
            row = [0.0] * len(self.labels)
            for label in labels:
                row[index[label]] = 1.0
            rows.append(row)
        return rows

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())  # (batch, labels) each

    def outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(torch.sigmoid(logits.float()).cpu().numpy())

    def targets(self, batch: dict) -> list[np.ndarray]:
        return list(batch["labels"].cpu().numpy().astype(np.int64))

    def scored_targets(self, targets: list[tuple[str, ...]]) -> list[np.ndarray]:
        return list(np.asarray(self.encode_targets(targets), dtype=np.int64))

    def metrics(self, outputs: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, Any]:
        return multilabel_metrics(np.stack(outputs), np.stack(targets), list(self.labels), np.asarray(self.thresholds))

    def calibrated(self, outputs: list[np.ndarray], targets: list[np.ndarray]) -> MultiLabel:
        """Per-label thresholds that maximise each label's F1 on the validation outputs."""
        return replace(self, thresholds=tuple(tune_thresholds(np.stack(outputs), np.stack(targets))))

    def predictions(self, inputs: list, outputs: list[np.ndarray]) -> list[list[str]]:
        return [[name for name, p, t in zip(self.labels, row, self.thresholds) if p >= t] for row in outputs]

    def records(self, inputs: list, outputs: list[np.ndarray]) -> list[dict[str, Any]]:
        return [{**_input_fields(x), "labels": labels,
                 "probabilities": dict(zip(self.labels, compact(row)))}
                for x, labels, row in zip(inputs, self.predictions(inputs, outputs), outputs)]
