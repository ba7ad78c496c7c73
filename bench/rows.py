"""The benchmark rows: which examples each row trains on and which split scores it.

Every row is built once per invocation, from a fixed data seed, and written to CSV files that every tool
and every training seed reads: the seeds vary training only, never the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

# ../shared/data/text beside the repository (see /work/shared/data/README.md); BENCH_DATA overrides it.
DATA_ROOT = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "text"))
DATA_SEED = 0  # draws the samples, few-shot sets and held-out splits
HOLDOUT_FRACTION, HOLDOUT_CAP = 0.2, 1000  # scoring split of data sets without a dev file


@dataclass(frozen=True)
class Row:
    dataset: str  # folder under DATA_ROOT
    sample: int | None = None  # train on this many examples drawn at random from train
    per_class: int | None = None  # few-shot: train on this many examples of each class

    @property
    def few_shot(self) -> bool:
        return self.per_class is not None


ROWS = {
    "sst2-1k": Row("sst2", sample=1000),
    "sst2-full": Row("sst2"),
    "trec": Row("trec"),
    "banking77": Row("banking77"),
    "sst2-fs64": Row("sst2", per_class=32),  # 64 examples, two classes
    "trec-fs8": Row("trec", per_class=8),  # 48 examples, six classes
}


@dataclass(frozen=True)
class RowFiles:
    train: Path
    score: Path
    n_train: int
    n_score: int
    n_classes: int


def read_texts(path: Path) -> pd.DataFrame:
    """A text,label CSV with both columns as strings (no 'NA' turned into a missing value)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)[["text", "label"]]


def holdout(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded stratified split: (rest, held out), the held-out part 20% of the rows, at most 1,000."""
    n_score = min(round(len(frame) * HOLDOUT_FRACTION), HOLDOUT_CAP)
    rest, score = train_test_split(frame, test_size=n_score, stratify=frame["label"], random_state=DATA_SEED)
    return rest.sort_index(), score.sort_index()


def source_splits(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, scoring split): the dev file where there is one, else a held-out part of train."""
    folder = DATA_ROOT / dataset
    if not (folder / "train.csv").is_file():
        raise FileNotFoundError(f"no benchmark data at {folder}/train.csv (set BENCH_DATA to the text data folder)")
    train = read_texts(folder / "train.csv")
    if (folder / "dev.csv").is_file():
        return train, read_texts(folder / "dev.csv")
    return holdout(train)


def build(row: Row, limit: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training examples and the scoring split of a row; `limit` caps both (smoke runs only)."""
    train, score = source_splits(row.dataset)
    if row.sample is not None:
        train = train.sample(n=min(row.sample, len(train)), random_state=DATA_SEED).sort_index()
    if row.per_class is not None:
        train = train.groupby("label", group_keys=False).sample(n=row.per_class, random_state=DATA_SEED).sort_index()
    if limit is not None:
        train = train.sample(n=min(limit, len(train)), random_state=DATA_SEED).sort_index()
        score = score.sample(n=min(limit, len(score)), random_state=DATA_SEED).sort_index()
    return train, score


def prepare(name: str, folder: Path, limit: int | None = None) -> RowFiles:
    """Writes a row's train.csv and score.csv into folder/name and describes them."""
    train, score = build(ROWS[name], limit)
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    files = RowFiles(target / "train.csv", target / "score.csv", len(train), len(score), train["label"].nunique())
    train.to_csv(files.train, index=False)
    score.to_csv(files.score, index=False)
    return files
