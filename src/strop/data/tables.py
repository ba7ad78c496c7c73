"""Read tabular files (CSV, TSV, JSONL, Parquet; the text formats also gzip-, bz2- or xz-compressed) into a
DataFrame of strings and JSON values, with one clear error per problem.

Every reader checks what it got instead of trusting a parser's guesses: the header's column names are
unique, every row has the header's number of fields (the message names the first line that has not), and
JSON lines are objects (errors name the line number). Column names lose surrounding whitespace ("text, label"
is read as the columns text and label); a row that repeats the header (two files joined) is left out, and
said; columns with neither a name nor a value (a spreadsheet's trailing `,,`) are left out. Cells stay as
read: strings for CSV and TSV, JSON values for JSONL; the columns' users (`data.inputs`, the tasks) check their
types.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import io
import json
import lzma
import re
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from strop.errors import StropError

COMPRESSION = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
MAGIC = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\xfd7zXZ": ".xz"}


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
        needs = {".jsonl": "one JSON object a line", ".parquet": "at least one row"}.get(
            table_suffix(path), "a header row and at least one example")
        raise StropError(f"{what}: {path} is empty; it needs {needs}")
    return path


def read_text(path: Path, what: str) -> str:
    """A text file's content, decompressed where it is compressed (by its suffix or its first bytes).

    Raises:
        StropError: not UTF-8 (UTF-16 and UTF-32 among them; the message names the encoding to convert
            from), or a damaged compressed file.
    """
    with path.open("rb") as file:
        head = file.read(6)
    compression = next((suffix for magic, suffix in MAGIC.items() if head.startswith(magic)), None)
    opener = COMPRESSION.get(compression, open)
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as error:
        raise StropError(f"{what}: {path} is {compression[1:]}-compressed but cannot be decompressed ({error}): "
                         "the file is damaged; compress it again or give it uncompressed") from None
    wide = _wide_encoding(raw)
    if wide is not None:  # NULs are valid UTF-8: without a BOM such a file decodes, as one mangled column
        encoding, sign = wide
        raise StropError(f"{what}: {path} is {encoding.upper()} text ({sign}), not UTF-8: re-save it as UTF-8, "
                         f"e.g. iconv -f {encoding} -t utf-8 {path.name} > fixed{path.suffix}")
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as some spreadsheets write, is not part of the header
    except UnicodeDecodeError as error:
        raise StropError(
            f"{what}: {path} is not valid UTF-8 (byte {error.start}"
            + (" after decompression" if compression else "") + "): re-save it as UTF-8, e.g. iconv -f "
            f"{_single_byte_encoding(raw)} -t utf-8 {path.name} > fixed{path.suffix}") from None


def split_lines(text: str) -> list[str]:
    """A text file's lines as an editor numbers them: each ends at \n, \r\n or a lone \r (old Mac files;
    Python's own text files read it so), where str.splitlines() would also cut a text at a form feed, U+2028
    or U+0085. A final line break ends the last line, and starts none."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines[-1] == "" else lines


# UTF-32's marks first: UTF-32LE's starts with UTF-16LE's
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
             (codecs.BOM_UTF16_BE, "utf-16"))


def _wide_encoding(raw: bytes) -> tuple[str, str] | None:
    """The encoding (as iconv names it) and the sign of a UTF-16 or UTF-32 file (Excel's "Unicode text",
    PowerShell's output): a byte-order mark, or a NUL byte beside nearly every letter; None: neither."""
    for bom, encoding in WIDE_BOMS:
        if raw.startswith(bom):
            return encoding, "its first bytes are a byte-order mark"
    head = raw[:4096]
    half = len(head) // 2
    nuls = {"utf-16le": head[1::2].count(0), "utf-16be": head[0::2].count(0)}  # ASCII's high byte is 0
    for encoding, other in (("utf-16le", "utf-16be"), ("utf-16be", "utf-16le")):
        # the header's first letter too: a UTF-8 file whose texts hold NULs is no UTF-16 one
        if half >= 2 and nuls[encoding] >= 0.4 * half and nuls[other] <= 0.1 * half and head[:2].count(0) == 1:
            return encoding, "a NUL byte beside every letter, no byte-order mark"
    return None


