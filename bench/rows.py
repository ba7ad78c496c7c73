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
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"
DATA_ROOT = Path(os.environ.get("BENCH_DATA", DEFAULT_DATA_ROOT))
# The token-classification data sets: the sibling folder "ner" of the text data (../shared/data/ner), one
# folder per data set with train.conll and dev.conll; BENCH_NER_DATA overrides it.
DEFAULT_NER_ROOT = DEFAULT_DATA_ROOT.parent / "ner"
NER_ROOT = Path(os.environ.get("BENCH_NER_DATA", DATA_ROOT.parent / "ner"))
TEXT, TOKENS = "text_classification", "token_classification"  # the tasks of the rows
DATA_SEED = 0  # draws the samples, few-shot sets and held-out splits
HOLDOUT_FRACTION, HOLDOUT_CAP = 0.2, 1000  # scoring split of data sets without a dev file


@dataclass(frozen=True)
class Row:
    dataset: str  # folder under DATA_ROOT
    sample: int | None = None  # train on this many examples drawn at random from train
    per_class: int | None = None  # few-shot: train on this many examples of each class
    task: str = TEXT  # TOKENS: a folder under NER_ROOT with train.conll and dev.conll, scored by entity F1

    @property
    def few_shot(self) -> bool:
        return self.per_class is not None

    @property
    def metric(self) -> str:
        """The row's score: accuracy of the text rows, entity-level F1 (seqeval) of the token rows."""
        return "entity F1" if self.task == TOKENS else "accuracy"

    @property
    def files(self) -> tuple[Path, Path]:
        """(training file, scoring file) of the data set; the scoring file need not exist for a text row."""
        if self.task == TOKENS:
            return NER_ROOT / self.dataset / "train.conll", NER_ROOT / self.dataset / "dev.conll"
        return DATA_ROOT / self.dataset / "train.csv", DATA_ROOT / self.dataset / "dev.csv"


ROWS = {
    "sst2-1k": Row("sst2", sample=1000),
    "sst2-full": Row("sst2"),
    "trec": Row("trec"),
    "banking77": Row("banking77"),
    "sst2-fs64": Row("sst2", per_class=32),  # 64 examples, two classes
    "trec-fs8": Row("trec", per_class=8),  # 48 examples, six classes
    "conll2003": Row("conll2003", task=TOKENS),  # named entities: 14,041 sentences, scored on 3,250 (dev)
}


def resolve(name: str) -> Row:
    """A named row, or any data folder under DATA_ROOT with a train.csv: trained on all of it, scored on its
    dev.csv or a held-out part of train, like the full rows (so data sets not listed here can be benchmarked);
    or any folder under NER_ROOT with a train.conll and a dev.conll: a token row like conll2003."""
    if name in ROWS:
        row = ROWS[name]
        if row.task == TOKENS:
            return _checked_conll(row, name)
        if not (DATA_ROOT / row.dataset / "train.csv").is_file():
            raise LookupError(f"row {name} reads {DATA_ROOT / row.dataset / 'train.csv'}, which does not "
                              "exist: set BENCH_DATA to the folder of the text data sets, or leave the row out")
        return _checked(row, name)
    if (DATA_ROOT / name / "train.csv").is_file():
        return _checked(Row(name), name)
    if (NER_ROOT / name / "train.conll").is_file():
        return _checked_conll(Row(name, task=TOKENS), name)
    folders = sorted(p.parent.name for p in DATA_ROOT.glob("*/train.csv"))
    folders += sorted(p.parent.name for p in NER_ROOT.glob("*/train.conll") if p.parent.name not in ROWS)
    raise LookupError(f"unknown row {name}: choose from {', '.join(ROWS)}, or a data folder under {DATA_ROOT} "
                      f"or {NER_ROOT} (found: {', '.join(folders) or 'none'})")


def data_roots() -> dict[str, str]:
    """The data roots read, as resolved paths: recorded in every result, so that a result measured on other
    data than the shipped data sets can be told apart (and is not published under the official rows)."""
    return {"data_root": str(DATA_ROOT.resolve()), "ner_data_root": str(NER_ROOT.resolve())}


def default_data_roots() -> dict[str, str]:
    """`data_roots()` as they are without BENCH_DATA and BENCH_NER_DATA: the data the published rows name."""
    return {"data_root": str(DEFAULT_DATA_ROOT.resolve()), "ner_data_root": str(DEFAULT_NER_ROOT.resolve())}


