"""Validation splits: seeded, and stratified by class where the task has classes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from strop.errors import StropError
from strop.tasks.base import Examples


def random_split(data: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Holds out `fraction` of the examples (at least one, and one left to train on), reproducibly for a seed.

    Raises:
        StropError: fewer than two examples.
    """
    n_val = max(int(round(len(data) * fraction)), 1)
    if len(data) - n_val < 1:
        raise StropError(f"data.train: {len(data)} examples are too few to hold out a validation set: "
                         "give a validation file with data.validation=<file>")
    index = list(range(len(data)))
    train_idx, val_idx = train_test_split(index, test_size=n_val, random_state=seed)
    return data.subset(sorted(train_idx)), data.subset(sorted(val_idx))


AMOUNTS_FROM = 10  # more distinct numeric labels than this read like amounts (a regression's targets)


def amounts_hint(labels: list) -> str:
    """Words to add to a message about rare classes where the labels look like amounts, not classes: all of
    them numbers, and many distinct ones (task auto reads a label column as classes)."""
    distinct = set(labels)
    try:
        [float(label) for label in distinct]
    except (TypeError, ValueError):
        return ""
    if len(distinct) <= AMOUNTS_FROM:
        return ""
    return (f". The labels are {len(distinct)} different numbers: if they are amounts rather than classes, give "
            "task.name=regression")


def stratified_split(data: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Holds out `fraction` of the examples, keeping the class proportions, reproducibly for a seed.

    Raises:
        StropError: a class has too few examples to appear on both sides of the split.
    """
    counts = pd.Series(data.targets).value_counts()
    rare = counts[counts < 2]
    if len(rare):
        raise StropError(f"data.train: class '{rare.index[0]}' has only one example in {Path(data.source).name}, "
                         "too few to split off a validation set: add examples of it or give a validation file "
                         "with data.validation=<file>" + amounts_hint(data.targets))
    n_val = max(int(round(len(data) * fraction)), len(counts))
    if len(data) - n_val < len(counts):
        raise StropError(f"data.train: {len(data)} examples are too few to hold out a validation set for "
                         f"{len(counts)} classes: give a validation file with data.validation=<file>")
    index = list(range(len(data)))
    train_idx, val_idx = train_test_split(index, test_size=n_val, stratify=data.targets, random_state=seed)
    return data.subset(sorted(train_idx)), data.subset(sorted(val_idx))