def _single_byte_encoding(raw: bytes) -> str:
    """The encoding a file that is not UTF-8 was likely written in, as iconv names it: cp1252 (Windows', and
    Excel's plain CSV) where a byte UTF-8 cannot read is 0x80-0x9F (curly quotes, the euro sign, dashes),
    which latin1 would make control characters; latin1 otherwise."""
    decoded = raw.decode("utf-8", errors="surrogateescape")  # each unreadable byte b as the character 0xDC00 + b
    return "cp1252" if re.search("[\udc80-\udc9f]", decoded) else "latin1"


_NOTES_SAID = [False]  # within `notes_said`: the notes about the user's file were said when it was read


@contextlib.contextmanager
def notes_said():
    """Reading parts of a file whose notes were said already (cv's folds, curve's subsets, self-training's
    later rounds, each written as a file of its own), or a file a second time (the other columns of predict's
    --input): its notes (labels, quotes, separators) are not said again."""
    before, _NOTES_SAID[0] = _NOTES_SAID[0], True
    try:
        yield
    finally:
        _NOTES_SAID[0] = before


def say_note(message: str) -> None:
    """A note about the data on stderr, unless within `notes_said`."""
    if not _NOTES_SAID[0]:
        print(message, file=sys.stderr)


def _delimited(path: Path, what: str, delimiter: str) -> pd.DataFrame:
    frame = _delimited_rows(path, what, delimiter)
    for note in frame.attrs.pop("notes", []):  # said once, of the parse kept (a TSV may be parsed twice)
        say_note(note)
    return frame


