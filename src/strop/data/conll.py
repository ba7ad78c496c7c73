"""Token-labelled sentences: CoNLL files (one token per line, columns separated by whitespace, the tag in a
configurable column, blank lines between sentences, -DOCSTART- lines between documents) and JSONL files
(one sentence per line with a list of tokens and a list of tags)."""

from __future__ import annotations

import json
from pathlib import Path

from strop.data.tables import check_readable, read_text, split_lines
from strop.errors import StropError


def read_conll(path: str | Path, tag_column: int, what: str, with_tags: bool = True
               ) -> tuple[list[list[str]], list[list[str]] | None]:
    """(sentences of tokens, sentences of tags). The token is the first column; the tag is column
    `tag_column` (0-based, negative counts from the end: -1 is the last). A CoNLL-U file (.conllu) is read as
    that format says: tab-separated, the word its FORM (second column), `#` comment lines and the lines of
    multiword tokens (1-2) and empty nodes (1.1) left out.

    Raises:
        StropError: not UTF-8, no sentence, or a line whose column count differs from the file's first line
            (the message names the line number and both counts).
    """
    path = check_readable(Path(path), what)
    lines = split_lines(read_text(path, what))  # compressed or not; a byte-order mark is no part of the first token
    universal = path.suffix.lower() == ".conllu"
    sentences, tags, tokens, current, width = [], [], [], [], None
    for number, line in enumerate(lines, start=1):
        if universal:
            fields = line.split("\t") if line.strip() else []
            if line.startswith("#") or (fields and not fields[0].isdigit()):  # a comment, a range 1-2, a node 1.1
                continue
        else:  # columns apart at spaces and tabs only: a token may hold a no-break space (10\u00a0000)
            fields = [field for field in line.replace("\t", " ").split(" ") if field]
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                sentences.append(tokens)
                tags.append(current)
            tokens, current = [], []
            continue
        if width is None:
            width = len(fields)
            if with_tags and (width < 2 or not -width <= tag_column < width):
                raise StropError(f"{what}: line {number} of {path.name} has {width} column(s), so there is no tag "
                                 f"column {tag_column}: a CoNLL file needs the token first and a tag column "
                                 "(set data.tag_column, e.g. -1 for the last)")
        if len(fields) != width:
            raise StropError(f"{what}: line {number} of {path.name} has {len(fields)} columns where the file's first "
                             f"line has {width} ({line.strip()!r}): every token line needs the same columns, "
                             "separated by spaces or tabs, with blank lines between sentences")
        tokens.append(fields[1] if universal else fields[0])
        current.append(fields[tag_column] if with_tags else "O")
    if tokens:
        sentences.append(tokens)
        tags.append(current)
    if not sentences:
        raise StropError(f"{what}: {path} holds no sentence (token lines separated by blank lines)")
    return sentences, tags if with_tags else None


def read_tagged_jsonl(path: str | Path, tokens_key: str, tags_key: str, what: str, with_tags: bool = True
                      ) -> tuple[list[list[str]], list[list[str]] | None]:
    """(sentences of tokens, sentences of tags) from JSON lines like {"tokens": [...], "tags": [...]}.

    Raises:
        StropError: a line is not JSON, lacks a key, holds no list of strings, or its tags do not match its
            tokens one to one (the message names the line number).
    """
    path = check_readable(Path(path), what)
    sentences, tags = [], []
    # lines end at line breaks alone: JSON writers leave U+2028 unescaped inside strings
    for number, line in enumerate(split_lines(read_text(path, what)), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise StropError(f"{what}: line {number} of {path.name} is not valid JSON ({error.msg})") from None
        keys = (tokens_key, tags_key) if with_tags else (tokens_key,)
        for key in keys:
            value = record.get(key) if isinstance(record, dict) else None
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                from strop.data.inputs import column_fix

                fixes = [f"tokens: {column_fix(what, 'text_column')}"] + \
                    [f"tags: {column_fix(what, 'label_column')}"] * with_tags
                raise StropError(f"{what}: line {number} of {path.name} needs '{key}' as a non-empty list of "
                                 f"non-blank strings; got {value!r} ({'; '.join(fixes)})")
        if with_tags and len(record[tokens_key]) != len(record[tags_key]):
            raise StropError(f"{what}: line {number} of {path.name} has {len(record[tokens_key])} tokens but "
                             f"{len(record[tags_key])} tags: give one tag per token")
        sentences.append(record[tokens_key])
        tags.append(record[tags_key] if with_tags else None)
    if not sentences:
        raise StropError(f"{what}: {path} holds no sentence")
    return sentences, tags if with_tags else None


def detect_scheme(tags: list[list[str]], what: str, source: str) -> str:
    """The tagging scheme of tag sequences: BIOES where E-/S- tags occur; IOB1 where an entity can open with
    I- (after O, at a sentence start, or after another type); else IOB2.

    Raises:
        StropError: a tag is neither O nor a B-/I-/E-/S- prefix with a type (the message names it).
    """
    bioes, iob1 = False, False
    for sentence in tags:
        previous = "O"
        for tag in sentence:
            if tag != "O":
                prefix, _, kind = tag.partition("-")
                if prefix not in ("B", "I", "E", "S") or not kind:
                    raise StropError(
                        f"{what}: tag {tag!r} in {Path(source).name} is not in a known tagging scheme (IOB1, IOB2 or "
                        "BIOES: 'O', or B-, I-, E- or S- followed by the entity type, e.g. B-PER); check "
                        "data.tag_column names the tag column")
                bioes |= prefix in ("E", "S")
                iob1 |= prefix == "I" and (previous == "O" or previous.partition("-")[2] != kind)
            previous = tag
    return "bioes" if bioes else "iob1" if iob1 else "iob2"