def checked_splits(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, scoring split) of a data folder under DATA_ROOT, for the scripts that draw their own samples
    from it (scarce.py, fewshot_screen.py, curve_check.py), once it has passed the checks a row of run.py
    passes: the folder and its train.csv exist, the files have the columns text,label, can be read, and hold
    two classes and a scorable example. They call it before they write anything.

    Raises:
        LookupError: a message that names the folder or file and the fix.
    """
    if not (DATA_ROOT / dataset / "train.csv").is_file():
        folders = sorted(p.parent.name for p in DATA_ROOT.glob("*/train.csv"))
        raise LookupError(f"no data folder {dataset} with a train.csv under {DATA_ROOT} (found: "
                          f"{', '.join(folders) or 'none'}): set BENCH_DATA to the folder of the text data sets, "
                          "or choose one of those")
    _checked(Row(dataset), dataset)
    train, score = source_splits(dataset)
    scorable = score["label"].isin(set(train["label"]))
    _check_trainable(dataset, train, score[scorable], int((~scorable).sum()))
    return train, score


def _checked(row: Row, name: str) -> Row:
    """The row, once its files are known to have the columns every tool reads and an example (only the first
    line is read: this runs when the arguments are parsed, so a wrong file gets a message, not a traceback)."""
    folder = DATA_ROOT / row.dataset
    for path in (folder / "train.csv", folder / "dev.csv"):
        if not path.is_file():
            continue
        try:
            head = _read_csv(path, nrows=1)
        except pd.errors.EmptyDataError:
            raise LookupError(f"row {name} reads {path}, which is empty: give it a header row text,label and "
                              "examples") from None
        missing = [c for c in ("text", "label") if c not in head.columns]
        if missing:
            raise LookupError(f"row {name} reads {path}, which has no column {' or '.join(missing)} (its columns: "
                              f"{', '.join(map(str, head.columns))}): give the file a header row text,label")
        if head.empty:
            raise LookupError(f"row {name} reads {path}, which has a header but no examples: add some, or leave "
                              "the row out")
    return row


def _checked_conll(row: Row, name: str) -> Row:
    """A token row, once both its CoNLL files exist and their first sentence has a tag column."""
    for path in row.files:
        if not path.is_file():
            raise LookupError(f"row {name} reads {path}, which does not exist: set BENCH_NER_DATA to the folder "
                              "of the token-classification data sets (default: the folder ner beside the text "
                              "data), or leave the row out")
        with open(path, encoding="utf-8") as file:
            first = next((line.split() for line in file if line.strip() and not line.startswith("-DOCSTART-")),
                         None)
        if first is None:
            raise LookupError(f"row {name} reads {path}, which holds no sentence: give it one token and its tag a "
                              "line, or leave the row out")
        if len(first) < 2:
            raise LookupError(f"row {name} reads {path}, whose first token line {' '.join(first)!r} has no tag: "
                              "give each line the columns `token ... tag`")
    return row


@dataclass(frozen=True)
class RowFiles:
    train: Path
    score: Path
    n_train: int  # examples: texts, or sentences of a token row
    n_score: int
    n_classes: int  # labels, or entity types of a token row
    n_unscorable: int  # scoring rows dropped: their label never occurs in the training examples
    task: str = TEXT
    metric: str = "accuracy"
    name: str = ""  # the row


def _read_csv(path: Path, **options) -> pd.DataFrame:
    """pd.read_csv, with a file that is not UTF-8 or not a well-formed CSV refused in a message that names it
    (the harness stops before any run on bad data, not with a pandas traceback).

    Raises:
        LookupError: the file cannot be decoded or parsed.
    """
    try:
        return pd.read_csv(path, encoding="utf-8", **options)
    except UnicodeDecodeError as error:
        raise LookupError(f"{path} is not UTF-8 text (byte {error.object[error.start:error.start + 1]!r} at offset "
                          f"{error.start}): save it as UTF-8") from None
    except pd.errors.ParserError as error:
        raise LookupError(f"{path} cannot be read as a CSV file ({str(error).strip()}): quote the texts that hold "
                          "commas or line breaks, e.g. save it with a CSV writer") from None


def read_texts(path: Path) -> pd.DataFrame:
    """A text,label CSV with both columns as strings (no 'NA' turned into a missing value). Rows with a blank
    text or label are left out, and said: strop refuses them, other tools would train on them.

    Raises:
        LookupError: the file is not UTF-8 or not a well-formed CSV.
    """
    frame = _read_csv(path, dtype=str, keep_default_na=False)[["text", "label"]]
    blank = (frame["text"].str.strip() == "") | (frame["label"].str.strip() == "")
    if blank.any():
        print(f"{path}: {int(blank.sum())} rows with a blank text or label left out", flush=True)
    return frame[~blank]


def holdout(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded stratified split: (rest, held out), the held-out part 20% of the rows of the classes with two
    examples or more, at most 1,000. A class with a single example stays in training; where the held-out part
    is smaller than the number of classes, stratifying is impossible and the split is plain random.

    Raises:
        LookupError: every class has a single example, so none can be held out.
    """
    counts = frame["label"].value_counts()
    single = frame["label"].isin(counts.index[counts == 1])
    splittable = frame[~single]
    if splittable.empty:
        raise LookupError("every class of the training data has a single example, so none can be held out for "
                          "scoring: give the data set a dev.csv")
    # 20% of the rows it is drawn from: of all rows, it could be more than the classes with two examples hold
    n_score = max(min(round(len(splittable) * HOLDOUT_FRACTION), HOLDOUT_CAP), 1)
    stratify = splittable["label"] if n_score >= splittable["label"].nunique() else None
    rest, score = train_test_split(splittable, test_size=n_score, stratify=stratify, random_state=DATA_SEED)
    return pd.concat([rest, frame[single]]).sort_index(), score.sort_index()


