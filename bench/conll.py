"""Token-classification data for the benchmark: CoNLL files, word-level tag alignment, entity scores.

Only the standard library at import time (seqeval is imported where it scores): the workers import this
module, and a worker's wall clock should not pay for what it does not use.

A CoNLL file has one token a line, its columns separated by spaces, the tag in the last column (CoNLL-2003:
`token POS chunk tag`), blank lines between sentences and `-DOCSTART-` lines between documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOCSTART = "-DOCSTART-"


@dataclass(frozen=True)
class Sentence:
    lines: tuple[str, ...]  # the file's lines of the sentence, as they were (written back unchanged)

    @property
    def words(self) -> list[str]:
        return [line.split()[0] for line in self.lines]

    @property
    def tags(self) -> list[str]:
        return [line.split()[-1] for line in self.lines]


def read_conll(path: str | Path) -> list[Sentence]:
    """The sentences of a CoNLL file; `-DOCSTART-` lines are document breaks, not sentences.

    Raises:
        ValueError: a line with fewer than two columns (no tag), naming the file and line.
    """
    sentences, current = [], []
    with open(path, encoding="utf-8") as file:
        for number, raw in enumerate(file, 1):
            line = raw.strip()
            fields = line.split()
            if not fields or fields[0] == DOCSTART:
                if current:
                    sentences.append(Sentence(tuple(current)))
                current = []
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}, line {number}: {line!r} has no tag column (expected `token ... tag`)")
            current.append(line)
    if current:
        sentences.append(Sentence(tuple(current)))
    return sentences


def write_conll(path: str | Path, sentences: list[Sentence]) -> None:
    """The sentences as a CoNLL file (blank line after each), their lines unchanged."""
    Path(path).write_text("".join("\n".join(s.lines) + "\n\n" for s in sentences), encoding="utf-8")


def entity_types(tags: list[str]) -> list[str]:
    """The entity types of IOB tags, sorted: {'B-ORG', 'I-ORG', 'I-PER', 'O'} -> ['ORG', 'PER']."""
    return sorted({tag.split("-", 1)[1] for tag in tags if tag != "O" and "-" in tag})


def first_subword_labels(word_ids: list[int | None], tags: list[str], label2id: dict[str, int]) -> list[int]:
    """The Trainer's token labels: each word's tag on its first subword, -100 (ignored by the loss) on the
    other subwords and the special tokens, as in transformers' run_ner.py (label_all_tokens=False). A tag
    absent from label2id (a scoring tag that training lacks) is -100 too: no model can predict it."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(-100 if word is None or word == previous else label2id.get(tags[word], -100))
        previous = word
    return labels


def word_tags(word_ids: list[int | None], token_predictions, n_words: int, id2label: dict[int, str]) -> list[str]:
    """One predicted tag per word: the prediction at the word's first subword; a word that has no subword
    (cut off by truncation) gets 'O', so every word of the scoring file is scored."""
    tags, previous = ["O"] * n_words, None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            tags[word] = id2label[int(token_predictions[position])]
        previous = word
    return tags


def entity_scores(true: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (micro over entity types) with seqeval's default
    (conlleval-compatible) mode, which reads IOB1 and IOB2 alike: an entity is the run of tags of one type
    that starts at a B- or at an I- after another type or O."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    if [len(t) for t in true] != [len(p) for p in predicted]:
        raise ValueError("predicted tags must be one per word of every scored sentence")
    return {"precision": float(precision_score(true, predicted, zero_division=0)),
            "recall": float(recall_score(true, predicted, zero_division=0)),
            "f1": float(f1_score(true, predicted, zero_division=0))}
