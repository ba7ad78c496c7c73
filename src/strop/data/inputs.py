"""The inputs of sentence-level examples in a table: a text column, a pair of text columns, or numeric
feature columns (vectors for an MLP). Each problem gets one message naming the file, column, rows and fix."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from strop.data.tables import is_missing, say_note, shown_columns
from strop.errors import StropError


# The files of `strop evaluate --data` and `strop predict --input` name their columns with options of their own
COLUMN_OPTIONS = {("--data", "label_column"): "--label-column", ("--data", "text_column"): "--text-column",
                  ("--input", "text_column"): "--text-column", ("--data", "text_pair_column"): "--text-pair-column",
                  ("--input", "text_pair_column"): "--text-pair-column"}


SAVED_MODEL_FILES = ("--input", "--data")  # files read for a saved model, whose data.* settings are fixed


def column_fix(what: str, key: str) -> str:
    """How to name the column of data.`key` for the file of `what`: its command's option, data.<key> in a run's
    config, or (a saved model's file without such an option) the name the model was trained with."""
    option = COLUMN_OPTIONS.get((what, key))
    if option:
        return f"name the right one with {option} <column>"
    if what in SAVED_MODEL_FILES:
        return "the model reads the columns it was trained on: give the file that column, by that name"
    return f"name the right one with data.{key}=<column>"


def require_column(frame: pd.DataFrame, column: str, path: str | Path, what: str, key: str) -> None:
    if column not in frame.columns:
        fix = column_fix(what, key)
        raise StropError(f"{what}: column '{column}' not found in {Path(path).name}; columns found: "
                         f"{shown_columns(frame.columns)}. {fix[0].upper()}{fix[1:]}")


def clean_strings(column: pd.Series, path: str | Path, what: str) -> list[str | None]:
    """Values as strings, stripped of surrounding whitespace; None for missing (None, NaN, a nullable column's
    pd.NA, NaT) or blank (nothing but whitespace and invisible characters). Whole-number floats (JSON 1.0)
    become '1'; bytes (Parquet) are decoded as UTF-8.

    Raises:
        StropError: a value is a list or mapping (JSON), or bytes that are not UTF-8: not a text.
    """
    out = []
    for row, value in enumerate(column.tolist(), start=1):
        if is_missing(value):
            out.append(None)
            continue
        if isinstance(value, (list, dict, tuple, np.ndarray)):
            raise StropError(f"{what}: column '{column.name}' of {Path(path).name} holds a "
                             f"{type(value).__name__} in row {row} ({str(value)[:60]}), not a text or label: "
                             "give one string per row" + (" (a list of labels a row: task.name=multilabel_classification)"
                                                          if isinstance(value, (list, tuple, np.ndarray)) else ""))
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise StropError(f"{what}: column '{column.name}' of {Path(path).name} holds bytes that are not "
                                 f"UTF-8 text in row {row}: store the column as strings") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        out.append(text if text and INVISIBLE.sub("", text).strip() else None)
    return out


def spelled_differently(unseen: list[str], known: list[str], where: str = "train") -> str:
    """`. Spelled differently: 'Pos' (train has 'pos')` for the unseen labels that look like known ones; else
    nothing."""
    near = [f"{u!r} ({where} has {n!r}{differs_in(u, n)})" for u in unseen for n in known
            if spelling_key(u) == spelling_key(n)]
    return f". Spelled differently: {', '.join(near)}" if near else ""


# Characters that show nothing (zero-width spaces and joiners, a soft hyphen, direction marks, a byte-order
# mark): web and spreadsheet text carries them unseen, and a tokenizer drops them
INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def spelling_key(label: str) -> str:
    """A label as a reader sees it: case-folded, accents composed, invisible characters gone. Labels with one
    key look alike."""
    return INVISIBLE.sub("", composed(label)).casefold()


def text_key(text: str) -> str:
    """A text as a reader (and an uncased tokenizer) sees it: its spelling key with runs of whitespace as one
    space. Texts with one key are one input where inputs are compared (splits, folds, overlaps)."""
    return " ".join(spelling_key(text).split())


def differs_in(label: str, other: str) -> str:
    """` (accents typed differently)` where two labels that look alike differ in how an accent is typed (a letter
    and a combining mark against the accented letter), ` (an invisible character)` where one holds a character
    that shows nothing: differences no message could show; else nothing."""
    if INVISIBLE.search(label) or INVISIBLE.search(other):
        return " (an invisible character, e.g. a zero-width space)"
    return " (accents typed differently)" if composed(label) != label or composed(other) != other else ""


def composed(text: str) -> str:
    """`text` in Unicode's composed form (NFC): 'é' typed as 'e' and a combining accent, as some systems and
    keyboards write it, is the one character 'é'. The two look and read alike: a text written either way is the
    same text where texts are compared (repeats, overlaps); a label is kept as written and the difference said."""
    return unicodedata.normalize("NFC", text)


def normalise_labels(column: pd.Series, labels: list[str | None], path: str | Path, what: str) -> list[str | None]:
    """Labels written one way: surrounding whitespace is gone already ('positive ' is 'positive'), and where
    every label is a number, each is written as the number it is ('1.0' is '1'), unless a label has a leading zero
('01': codes, all kept as written). What changed is
    said on stderr, so two spellings never silently become two classes."""
    numbers = [_number(label) for label in labels if label is not None]
    # a leading zero ('01', '007') marks codes, not amounts: kept as written, so '01' and '1' stay two classes
    codes = any(re.fullmatch(r"[+-]?0\d+", label) for label in labels if label is not None)
    if numbers and all(n is not None for n in numbers) and not codes:
        labels = [None if label is None else _number_text(label) for label in labels]
    raw = [None if is_missing(v) else str(v) for v in column.tolist()]
    changed = sorted({(r, c) for r, c in zip(raw, labels) if r is not None and c is not None and r != c})
    if changed:
        shown = ", ".join(f"{r!r} -> {c!r}" for r, c in changed[:5]) + (" ..." if len(changed) > 5 else "")
        say_note(f"{what}: labels in {Path(path).name} written one way (whitespace stripped, numbers as numbers): "
                 f"{shown}{_merged(raw, labels)}")
    say_look_alikes(labels, f"labels in {Path(path).name}", what)
    return labels


def say_look_alikes(labels: list[str | None], where: str, what: str) -> None:
    """Says which labels differ only in case or in how an accent is typed: classes of their own, not changed
    (case may matter, 'US' and 'us'; and a model saved with one spelling must go on reading it as written)."""
    spellings: dict[str, set[str]] = {}
    for label in labels:
        if label is not None:
            spellings.setdefault(spelling_key(label), set()).add(label)
    alike = [sorted(group) for group in spellings.values() if len(group) > 1]
    if alike:
        groups = sorted(alike)[:5]
        shown = ", ".join(" and ".join(repr(s) for s in group) + differs_in(*group[:2]) for group in groups)
        how = "case or in characters that show alike," if any(differs_in(*group[:2]) for group in groups) else "case"
        say_note(f"{what}: {where} that differ only in {how} are classes of their own: {shown}; "
                 "if they mean one class, write them one way")


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _number_text(label: str) -> str:
    """A number label written one way; whole numbers exactly, however many digits (ids past 2**53 that a
    float would round onto each other stay apart), other numbers as the float they are ('1.50' is '1.5')."""
    if re.fullmatch(r"\s*[+-]?\d+\s*", label):
        return str(int(label))
    value = float(label)
    return str(int(value)) if value.is_integer() else repr(value)


def _merged(raw: list[str | None], labels: list[str | None]) -> str:
    """'; ... are one class now' where two labels as written became one, else ''."""
    spellings: dict[str, set[str]] = {}
    for r, c in zip(raw, labels):
        if r is not None and c is not None:
            spellings.setdefault(c, set()).add(r)
    merged = [(c, sorted(group)) for c, group in sorted(spellings.items()) if len(group) > 1]
    if not merged:
        return ""
    shown = ", ".join(" and ".join(map(repr, group)) + f" (as {c!r})" for c, group in merged[:5])
    return f"; so one class now: {shown}; write them apart if they mean different classes"


def refuse_missing(values: list, name: str, path: str | Path, what: str, about: str = "") -> None:
    """Raises StropError naming the rows (row 1 is the first example) whose value is None; `name` is the
    value's singular noun, `about` words after it, e.g. " (labels separated by '|')"."""
    bad = [i + 1 for i, v in enumerate(values) if v is None]
    if bad:
        nouns = name + ("s" if len(bad) > 1 else "") + about
        raise StropError(f"{what}: {len(bad)} empty or missing {nouns} in {Path(path).name}, rows {listed(bad)} "
                         "(row 1 is the first example): fill them in or remove those rows")


def listed(items: list, shown: int = 10) -> str:
    """The first `shown` items and how many more: rows of a file, or a column of amounts read as classes."""
    return ", ".join(map(str, items[:shown])) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def read_texts(frame: pd.DataFrame, path: str | Path, data_cfg, what: str,
               pair_column: str | None) -> list[str] | list[tuple[str, str]]:
    """The text column, or (text, pair) tuples where the task reads text pairs."""
    require_column(frame, data_cfg.text_column, path, what, "text_column")
    texts = clean_strings(frame[data_cfg.text_column], path, what)
    refuse_missing(texts, "text", path, what)
    if pair_column is None:
        return texts
    require_column(frame, pair_column, path, what, "text_pair_column")
    pairs = clean_strings(frame[pair_column], path, what)
    refuse_missing(pairs, f"'{pair_column}' text", path, what)
    return list(zip(texts, pairs))


def feature_columns(frame: pd.DataFrame, data_cfg, target_columns: list[str]) -> list[str]:
    """data.feature_columns, or every column but the targets'.

    Raises:
        StropError: data.feature_columns names a target column (the model would read the answer).
    """
    if data_cfg.feature_columns:
        twice = sorted({c for c in data_cfg.feature_columns if list(data_cfg.feature_columns).count(c) > 1})
        if twice:  # the model would read one column as two features, and a prediction would need it twice
            raise StropError(f"data.feature_columns names {', '.join(twice)} twice: name each column once")
        both = [c for c in data_cfg.feature_columns if c in target_columns]
        if both:
            raise StropError(f"data.feature_columns names the target column(s) {', '.join(both)}, which the model "
                             "is to predict, not read: leave them out of data.feature_columns")
        return list(data_cfg.feature_columns)
    return [str(c) for c in frame.columns if str(c) not in target_columns]


def read_vectors(frame: pd.DataFrame, path: str | Path, columns: list[str], what: str) -> list[np.ndarray]:
    """One float vector per row from numeric columns.

    Raises:
        StropError: a column is missing, holds a value that is not a number, or has missing values.
    """
    if not columns:
        raise StropError(f"{what}: {Path(path).name} has no feature columns besides the targets; name them with "
                         "data.feature_columns=[x1, x2, ...]")
    for column in columns:
        require_column(frame, column, path, what, "feature_columns")
    # float64 until the MLP standardises them: a feature with a large offset (a Unix time, an id) keeps its
    # differences, which float32 would round away before its mean is taken off
    matrix = np.zeros((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        values = numeric_column(frame[column], column, path, what, "feature",
                                "give a number in every row" if what in SAVED_MODEL_FILES
                                else "leave the column out with data.feature_columns=[...]")
        too_large = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)
        if len(too_large):
            raise StropError(f"{what}: feature column '{column}' of {Path(path).name} holds {values[too_large[0]]:g} "
                             f"in row {too_large[0] + 1}, beyond what a 32-bit float holds: scale the column")
        matrix[:, j] = values
    return list(matrix)


TRUTH_WORDS = {"true": 1.0, "false": 0.0}  # a CSV's booleans, which it holds as text


def numeric_column(values: pd.Series, column: str, path: str | Path, what: str, role: str, fix: str) -> np.ndarray:
    """A column as float64 (true and false as 1 and 0, as a Parquet or JSON boolean column reads), or one
    StropError naming its first non-numeric value or its missing rows."""
    raw = values.tolist()
    as_written = values.map(lambda v: TRUTH_WORDS.get(v.strip().lower(), v) if isinstance(v, str) else v)
    numbers = pd.to_numeric(as_written, errors="coerce").to_numpy(dtype=np.float64)
    blank = [i + 1 for i, v in enumerate(raw) if is_missing(v) or (isinstance(v, str) and not v.strip())]
    if blank:
        values = "value" if len(blank) == 1 else "values"
        raise StropError(f"{what}: {len(blank)} missing {values} in {role} column '{column}' of {Path(path).name}, "
                         f"rows {listed(blank)} (row 1 is the first example): fill them in or remove those rows")
    bad = [i for i, n in enumerate(numbers) if not np.isfinite(n)]
    if bad:
        rows = f"{len(bad)} such row" + ("s" if len(bad) > 1 else "")
        raise StropError(f"{what}: {role} column '{column}' of {Path(path).name} holds {raw[bad[0]]!r} in row "
                         f"{bad[0] + 1}, which is not a finite number ({rows}); {role}s must be numbers: fix those "
                         f"values, or {fix}")
    return numbers
