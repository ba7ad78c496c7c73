"""Property-based tests (hypothesis) of everything that parses user input: the config (dicts, key=value
overrides, YAML files) and every data reader (CSV, TSV, JSONL, Parquet, CoNLL, vector tables). Every input
either loads or fails with strop's own StropError, never another exception and never a hang; well-formed
tables written by the csv and json modules and by pandas read back exactly what was written, after the
documented normalisation (surrounding whitespace stripped, empty cells missing).

The defects this fuzzing found are kept as minimal examples at the end, each fixed.

STROP_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py   # a longer search than CI's
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import string
import struct
import tempfile
import typing
from dataclasses import fields, is_dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from strop.config import Config, DataConfig, load_config
from strop.data.conll import read_conll
from strop.data.inputs import INVISIBLE, TRUTH_WORDS
from strop.data.tables import read_table
from strop.errors import StropError
from strop.tasks.classification import Classification

EXAMPLES = int(os.environ.get("STROP_FUZZ_EXAMPLES", "40"))
# Each example parses a file of a few hundred bytes in milliseconds: 10 s is far beyond a slow machine, but a
# machine shared with heavy jobs can stall a process that long (STROP_FUZZ_DEADLINE=0: no deadline).
DEADLINE = float(os.environ.get("STROP_FUZZ_DEADLINE", "10"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=DEADLINE) if DEADLINE else None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
HANG_SECONDS = 60  # one parse taking this long counts as a hang, deadline or not


class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: float = HANG_SECONDS):
    """Raises Hang in the test if the body runs longer than `seconds` (a deadline alone would wait for it)."""
    def expired(signum, frame):
        raise Hang(f"no result after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_refuses(parse, *args):
    """parse(*args), or None where it raised StropError; any other exception fails the test."""
    with no_hang():
        try:
            return parse(*args)
        except StropError as error:
            assert str(error), "a StropError needs a message"
            return None


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="strop-fuzz-") as path:
        yield Path(path)


def _read_examples(path: Path):
    return Classification.read(path, DataConfig(), "text", "data.train")


# --- the config ------------------------------------------------------------------------------------------------

HINTS = typing.get_type_hints(Config)
SECTIONS = {name: [f.name for f in fields(kind)] for name, kind in HINTS.items() if is_dataclass(kind)}
KEYS = [f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys] + ["output_dir"]
WORDS = ["auto", "mlp", "minilm-l6", "adamw", "sgd", "cosine", "bf16", "no", "cpu", "true", "false", "yes", "null",
         "none", "", "0", "1", "-1", "3", "0.5", "1e-3", "1e400", "nan", "inf", "-inf", "[64, 64]", "64,64", "[]",
         "[a, {b: c}]", "{a: 1}", "[1, [2]]", "2001-01-01", "0x10", "1_000", "~", "text_classification", "iob2"]

scalars = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(WORDS))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
section_keys = st.sampled_from(sorted({key for keys in SECTIONS.values() for key in keys})) | st.text(max_size=8)
config_dicts = st.dictionaries(
    st.sampled_from([*SECTIONS, "output_dir"]) | st.text(max_size=8),
    st.dictionaries(section_keys, values, max_size=5) | values, max_size=5)


def _round_trips(config: Config) -> None:
    """The resolved config, written as config.yaml is, loads back as the same config: a resumed or re-run
    run reads exactly what ran."""
    assert load_config(yaml.safe_load(config.to_yaml())) == config


@FUZZ
@given(config_dicts)
def test_config_from_any_dict_loads_or_is_refused(raw):
    config = loads_or_refuses(load_config, raw)
    if config is not None:
        assert isinstance(config, Config)
        _round_trips(config)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=10), st.sampled_from(WORDS) | st.text(max_size=12))
                .map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=20), max_size=5))
def test_config_overrides_load_or_are_refused(overrides):
    config = loads_or_refuses(load_config, None, overrides)
    if config is not None:
        _round_trips(config)


YAML_ALPHABET = string.ascii_letters[:8] + string.digits[:4] + " \n\t:-[]{}#&*!|>'\",?%@`.=~\\" + "é\u2028\x00"


def _collection_key(text: str) -> bool:
    """Whether the YAML holds a mapping whose key is a list or mapping: see test_yaml_list_key_is_refused."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return False
    stack = [n for n in nodes if n is not None]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, (yaml.MappingNode, yaml.SequenceNode)):
                    return True
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return False


