"""What the sentence-level tasks share: one input per row of a table (a text, a text pair, or a vector of
numeric features), a vector per example from the backbone, and a linear head on it."""

from __future__ import annotations

from pathlib import Path

from strop.data.inputs import feature_columns, read_texts, read_vectors
from strop.data.tables import read_table
from strop.errors import StropError
from strop.tasks.base import Examples, Task


class SentenceTask(Task):
    """A task with one target per table row; subclasses read the targets (`read_targets`)."""

    level = "sequence"

    @classmethod
    def read(cls, path: str | Path, data_cfg, input_kind: str, what: str, with_targets: bool = True) -> Examples:
        frame = read_table(path, what)
        columns = None
        if input_kind == "vector":
            columns = tuple(feature_columns(frame, data_cfg, cls.target_columns(data_cfg)))
            inputs = read_vectors(frame, path, list(columns), what)
        else:
            refuse_reading_the_answer(data_cfg, cls.target_columns(data_cfg), cls.pair_column(data_cfg))
            inputs = read_texts(frame, path, data_cfg, what, cls.pair_column(data_cfg))
        targets = cls.read_targets(frame, path, data_cfg, what) if with_targets else None
        return Examples(inputs, targets, str(path), columns)

    @classmethod
    def read_targets(cls, frame, path, data_cfg, what: str) -> list:
        raise NotImplementedError

    @classmethod
    def target_columns(cls, data_cfg) -> list[str]:
        """The columns holding targets (never read as features)."""
        return [data_cfg.label_column]


def refuse_reading_the_answer(data_cfg, targets: list[str], pair: str | None) -> None:
    """Raises StropError where a text column the model reads is a target column (the model would read the
    answer), or the pair's second text is its first (as data.feature_columns naming a target is refused)."""
    for key, column in (("data.text_column", data_cfg.text_column), ("data.text_pair_column", pair)):
        if column is not None and column in targets:
            raise StropError(f"{key}={column} is also the label column (data.label_column): the model would read the "
                             f"answer; set {key} to the column that holds the input text")
    if pair is not None and pair == data_cfg.text_column:
        raise StropError(f"data.text_pair_column={pair} is data.text_column too: a pair is two texts; set it to the "
                         "column of the second text")