def source_splits(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, scoring split): the dev file where there is one, else a held-out part of train."""
    folder = DATA_ROOT / dataset
    train = read_texts(folder / "train.csv")
    if (folder / "dev.csv").is_file():
        return train, read_texts(folder / "dev.csv")
    try:
        return holdout(train)
    except LookupError as error:
        raise LookupError(f"{folder / 'train.csv'}: {error}") from None


def build(row: Row, limit: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training examples and the scoring split of a row; `limit` caps both (smoke runs only)."""
    train, score = source_splits(row.dataset)
    if row.sample is not None:
        train = train.sample(n=min(row.sample, len(train)), random_state=DATA_SEED).sort_index()
    if row.per_class is not None:
        counts = train["label"].value_counts()
        small = train["label"].isin(counts.index[counts < row.per_class])  # these classes give all they have
        drawn = train[~small].groupby("label", group_keys=False).sample(n=row.per_class, random_state=DATA_SEED)
        train = pd.concat([drawn, train[small]]).sort_index()
    if limit is not None:
        train = train.sample(n=min(limit, len(train)), random_state=DATA_SEED).sort_index()
        score = score.sample(n=min(limit, len(score)), random_state=DATA_SEED).sort_index()
    return train, score


def prepare(name: str, folder: Path, limit: int | None = None) -> RowFiles:
    """Writes a row's train.csv and score.csv into folder/name and describes them (a token row: see
    `prepare_conll`)."""
    row = resolve(name)
    if row.task == TOKENS:
        return prepare_conll(name, row, folder, limit)
    train, score = build(row, limit)
    # No tool can predict a label it never saw (strop refuses such a validation file): score the others.
    scorable = score["label"].isin(set(train["label"]))
    score, n_unscorable = score[scorable], int((~scorable).sum())
    _check_trainable(name, train, score, n_unscorable)
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    files = RowFiles(target / "train.csv", target / "score.csv", len(train), len(score), train["label"].nunique(),
                     n_unscorable, name=name)
    train.to_csv(files.train, index=False)
    score.to_csv(files.score, index=False)
    return files


def _check_trainable(name: str, train: pd.DataFrame, score: pd.DataFrame, n_unscorable: int) -> None:
    """Stops the harness before any run where no tool could be measured on the row: a classifier needs two
    classes to train on, and the accuracy needs a scoring row whose label occurs in training."""
    classes = train["label"].unique()
    if len(classes) < 2:
        found = f"has only the label {classes[0]!r}" if len(classes) else "has no example with a text and a label"
        raise LookupError(f"row {name}: its training data {found}; a classifier needs examples of at least two "
                          "classes: add them, or leave the row out")
    if score.empty:
        why = (f"all {n_unscorable} have labels that never occur in training" if n_unscorable
               else "none has a text and a label")
        raise LookupError(f"row {name}: no scoring example can be scored ({why}); give the row a dev.csv with "
                          "the labels of its train.csv, or leave the row out")


def prepare_conll(name: str, row: Row, folder: Path, limit: int | None = None) -> RowFiles:
    """A token row: every tool reads the data set's own train.conll and dev.conll, as a user would. With
    `limit` (smoke runs) that many sentences of each, drawn with the data seed, are written into folder/name
    with their lines unchanged. Scoring sentences with a tag that no training sentence has are left out and
    counted (strop refuses them, and no tool can predict the tag), the rest written there too."""
    import random

    import conll

    train_path, score_path = row.files
    try:
        train, score = conll.read_conll(train_path), conll.read_conll(score_path)
    except (ValueError, UnicodeDecodeError) as error:
        raise LookupError(f"row {name}: {error}") from None
    target = folder / name
    if limit is not None:
        train = [train[i] for i in sorted(random.Random(DATA_SEED).sample(range(len(train)), min(limit, len(train))))]
        score = [score[i] for i in sorted(random.Random(DATA_SEED).sample(range(len(score)), min(limit, len(score))))]
        target.mkdir(parents=True, exist_ok=True)
        train_path = target / "train.conll"
        conll.write_conll(train_path, train)
    known = {tag for s in train for tag in s.tags}
    scorable = [s for s in score if set(s.tags) <= known]
    n_unscorable = len(score) - len(scorable)
    if limit is not None or n_unscorable:
        target.mkdir(parents=True, exist_ok=True)
        score_path = target / "score.conll"
        conll.write_conll(score_path, scorable)
    types = conll.entity_types(sorted(known))
    if not types or not scorable:
        found = (f"no entity tag in {train_path}" if not types else
                 f"no sentence of {score_path} can be scored ({n_unscorable} have tags absent from training)")
        raise LookupError(f"row {name}: {found}; a token row needs tagged entities to train on and sentences "
                          "to score")
    return RowFiles(train_path, score_path, len(train), len(scorable), len(types), n_unscorable, TOKENS, row.metric,
                    name)