@FUZZ
@given(st.text(YAML_ALPHABET, max_size=60) | config_dicts.map(lambda d: yaml.safe_dump(d, allow_unicode=True))
       | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_config_file_of_any_text_loads_or_is_refused(folder, text):
    assume(not _collection_key(text))
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    config = loads_or_refuses(load_config, path)
    if config is not None:
        _round_trips(config)


@FUZZ
@given(st.binary(max_size=60))
def test_config_file_of_any_bytes_loads_or_is_refused(folder, data):
    path = folder / "config.yaml"
    path.write_bytes(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    assume(text is None or not _collection_key(text))
    loads_or_refuses(load_config, path)


# --- tables: anything -------------------------------------------------------------------------------------------

TABLE_SUFFIXES = [".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz", ".jsonl.xz", ".txt"]
# A first few bytes that send read_text to a decompressor.
MAGIC = st.sampled_from([b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"BZh", b"BZh91AY&SY", b"\xfd7zXZ\x00", b"\xef\xbb\xbf", b"PAR1"])
CSVISH = st.lists(st.sampled_from(list("ab1 ,;\t|\"'\n\r\\{}[]:é\x00\u2028") + ["text", "label", "text,label\n"]),
                  max_size=40).map("".join)


def _check_table(frame) -> None:
    assert isinstance(frame, pd.DataFrame) and len(frame) > 0
    assert len(set(map(str, frame.columns))) == len(frame.columns)


def _check_examples(examples) -> None:
    assert len(examples.inputs) == len(examples.targets) > 0
    assert all(isinstance(x, str) and x and x == x.strip() for x in examples.inputs)
    assert all(isinstance(y, str) and y and y == y.strip() for y in examples.targets)


@FUZZ
@given(st.sampled_from(TABLE_SUFFIXES), MAGIC, st.binary(max_size=200))
def test_any_bytes_as_a_table_load_or_are_refused(folder, suffix, magic, data):
    path = folder / f"t{suffix}"
    path.write_bytes(magic + data)
    frame = loads_or_refuses(read_table, path, "data.train")
    if frame is not None:
        _check_table(frame)
    examples = loads_or_refuses(_read_examples, path)
    if examples is not None:
        _check_examples(examples)


@FUZZ
@given(st.sampled_from([".csv", ".tsv"]), st.booleans(), CSVISH)
def test_any_csvish_text_loads_or_is_refused(folder, suffix, header, text):
    path = folder / f"t{suffix}"
    path.write_text(("text,label\n" if suffix == ".csv" else "text\tlabel\n") * header + text, encoding="utf-8")
    frame = loads_or_refuses(read_table, path, "data.train")
    if frame is not None:
        _check_table(frame)
    examples = loads_or_refuses(_read_examples, path)
    if examples is not None:
        _check_examples(examples)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                          max_size=3), max_leaves=8)
json_lines = (st.dictionaries(st.sampled_from(["text", "label", "x"]) | st.text(max_size=5), json_values, max_size=4)
              .map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=30).filter(lambda t: "\n" not in t))


@FUZZ
@given(st.lists(json_lines, max_size=6))
def test_any_json_lines_load_or_are_refused(folder, lines):
    path = folder / "t.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    frame = loads_or_refuses(read_table, path, "data.train")
    if frame is not None:
        _check_table(frame)
    examples = loads_or_refuses(_read_examples, path)
    if examples is not None:
        _check_examples(examples)


cells = st.none() | st.text(max_size=8) | st.integers() | st.floats() | st.booleans() | st.binary(max_size=6)


@FUZZ
@given(st.dictionaries(st.sampled_from(["text", "label", "x"]) | st.text(max_size=4),
                       st.sampled_from(["str", "int", "float", "bool", "bytes", "mixed", "list"]), min_size=1,
                       max_size=3),
       st.integers(0, 5), st.randoms(use_true_random=False))
