"""Labelled texts: checked columns, no missing values, a label map, and a seeded stratified split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from strop.data.tables import read_table
from strop.errors import StropError


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: list[str]
    source: str  # the file they came from, for messages

    def __len__(self) -> int:
        return len(self.texts)


def load_labelled_texts(path: str | Path, text_column: str, label_column: str, what: str) -> LabelledTexts:
    """Reads a table and checks its text and label columns.

    Raises:
        StropError: a column is missing (the message lists the columns found), or texts or labels are
            empty or missing (the message names the rows, counting the first example as row 1).
    """
    frame = read_table(path, what)
    columns = [str(c) for c in frame.columns]
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in frame.columns:
            raise StropError(f"{what}: column '{column}' not found in {Path(path).name}; columns found: "
                             f"{', '.join(columns)}. Name the right one with data.{key}=<column>")
    texts = _clean(frame[text_column])
    labels = _clean(frame[label_column])
    for name, values in (("text", texts), ("label", labels)):
        bad = [i + 1 for i, v in enumerate(values) if v is None]
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise StropError(f"{what}: {len(bad)} empty or missing {name}s in {Path(path).name}, rows {shown} "
                             f"(row 1 is the first example): fill them in or remove those rows")
    return LabelledTexts(texts=texts, labels=labels, source=str(path))


def _clean(column: pd.Series) -> list[str | None]:
    """Values as strings; None for missing, NaN or blank. Whole-number floats (JSON 1.0) become '1'."""
    out = []
    for value in column.tolist():
        if value is None or (isinstance(value, float) and value != value):
            out.append(None)
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value)
        out.append(text if text.strip() else None)
    return out


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


def check_classes(train: LabelledTexts, validation: LabelledTexts | None) -> list[str]:
    """Returns the label map (sorted label names) after checking the classes make a classification task.

    Raises:
        StropError: train has a single class, or validation has labels that train lacks.
    """
    names = label_names(train.labels)
    if len(names) < 2:
        raise StropError(f"data.train: every example in {Path(train.source).name} has the label '{names[0]}'; "
                         "a classifier needs at least two classes")
    if validation is not None:
        unseen = sorted(set(validation.labels) - set(names))
        if unseen:
            raise StropError(f"data.validation: labels {', '.join(unseen)} do not occur in the training data "
                             f"(train has {', '.join(names)}); add training examples of them or remove those rows")
    return names


def split_stratified(data: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """Holds out `fraction` of the examples, keeping the class proportions, reproducibly for a seed.

    Raises:
        StropError: a class has too few examples to appear on both sides of the split.
    """
    counts = pd.Series(data.labels).value_counts()
    rare = counts[counts < 2]
    if len(rare):
        raise StropError(f"data.train: class '{rare.index[0]}' has only one example, too few to split off a "
                         "validation set: add examples of it or give a validation file with data.validation=<file>")
    n_val = max(int(round(len(data) * fraction)), len(counts))
    if len(data) - n_val < len(counts):
        raise StropError(f"data.train: {len(data)} examples are too few to hold out a validation set for "
                         f"{len(counts)} classes: give a validation file with data.validation=<file>")
    index = list(range(len(data)))
    train_idx, val_idx = train_test_split(index, test_size=n_val, stratify=data.labels, random_state=seed)
    return _subset(data, sorted(train_idx)), _subset(data, sorted(val_idx))


def _subset(data: LabelledTexts, index: list[int]) -> LabelledTexts:
    return LabelledTexts([data.texts[i] for i in index], [data.labels[i] for i in index], data.source)