def _delimited_rows(path: Path, what: str, delimiter: str) -> pd.DataFrame:
    text = read_text(path, what)
    name = {",": "CSV", "\t": "TSV"}[delimiter]
    excel = _excel_separator(text)
    skip = int(excel is not None)  # the "sep=" line is no header, but line numbers count it
    if excel is None and name == "CSV":
        return _parse_rows(text, path, what, _csv_delimiter(text, path, what), csv.QUOTE_MINIMAL, name)
    if excel not in (None, "\t"):
        return _parse_rows(text, path, what, excel, csv.QUOTE_MINIMAL, name, skip)
    # TSV files rarely quote, and stray quotes must stay text; a file whose texts hold tabs must quote them.
    # A field that starts and ends with a double quote was quoted by its writer (pandas and the csv module quote
    # fields that hold a tab, a quote or a newline), so such a file is read with quoting.
    try:
        frame = _parse_rows(text, path, what, "\t", csv.QUOTE_NONE, name, skip)
    except StropError as unquoted:
        if '"' not in text:
            raise
        try:
            return _parse_rows(text, path, what, "\t", csv.QUOTE_MINIMAL, name, skip)
        except StropError:
            raise unquoted from None
    quoted = any(isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"' for v in frame.to_numpy().ravel())
    if quoted or any(len(c) >= 2 and c[0] == c[-1] == '"' for c in frame.columns):
        try:
            with_quotes = _parse_rows(text, path, what, "\t", csv.QUOTE_MINIMAL, name, skip)
        except StropError:
            return frame  # not a quoted file after all: the quotes are part of the texts
        if len(with_quotes) < len(frame):
            # Every line is a row of the header's fields, and the quotes join some: a text quoted with its line
            # breaks, or a stray quote that swallows the rows up to the next one. Only the file can tell: said.
            joined = _joined_lines(text, "\t")
            if joined is None:  # no row spans lines: fewer rows only as a line of quoted spaces is a blank one
                return with_quotes
            say_note(f"{what}: {path.name}: read with its quotes, lines {joined[0]} to {joined[1]} are one row (a "
                     f"text holding line breaks, or a stray quote): {len(with_quotes)} rows from its {len(frame)} "
                     "lines below the header. If its quotes are part of the texts, remove the stray one or write the "
                     "file as JSONL")
        return with_quotes
    return frame


def _joined_lines(text: str, delimiter: str) -> tuple[int, int] | None:
    """The first and last line (from 1) of the first row that quotes join over several lines; None: no row
    spans more than one line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    last = 0
    for _ in reader:
        if reader.line_num > last + 1:
            return last + 1, reader.line_num
        last = reader.line_num
    return None


def _excel_separator(text: str) -> str | None:
    """The separator a first line `sep=;` names (Excel writes it, and reads the header from the next line),
    or None: no such line."""
    match = re.match(r'sep=([^"\r\n])(?:\r\n|\r|\n)', text, re.IGNORECASE)
    return match.group(1) if match else None


def _csv_delimiter(text: str, path: Path, what: str) -> str:
    """',' unless the header is one field that another usual separator splits (a ';' file from a spreadsheet
    in a comma-decimal locale), which is then used and said."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    for other, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if other in header:
            say_note(f"{what}: {path.name} has no comma in its header but {name}: read as separated by {name}")
            return other
    return ","


def _parse_rows(text: str, path: Path, what: str, delimiter: str, quoting: int, name: str,
                skip: int = 0) -> pd.DataFrame:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    try:
        for _ in range(skip):
            next(reader, None)
        header = next(reader, None)
        if header is None:
            raise StropError(f"{what}: {path} is empty; it needs a header row and at least one example")
        check_unique_columns([c for c in header if c.strip()], path, what)  # unnamed ones: once read, below
        rows, repeats = [], []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip() and (row[0] or len(header) > 1)):
                continue  # a blank line; in a one-column file a quoted empty text ("") is a row, an empty text
            if _is_header(row, header):  # `cat a.csv b.csv` repeats the header (b's maybe with its BOM)
                repeats.append(str(reader.line_num))
                continue
            if len(row) != len(header):
                raise StropError(
                    f"{what}: line {reader.line_num} of {path.name} has {len(row)} fields where the header has "
                    f"{len(header)} ({shown_columns(header)}): a text that holds the separator must be quoted "
                    f"(\"...\"), and every row needs the header's columns")
            rows.append(row)
    except csv.Error as error:
        raise StropError(f"{what}: line {reader.line_num} of {path.name} cannot be read as {name}: {error}") from None
    header, rows = _without_empty_unnamed(header, rows)
    check_unique_columns(header, path, what)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame = frame.where(frame != "", None)  # empty cells are missing
    frame.attrs["notes"] = []
    if repeats:
        frame.attrs["notes"].append(
            f"{what}: {path.name}: line{'s' if len(repeats) > 1 else ''} {', '.join(repeats[:5])}"
            f"{', ...' if len(repeats) > 5 else ''} repeat{'' if len(repeats) > 1 else 's'} the header and "
            f"{'are' if len(repeats) > 1 else 'is'} left out (two files joined?)")
    return frame