def test_any_parquet_table_loads_or_is_refused(folder, columns, rows, rng):
    make = {"str": lambda: rng.choice([None, "", " a ", "b", "é"]), "int": lambda: rng.randint(-5, 5),
            "float": lambda: rng.choice([0.5, 1.0, float("nan"), float("inf")]), "bool": lambda: rng.random() < 0.5,
            "bytes": lambda: rng.choice([b"ok", b"\xff\xfe", b""]), "list": lambda: [rng.random()],
            "mixed": lambda: rng.choice(["a", 1, None])}
    frame = pd.DataFrame({name: [make[kind]() for _ in range(rows)] for name, kind in columns.items()})
    path = folder / "t.parquet"
    try:
        frame.to_parquet(path)
    except Exception:  # pyarrow cannot write mixed object columns: not a file strop could be given
        assume(False)
    table = loads_or_refuses(read_table, path, "data.train")
    if table is not None:
        _check_table(table)
    examples = loads_or_refuses(_read_examples, path)
    if examples is not None:
        _check_examples(examples)


@pytest.fixture(scope="module")
def parquet_bytes(folder) -> tuple[bytes, int]:
    path = folder / "good.parquet"
    pd.DataFrame({"text": ["hello world", "café", None, "x" * 50], "label": ["a", "b", "a", "b"],
                  "n": [1, 2, 3, 4]}).to_parquet(path)
    data = path.read_bytes()
    footer = len(data) - 8 - struct.unpack("<I", data[-8:-4])[0]
    return data, footer


@FUZZ
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_parquet_file_with_damaged_pages_loads_or_is_refused(folder, parquet_bytes, damage):
    """Bytes changed in the column pages; the footer (schema, pandas metadata) is the subject of
    test_parquet_with_bogus_pandas_metadata_is_refused."""
    data, footer = parquet_bytes
    damaged = bytearray(data)
    for where, value in damage:
        damaged[4 + int(where * (footer - 4))] = value
    path = folder / "damaged.parquet"
    path.write_bytes(bytes(damaged))
    table = loads_or_refuses(read_table, path, "data.train")
    if table is not None:
        _check_table(table)


# --- tables: well-formed ones read back what was written -------------------------------------------------------

# Texts of any characters but surrogates, which UTF-8 cannot encode; non-blank once stripped of whitespace and
# invisible characters (a blank text is refused: test_blank_texts_are_refused). Labels: letters, so that no label set is all numbers, which the
# reader writes as numbers ('1.0' -> '1'; test_reliability.py).
texts = st.text(min_size=1, max_size=30).filter(lambda t: INVISIBLE.sub("", t).strip())  # as clean_strings
labels = st.text(string.ascii_letters + "_- ", min_size=1, max_size=8).filter(lambda t: t.strip())
rows = st.lists(st.tuples(texts, labels), min_size=1, max_size=8)


def _expected(written):
    return [t.strip() for t, _ in written], [y.strip() for _, y in written]


def _read_back(path: Path):
    with no_hang():
        examples = _read_examples(path)
    return examples.inputs, examples.targets


@FUZZ
@given(rows, st.sampled_from(["\n", "\r\n"]), st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
def test_csv_written_by_the_csv_module_reads_back(folder, written, newline, quoting):
    # With "\n" as line terminator, csv's writer leaves a text's "\r" unquoted: a file no reader can take back.
    assume(quoting == csv.QUOTE_ALL or newline == "\r\n" or not any("\r" in text for text, _ in written))
    path = folder / "t.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator=newline, quoting=quoting)
        writer.writerow(["text", "label"])
        writer.writerows(written)
    assert _read_back(path) == _expected(written)


@FUZZ
@given(st.lists(st.tuples(texts, labels), min_size=1, max_size=8))
def test_tsv_written_by_the_csv_module_reads_back(folder, written):
    """Texts with tabs, line breaks or double quotes are quoted by the writer; the reader sees the quoting."""
    path = folder / "t.tsv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, delimiter="\t")  # quotes a text with "\r" too (the terminator is "\r\n")
        writer.writerow(["text", "label"])
        writer.writerows(written)
    assert _read_back(path) == _expected(written)


@FUZZ
@given(st.lists(st.tuples(texts.filter(lambda t: "\t" not in t and "\n" not in t and "\r" not in t
                                       and not (len(t.strip()) >= 2 and t.strip()[0] == t.strip()[-1] == '"')),
                          labels), min_size=1, max_size=8))
def test_plain_tsv_keeps_quotes_as_text(folder, written):
    """A TSV written without quoting (texts without tabs or line breaks): every character is text, quotes
    included (test_reliability.py: stray quotes stay). A whole text in double quotes is what a quoting writer
    writes, and is read as quoted: those are left out here."""
    path = folder / "t.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in written), encoding="utf-8")
    assert _read_back(path) == _expected(written)


@FUZZ
@given(st.lists(st.tuples(texts, labels), min_size=1, max_size=8), st.booleans())
def test_jsonl_written_by_json_reads_back(folder, written, ascii_only):
    """With ensure_ascii=False json writes U+0085, U+2028 and U+2029 as they are, inside strings."""
    path = folder / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}, ensure_ascii=ascii_only) + "\n" for t, y in written),
                    encoding="utf-8")
    assert _read_back(path) == _expected(written)


