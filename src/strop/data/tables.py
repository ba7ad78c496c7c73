"""Read tabular files (CSV, TSV, JSONL, Parquet) into a DataFrame, with one clear error per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from strop.errors import StropError


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8",
                       quoting=3)  # QUOTE_NONE: TSV files rarely quote, and stray quotes must stay text


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.read_json(path, lines=True, dtype=False, encoding="utf-8")


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": _read_csv,
    ".tsv": _read_tsv,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}


def check_readable(path: Path, what: str) -> Path:
    """The path of an existing, non-empty regular file.

    Raises:
        StropError: it does not exist, is a folder or another non-file, or is empty.
    """
    if not path.exists():
        raise StropError(f"{what}: file not found: {path}")
    if path.is_dir():
        raise StropError(f"{what}: {path} is a folder, not a file: name the data file inside it")
    if not path.is_file():
        raise StropError(f"{what}: {path} is not a regular file (a pipe or device?): save the data to a file first")
    if path.stat().st_size == 0:
        raise StropError(f"{what}: {path} is empty; it needs a header row and at least one example")
    return path


def read_table(path: str | Path, what: str = "data") -> pd.DataFrame:
    """Reads a table of examples; the format comes from the file's extension.

    Args:
        path: a .csv, .tsv, .jsonl or .parquet file (UTF-8 for the text formats).
        what: how the file is named in error messages, e.g. "data.train".

    Raises:
        StropError: the file is missing, empty, not UTF-8, of an unknown format, or malformed.
    """
    path = check_readable(Path(path), what)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise StropError(f"{what}: cannot read '{path.name}': use one of {', '.join(READERS)} (got '{path.suffix}')")
    try:
        frame = reader(path)
    except UnicodeDecodeError as error:
        raise StropError(
            f"{what}: {path} is not valid UTF-8 (byte {error.start}): re-save it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}") from None
    except pd.errors.EmptyDataError:
        raise StropError(f"{what}: {path} is empty; it needs a header row and at least one example") from None
    except (pd.errors.ParserError, ValueError, OSError) as error:
        raise StropError(f"{what}: {path} could not be read as {path.suffix[1:].upper()}: {error}") from None
    if len(frame) == 0:
        raise StropError(f"{what}: {path} has a header but no examples")
    return frame