def _without_empty_unnamed(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """The header and rows without the columns that have neither a name nor a value: a spreadsheet saved as
    CSV writes one such column (`text,label,,`) for each cell once touched right of the table."""
    keep = [i for i, name in enumerate(header) if name.strip() or any(row[i].strip() for row in rows)]
    if not keep or len(keep) == len(header):
        return header, rows
    return [header[i] for i in keep], [[row[i] for i in keep] for row in rows]


def _is_header(row: list[str], header: list[str]) -> bool:
    """Whether a row is the header again, but for a byte-order mark and surrounding spaces."""
    return len(row) == len(header) and all(
        field.lstrip("\ufeff").strip() == name.strip() for field, name in zip(row, header))


def shown_columns(columns) -> str:
    """A table's column names for a message, each quoted, so that a name's spaces show."""
    return ", ".join(repr(str(c)) for c in columns)


def check_unique_columns(columns: list[str], path: Path, what: str) -> None:
    seen = set()
    for column in columns:
        if column in seen:
            raise StropError(f"{what}: {path.name} has two columns named '{column}': rename one so that strop "
                             "reads the one you mean")
        seen.add(column)


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    return _delimited(path, what, ",")


def _read_tsv(path: Path, what: str) -> pd.DataFrame:
    return _delimited(path, what, "\t")


def _read_jsonl(path: Path, what: str) -> pd.DataFrame:
    records = []
    # Lines end at line breaks alone: str.splitlines would also cut at U+2028 and other separators, which JSON
    # writers leave unescaped inside strings.
    for number, line in enumerate(split_lines(read_text(path, what)), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=lambda pairs: _unique_keys(pairs, number, path, what))
        except json.JSONDecodeError as error:
            raise StropError(f"{what}: line {number} of {path.name} is not valid JSON ({error.msg}, column "
                             f"{error.colno})") from None
        except RecursionError:
            raise StropError(f"{what}: line {number} of {path.name} nests JSON lists or objects too deeply to be "
                             "an example") from None
        if not isinstance(record, dict):
            raise StropError(f"{what}: line {number} of {path.name} is a JSON {type(record).__name__}, not an "
                             "object: write one {\"column\": value, ...} object per line")
        records.append(record)
    # object columns: the cells as JSON gave them (an integer id stays an integer where another row lacks one;
    # inferred dtypes made the column float, and 1 came back as 1.0 in predict's output)
    return pd.DataFrame(records, dtype=object) if records else pd.DataFrame()


def _unique_keys(pairs: list[tuple], number: int, path: Path, what: str) -> dict:
    keys = [k for k, _ in pairs]
    duplicated = next((k for k in keys if keys.count(k) > 1), None)
    if duplicated is not None:
        raise StropError(f"{what}: line {number} of {path.name} has the key '{duplicated}' twice: keep one")
    return dict(pairs)


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    import pyarrow

    try:
        frame = pd.read_parquet(path)
    except (KeyError, TypeError, ValueError, OSError, pyarrow.ArrowException) as error:
        raise StropError(f"{what}: {path} could not be read as Parquet ({type(error).__name__}: {error}): the file "
                         "is damaged or its metadata does not fit its columns; write it again") from None
    check_unique_columns([str(c) for c in frame.columns], path, what)
    return frame


READERS: dict[str, Callable[[Path, str], pd.DataFrame]] = {
    ".csv": _read_csv,
    ".tsv": _read_tsv,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}


def table_suffix(path: Path) -> str:
    """The format's suffix, under a compression suffix (reviews.csv.gz -> .csv)."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSION:
        return suffixes[-2]
    return path.suffix.lower()


def read_table(path: str | Path, what: str = "data") -> pd.DataFrame:
    """Reads a table of examples; the format comes from the file's extension.

    Args:
        path: a .csv, .tsv, .jsonl or .parquet file (UTF-8 for the text formats, which may be compressed:
            .csv.gz, .jsonl.xz, ...).
        what: how the file is named in error messages, e.g. "data.train".

    Raises:
        StropError: the file is missing, empty, not UTF-8, of an unknown format, or malformed.
    """
    path = check_readable(Path(path), what)
    reader = READERS.get(table_suffix(path))
    if reader is None:
        raise StropError(f"{what}: cannot read '{path.name}': use one of {', '.join(READERS)} ({got_format(path)})")
    try:
        frame = reader(path, what)
    except (pd.errors.ParserError, ValueError, OSError) as error:
        raise StropError(f"{what}: {path} could not be read as {table_suffix(path)[1:].upper()}: {error}") from None
    if len(frame) == 0:
        raise StropError(f"{what}: {path} has a header but no examples: add rows below it, or name the file "
                         "that holds them")
    return _strip_column_names(frame)


def _strip_column_names(frame: pd.DataFrame) -> pd.DataFrame:
    """Column names without surrounding whitespace ("text, label" names 'label'), which nobody sees in a
    message or means to type; names that only their whitespace tells apart stay as written, so that no
    column takes another's place."""
    stripped = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    counts = Counter(stripped)
    names = [c if counts[s] > 1 else s for c, s in zip(frame.columns, stripped)]
    if names != list(frame.columns):
        frame.columns = names
    return frame


def got_format(path: Path) -> str:
    """What an unreadable file's name says it is, for a message: `got '.xlsx'`; a compressed file that is not a
    compressed table (texts.txt.gz) gets what can be compressed."""
    if path.suffix.lower() in COMPRESSION:
        return (f"got '{''.join(path.suffixes[-2:])}': a table may be compressed with gzip, bz2 or xz, e.g. "
                f"data.csv{path.suffix}; other files, decompress first")
    return f"got '{path.suffix}'"


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Rows of a table read by `read_table` (a fold, a subset, a self-training round's data) as a Parquet file,
    every column as read, but a column of mixed JSON types (ids that are numbers and strings, labels 1 and
    "neg") or of one type from one file and another from a second (labels True and "positive"), which Parquet
    cannot hold in one column: its values are written as the texts they read as (1 -> "1", 1.0 -> "1",
    True -> "True"), which the tasks read as the same labels and texts. So too a column of lists or records
    whose items mix types (a JSONL file's `"meta": {"id": 7}` and `{"id": "web-7"}`): a list's items as texts
    (a multi-label example's labels 1 and "neg"), a record as its JSON text (a column no task reads)."""
    frame = frame.reset_index(drop=True)
    for column in frame.columns:
        values = [v for v in frame[column] if not _missing_cell(v)]
        kinds = {type(v) for v in values}
        if any(isinstance(v, SEQUENCES) for v in values) and len(kinds) > 1:
            # a multi-label column of lists and single labels ("neg" beside ["pos", "neg"]): a list each, which
            # reads as the same labels ("pos|neg", a text of separated labels, is a list of that one text)
            frame[column] = frame[column].map(_as_list).astype(object)
        elif len(kinds) > 1:
            frame[column] = frame[column].map(_as_text).astype(object)
        if frame[column].dtype == object and not _parquet_holds(frame[column]):  # a typed column always holds
            frame[column] = frame[column].map(_nested_as_text).astype(object)
            if not _parquet_holds(frame[column]):  # lists of lists or of records: each list as its JSON text
                frame[column] = frame[column].map(_as_json).astype(object)
    frame.to_parquet(path, index=False)
    return Path(path)


def _parquet_holds(values: pd.Series) -> bool:
    """Whether Parquet can hold the column as it is: one type throughout, nested values included."""
    import pyarrow as pa

    try:
        pa.Array.from_pandas(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):  # an int past 64 bits
        return False
    return True


SEQUENCES = (list, tuple, np.ndarray)  # a cell's nested values, besides records (dict)


def _missing_cell(value) -> bool:
    return not isinstance(value, (*SEQUENCES, dict)) and is_missing(value)


def _as_list(value):
    if _missing_cell(value):
        return None
    return [_as_text(item) for item in value] if isinstance(value, SEQUENCES) else [_as_text(value)]


def _nested_as_text(value):
    """A list's items as texts (lists and records within it as their JSON), a record as its JSON, else a text."""
    if isinstance(value, SEQUENCES):
        return [_as_json(item) if isinstance(item, (*SEQUENCES, dict)) else _as_text(item) for item in value]
    return _as_json(value) if isinstance(value, dict) else _as_text(value)


def _as_json(value):
    if _missing_cell(value):
        return None
    return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value, ensure_ascii=False, default=str)


def is_missing(value) -> bool:
    """None, NaN, and pandas' own markers of a missing cell: pd.NA (a nullable Int64, Float64, boolean or string
    column's) and NaT (a date's), which str() would make the texts '<NA>' and 'NaT'."""
    return (value is None or value is pd.NA or value is pd.NaT
            or (isinstance(value, (float, np.floating, np.datetime64, np.timedelta64)) and value != value))


def _as_text(value):
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
