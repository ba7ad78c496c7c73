"""Validation splits: seeded, and stratified by class where the task has classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from strop.data.inputs import text_key
from strop.errors import StropError
from strop.tasks.base import Examples


def input_key(value):
    """An input as a set holds it: a text or a pair of texts by `text_key` (what a reader and an uncased
    tokenizer see: 'Great  movie' is 'great movie', a text typed with combining accents is the same text), a
    vector (an array, which a set cannot hold) as its bytes, a sentence's tokens as a tuple."""
    if isinstance(value, np.ndarray):
        return value.tobytes()
    if isinstance(value, str):
        return text_key(value)
    if isinstance(value, (list, tuple)):
        return tuple(text_key(x) if isinstance(x, str) else x for x in value)
    return value


def distinct_inputs(inputs: list) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each distinct input, in order, and each row's number among the distinct inputs. The
    splits below split distinct inputs, and a row follows its input: a text that occurs twice is on one side
    of a split (validation or a held-out fold never scores an input that trained), and with no repeated input
    a split is the split of the rows."""
    number: dict = {}
    of_row = np.array([number.setdefault(input_key(x), len(number)) for x in inputs], dtype=np.int64)
    return np.unique(of_row, return_index=True)[1], of_row


def rows_of(chosen, of_row: np.ndarray) -> list[int]:
    """The rows whose distinct input is one of `chosen` (numbers of distinct inputs), in order."""
    return np.flatnonzero(np.isin(of_row, np.asarray(chosen, dtype=np.int64))).tolist()


def random_split(data: Examples, fraction: float, seed: int, inputs: list | None = None
                 ) -> tuple[Examples, Examples]:
    """Holds out `fraction` of the distinct inputs (at least one, and one left to train on) with every row of
    each (`distinct_inputs`), reproducibly for a seed. inputs: what the rows hold, where data.inputs does not
    (strop curve splits row numbers).

    Raises:
        StropError: fewer than two distinct inputs.
    """
    first, of_row = distinct_inputs(data.inputs if inputs is None else inputs)
    n_val = max(int(round(len(first) * fraction)), 1)
    if len(first) - n_val < 1:
        raise StropError(f"data.train: {_counted(len(data), len(first))} are too few to hold out a validation "
                         "set: give a validation file with data.validation=<file>")
    train_idx, val_idx = train_test_split(list(range(len(first))), test_size=n_val, random_state=seed)
    return data.subset(rows_of(train_idx, of_row)), data.subset(rows_of(val_idx, of_row))


def _counted(rows: int, distinct: int) -> str:
    """'40 examples', or '40 examples (31 distinct inputs)' where some repeat."""
    return f"{rows} examples" + (f" ({distinct} distinct inputs)" if distinct < rows else "")


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


def stratified_split(data: Examples, fraction: float, seed: int, inputs: list | None = None
                     ) -> tuple[Examples, Examples]:
    """Holds out `fraction` of the distinct inputs with every row of each (`distinct_inputs`), keeping the class
    proportions (an input's class: its first row's), reproducibly for a seed. inputs: as for `random_split`.

    Raises:
        StropError: a class has too few distinct inputs to appear on both sides of the split.
    """
    first, of_row = distinct_inputs(data.inputs if inputs is None else inputs)
    targets = [data.targets[i] for i in first]
    counts = pd.Series(targets).value_counts()
    rare = counts[counts < 2]
    if len(rare):
        one = "one example" if len(first) == len(data) else "one distinct input"
        raise StropError(f"data.train: class '{rare.index[0]}' has only {one} in {Path(data.source).name}, "
                         "too few to split off a validation set: add examples of it or give a validation file "
                         "with data.validation=<file>" + amounts_hint(data.targets))
    n_val = max(int(round(len(first) * fraction)), len(counts))
    if len(first) - n_val < len(counts):
        raise StropError(f"data.train: {_counted(len(data), len(first))} are too few to hold out a validation set "
                         f"for {len(counts)} classes: give a validation file with data.validation=<file>")
    train_idx, val_idx = train_test_split(list(range(len(first))), test_size=n_val, stratify=targets,
                                          random_state=seed)
    return data.subset(rows_of(train_idx, of_row)), data.subset(rows_of(val_idx, of_row))