@FUZZ
@given(rows)
def test_parquet_written_by_pandas_reads_back(folder, written):
    path = folder / "t.parquet"
    pd.DataFrame(written, columns=["text", "label"]).to_parquet(path)
    assert _read_back(path) == _expected(written)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["", " ", "\t", "  \r", "\u200b", " \u00ad "]), labels), min_size=1,
                max_size=4), rows)
def test_blank_texts_are_refused_naming_their_rows(folder, blank, written):
    path = folder / "t.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, quoting=csv.QUOTE_ALL)
        writer.writerow(["text", "label"])
        writer.writerows(written + blank)
    with pytest.raises(StropError, match=rf"{len(blank)} empty or missing texts? in t.csv, rows {len(written) + 1}"):
        _read_back(path)


@FUZZ
@given(st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3), min_size=1, max_size=6),
       rows.map(lambda r: [y for _, y in r]))
def test_vector_tables_read_back_their_numbers(folder, matrix, ys):
    n = min(len(matrix), len(ys))
    frame = pd.DataFrame(matrix[:n], columns=["a", "b", "c"])
    frame["label"] = ys[:n]
    path = folder / "v.csv"
    frame.to_csv(path, index=False)
    with no_hang():
        examples = Classification.read(path, DataConfig(), "vector", "data.train")
    assert examples.feature_columns == ("a", "b", "c")
    assert np.array_equal(np.stack(examples.inputs), np.asarray(matrix[:n], dtype=np.float64))  # exactly as written
    assert examples.targets == [y.strip() for y in ys[:n]]


# Feature values as a file may hold them. Numbers beyond float32's range are left out: see
# test_a_feature_beyond_float32_is_refused.
FLOAT32_MAX = float(np.finfo(np.float32).max)
feature_values = (st.floats(-FLOAT32_MAX, FLOAT32_MAX).map(repr) | st.integers(-10**6, 10**6).map(str)
                  | st.sampled_from(["", " ", "nan", "inf", "-Infinity", "1e400", "0x10", "1,5", "one", "1_0", " 2 ",
                                     "True", "[1]", "1e-400"]))


@FUZZ
@given(st.lists(st.tuples(feature_values, feature_values, labels), min_size=1, max_size=6),
       st.sampled_from([".csv", ".tsv", ".jsonl"]), st.booleans())
def test_any_vector_table_loads_or_is_refused(folder, written, suffix, as_json_numbers):
    path = folder / f"v{suffix}"
    if suffix == ".jsonl":
        def value(text):
            try:
                number = float(text)
            except ValueError:
                return text
            return number if as_json_numbers and abs(number) <= FLOAT32_MAX else text
        path.write_text("".join(json.dumps({"a": value(a), "b": value(b), "label": y}) + "\n"
                                for a, b, y in written), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, delimiter="," if suffix == ".csv" else "\t")
            writer.writerow(["a", "b", "label"])
            writer.writerows(written)
    examples = loads_or_refuses(Classification.read, path, DataConfig(), "vector", "data.train")
    if examples is not None:
        assert all(v.dtype == np.float64 and v.shape == (2,) and np.isfinite(v).all() for v in examples.inputs)
        def number(text):  # what the file says, where strop read numbers (a CSV's True and False are 1 and 0)
            word = text.strip().lower()
            return TRUTH_WORDS[word] if word in TRUTH_WORDS else float(text)

        expected = [[number(a), number(b)] for a, b, _ in written]
        assert np.array_equal(np.stack(examples.inputs), np.asarray(expected, dtype=np.float64))


