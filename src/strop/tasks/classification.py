"""Classification: one label per example (a text, a text pair, or a vector), a softmax over the classes or
a single sigmoid logit for two classes. `pair_classification` is the same task on two text columns
(paraphrase, entailment), encoded together as one pair."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from strop.data.inputs import (clean_strings, listed, normalise_labels, refuse_missing, require_column,
                               spelled_differently)
from strop.errors import StropError
from strop.evaluate.metrics import best_threshold, classification_metrics
from strop.tasks.base import TASKS, Examples, compact
from strop.tasks.sentence import SentenceTask

IMBALANCE_RATIO = 3.0  # train.imbalance=auto handles imbalance from this ratio of largest to smallest class
THRESHOLD_MIN_POSITIVES = 10  # two classes: the decision threshold is tuned on at least this many of the minority


def label_names(labels: list[str]) -> list[str]:
    """The sorted set of labels: numerically when all are integers ('2' before '10'), else alphabetically."""
    names = set(labels)
    if all(_is_int(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def check_classes(train: Examples, validation: Examples | None) -> list[str]:
    """Returns the label map (sorted label names) after checking the classes make a classification task.

    Raises:
        StropError: train has a single class, or validation has labels that train lacks.
    """
    names = label_names(train.targets)
    if len(names) < 2:
        raise StropError(f"data.train: every example in {Path(train.source).name} has the label '{names[0]}'; "
                         "a classifier needs at least two classes")
    if validation is not None:
        unseen = sorted(set(validation.targets) - set(names))
        if unseen:
            from strop.data.splits import amounts_hint

            raise StropError(f"data.validation: labels {listed(unseen)} do not occur in the training data "
                             f"(train has {listed(names)}); add training examples of them or remove those rows"
                             + spelled_differently(unseen, names) + amounts_hint(train.targets + validation.targets))
    return names


@TASKS.register("text_classification")
@dataclass(frozen=True)
class Classification(SentenceTask):
    """labels: class names in label-map order (index = class id).
    head: "softmax" (one logit per class) or "sigmoid" (one logit for labels[1], binary only)."""

    reads_label_smoothing: ClassVar[bool] = True
    labels: tuple[str, ...]
    head: str = "softmax"
    label_smoothing: float = 0.0  # training only (train.label_smoothing)
    imbalance: str = "none"  # train.imbalance as resolved: none, weights, sample or focal
    class_weights: tuple[float, ...] | None = None  # the loss's weight per class (weights)
    focal_gamma: float = 0.0  # focal loss where > 0
    positive: int | None = None  # two classes with imbalance handled: the minority class ...
    threshold: float | None = None  # ... predicted where its probability reaches this (tuned on validation)
    note: str = ""  # what auto chose, and why

    name = "text_classification"
    metric_names = ("accuracy", "macro_f1", "loss")
    metric_ranges = {"accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "loss": (0.0, np.inf)}
    lead_metric = "accuracy"

    @classmethod
    def read_targets(cls, frame, path, data_cfg, what: str) -> list[str]:
        require_column(frame, data_cfg.label_column, path, what, "label_column")
        column = frame[data_cfg.label_column]
        labels = normalise_labels(column, clean_strings(column, path, what), path, what)
        refuse_missing(labels, "label", path, what)
        return labels

    @classmethod
    def from_data(cls, train: Examples, validation: Examples | None, cfg) -> Classification:
        labels = check_classes(train, validation)
        if cfg.model.head == "sigmoid" and len(labels) != 2:
            raise StropError(f"model.head=sigmoid needs exactly two classes; the data has {len(labels)}: "
                             "use model.head=softmax")
        task = cls(labels=tuple(labels), head=cfg.model.head, label_smoothing=cfg.train.label_smoothing)
        return task.with_imbalance(train.targets, cfg.train.imbalance, cfg.train.focal_gamma)

    def fitted_to(self, train: Examples, cfg) -> Classification:
        return self.with_imbalance(train.targets, cfg.train.imbalance, cfg.train.focal_gamma)

    def with_imbalance(self, targets: list[str], setting: str, gamma: float) -> Classification:
        """train.imbalance made concrete for these training labels. auto: nothing below a ratio of 3 between
        the most and the least frequent class; from 3 on, inverse-frequency class weights (which keep every
        example, unlike resampling, and need no extra setting, unlike focal loss)."""
        # a class with no example among these (its only rows held out for validation) counts as one: no weight of
        # infinity, no ratio of inf
        counts = np.maximum([targets.count(name) for name in self.labels], 1).astype(np.float64)
        ratio = counts.max() / counts.min()
        mode, note = setting, ""
        if setting == "auto":
            mode = "weights" if ratio >= IMBALANCE_RATIO else "none"
            note = (f"imbalance: the most frequent class has {ratio:.1f} times the examples of the least; auto chose "
                    + ("class weights" if mode == "weights" else f"nothing (below {IMBALANCE_RATIO:g})"))
        # every field the setting governs is set, whatever an earlier call set (`fitted_to` calls it again)
        weights = tuple((counts.sum() / (len(counts) * counts)).tolist()) if mode == "weights" else None
        positive = int(counts.argmin()) if len(self.labels) == 2 and mode != "none" else None
        return replace(self, imbalance=mode, class_weights=weights, focal_gamma=gamma if mode == "focal" else 0.0,
                       positive=positive, note=note)

    def example_weights(self, features: list[dict]) -> list[float] | None:
        """With train.imbalance=sample, each example's chance to be drawn: 1 / its class's count."""
        if self.imbalance != "sample":
            return None
        counts = np.bincount([f["labels"] for f in features], minlength=len(self.labels))
        return [1.0 / counts[f["labels"]] for f in features]

    def notes(self) -> list[str]:
        return [self.note] if self.note else []

    def split(self, examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
        from strop.data.splits import stratified_split

        return stratified_split(examples, fraction, seed)

    def info(self) -> dict[str, Any]:
        rule = {} if self.threshold is None else {"positive": self.labels[self.positive], "threshold": self.threshold}
        return {"labels": list(self.labels), "head": self.head, **rule}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Classification:
        labels = tuple(info["labels"])
        if not isinstance(info["labels"], list) or not all(isinstance(x, str) for x in labels) \
                or len(set(labels)) != len(labels) or len(labels) < 2:
            raise ValueError(f"labels {info['labels']!r} in strop.json: a list of two or more distinct names")
        threshold = info.get("threshold")
        if threshold is not None and not isinstance(threshold, (int, float)):
            raise ValueError(f"threshold {threshold!r} in strop.json: a number")
        positive = labels.index(info["positive"]) if "positive" in info else None
        return cls(labels=labels, head=info.get("head", "softmax"), positive=positive,
                   threshold=info.get("threshold"))

    def output_space(self) -> tuple:
        return (self.head, *self.labels)

    @property
    def num_outputs(self) -> int:
        return 1 if self.head == "sigmoid" else len(self.labels)

    def plain_head(self) -> str | None:
        return "AutoModelForSequenceClassification"

    def encode_targets(self, targets: list[str]) -> list[int]:
        index = {name: i for i, name in enumerate(self.labels)}
        return [index[t] for t in targets]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # logits: (batch, num_outputs); labels: (batch,) class ids
        weight = None if self.class_weights is None else torch.tensor(self.class_weights, device=logits.device)
        if self.head == "sigmoid":
            targets = labels.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            pos_weight = None if weight is None else weight[1] / weight[0]
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), targets, pos_weight=pos_weight)
        if self.focal_gamma > 0:  # Lin et al. 2017: easy examples (p of the true class near 1) count less
            log_p = F.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None])[:, 0]
            return (-(1 - log_p.exp()) ** self.focal_gamma * log_p).mean()
        return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=self.label_smoothing)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(batch, num_outputs) logits -> (batch, num_classes) probabilities."""
        if self.head == "sigmoid":
            positive = torch.sigmoid(logits[:, 0].float())
            return torch.stack([1 - positive, positive], dim=1)
        return torch.softmax(logits.float(), dim=-1)

    def outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(self.probabilities(logits).cpu().numpy())

    def targets(self, batch: dict) -> list[int]:
        return batch["labels"].tolist()

    def scored_targets(self, targets: list[str]) -> list[int]:
        return self.encode_targets(targets)

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities -> (n,) class ids: the most probable class, or with a tuned threshold
        the minority class wherever its probability reaches the threshold."""
        if self.threshold is None:
            return probabilities.argmax(axis=1)
        return np.where(probabilities[:, self.positive] >= self.threshold, self.positive, 1 - self.positive)

    def calibrated(self, outputs: list[np.ndarray], targets: list[int]) -> Classification:
        """Two classes with imbalance handled: the threshold on the minority class's probability with its best
        F1 on validation (the loss's weights or sampling shift probabilities, so 0.5 is rarely the best). Not
        where validation holds fewer than THRESHOLD_MIN_POSITIVES of the minority class: an F1 of a handful of
        examples is noise (3 gave a threshold of 0.05, so that p = 0.18 decided the class)."""
        if self.positive is None or self.imbalance == "none":
            return self
        return self.with_threshold_for(outputs, targets)

    def with_threshold_for(self, outputs: list[np.ndarray], targets: list[int]) -> Classification:
        """The task with the minority class's threshold tuned on these outputs (as `calibrated` does); itself
        where they hold fewer than THRESHOLD_MIN_POSITIVES of that class, and the most probable class deciding
        where the threshold would lower the macro-F1 of the two classes: a model that barely tells them apart
        has its best minority F1 where every example is called minority (accuracy 0.75 became 0.25)."""
        from sklearn.metrics import f1_score

        targets = np.asarray(targets)
        positive = targets == self.positive
        if positive.sum() < THRESHOLD_MIN_POSITIVES:
            return self
        probabilities = np.stack(outputs)
        tuned = replace(self, threshold=best_threshold(probabilities[:, self.positive], positive))
        untuned = replace(self, threshold=None)
        both = [f1_score(targets, task.decide(probabilities), labels=[0, 1], average="macro", zero_division=0)
                for task in (tuned, untuned)]
        return tuned if both[0] >= both[1] else untuned

    def decision_note(self) -> str | None:
        if self.threshold is None:
            return None
        return (f"decision threshold: '{self.labels[self.positive]}' where its probability reaches {self.threshold:g} "
                f"(tuned on validation for that class's F1, as train.imbalance handles imbalance; saved with the "
                f"model, and the validation scores below use it)")

    def metrics(self, outputs: list[np.ndarray], targets: list[int]) -> dict[str, Any]:
        probabilities = np.stack(outputs)
        return classification_metrics(probabilities, np.asarray(targets), list(self.labels), self.decide(probabilities))

    def predictions(self, inputs: list, outputs: list[np.ndarray]) -> list[str]:
        return [self.labels[i] for i in self.decide(np.stack(outputs))] if outputs else []

    def records(self, inputs: list, outputs: list[np.ndarray]) -> list[dict[str, Any]]:
        decided = self.decide(np.stack(outputs)) if outputs else []
        return [{**_input_fields(x), "label": self.labels[int(d)], "score": compact(p[int(d)]),
                 "probabilities": dict(zip(self.labels, compact(p)))}
                for x, p, d in zip(inputs, outputs, decided)]


def _input_fields(x) -> dict[str, Any]:
    """How a prediction names its input: the text, the pair, or nothing for a vector (its row order)."""
    if isinstance(x, str):
        return {"text": x}
    if isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, str) for t in x):  # a pair, as given
        return {"text": x[0], "text_pair": x[1]}
    return {}


@TASKS.register("pair_classification")
@dataclass(frozen=True)
class PairClassification(Classification):
    """Classification of text pairs (paraphrase, entailment): data.text_column and data.text_pair_column
    (default `text_pair`) are encoded together, as the model was pretrained on sentence pairs."""

    name = "pair_classification"
    input_kinds = ("text",)

    @classmethod
    def pair_column(cls, data_cfg) -> str:
        return data_cfg.text_pair_column or "text_pair"