@FUZZ
@given(st.sampled_from([".csv", ".tsv", ".jsonl"]), st.booleans(), CSVISH)
def test_any_text_as_a_vector_table_loads_or_is_refused(folder, suffix, header, text):
    path = folder / f"v{suffix}"
    prefix = {".csv": "a,b,label\n", ".tsv": "a\tb\tlabel\n", ".jsonl": ""}[suffix]
    path.write_text(prefix * header + text, encoding="utf-8")
    examples = loads_or_refuses(Classification.read, path, DataConfig(), "vector", "data.train")
    if examples is not None:
        assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in examples.inputs)


# --- CoNLL ---------------------------------------------------------------------------------------------------------

tokens = st.text(min_size=1, max_size=8).filter(lambda t: not any(c.isspace() for c in t) and t != "-DOCSTART-")
tags = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "E-LOC", "S-ORG"])
sentences = st.lists(st.lists(st.tuples(tokens, tags), min_size=1, max_size=5), min_size=1, max_size=4)


@FUZZ
@given(st.binary(max_size=120) | CSVISH.map(str.encode))
def test_any_conll_file_loads_or_is_refused(folder, data):
    path = folder / "t.conll"
    path.write_bytes(data)
    parsed = loads_or_refuses(read_conll, path, -1, "data.train")
    if parsed is not None:
        words, tag_lists = parsed
        assert len(words) == len(tag_lists) > 0
        assert all(len(w) == len(t) > 0 for w, t in zip(words, tag_lists))


@FUZZ
@given(sentences, st.sampled_from(["\n", "\r\n"]), st.sampled_from([" ", "\t", "  "]), st.booleans())
def test_conll_written_one_token_a_line_reads_back(folder, written, newline, separator, docstart):
    path = folder / "t.conll"
    blocks = [newline.join(f"{token}{separator}{tag}" for token, tag in sentence) for sentence in written]
    path.write_text(("-DOCSTART- O" + newline * 2) * docstart + (newline * 2).join(blocks) + newline,
                    encoding="utf-8")
    with no_hang():
        words, tag_lists = read_conll(path, -1, "data.train")
    assert words == [[token for token, _ in s] for s in written]
    assert tag_lists == [[tag for _, tag in s] for s in written]


# --- defects the fuzzing found, kept as minimal examples (fixed) ---------------------------------------------


def test_yaml_list_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("[a]: 1\n")
    with pytest.raises(StropError):
        load_config(path)


def test_damaged_gzip_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff")
    with pytest.raises(StropError, match="cannot be decompressed"):
        read_table(path, "data.train")


def test_jsonl_with_a_line_separator_inside_a_string_reads_back(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a\u2028b", "label": "x"}\n', encoding="utf-8")
    assert _read_back(path) == (["a\u2028b"], ["x"])


def test_tsv_quoted_for_a_double_quote_reads_back(tmp_path):
    path = tmp_path / "t.tsv"
    pd.DataFrame({"text": ['say "hi"'], "label": ["x"]}).to_csv(path, sep="\t", index=False)
    assert _read_back(path) == (['say "hi"'], ["x"])


def test_parquet_with_bogus_pandas_metadata_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a"], "label": ["x"]}).replace_schema_metadata({b"pandas": b"{}"}), path)
    with pytest.raises(StropError):
        read_table(path, "data.train")


def test_a_feature_beyond_float32_is_refused(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("a,label\n1e39,x\n2,y\n")
    with pytest.raises(StropError):
        Classification.read(path, DataConfig(), "vector", "data.train")


def test_the_target_column_named_as_a_feature_is_refused(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("a,b,label\n1,2,x\n3,4,y\n")
    with pytest.raises(StropError, match="target column.*label.*leave them out"):
        Classification.read(path, DataConfig(feature_columns=("a", "label")), "vector", "data.train")
    assert Classification.read(path, DataConfig(feature_columns=("a",)), "vector", "data.train").feature_columns == ("a",)


def test_deeply_nested_json_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "x"}\n')
    with pytest.raises(StropError):
        read_table(path, "data.train")

