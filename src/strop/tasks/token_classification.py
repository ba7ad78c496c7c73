"""Token classification (named entities, chunks): a tag per word, in the IOB1, IOB2 or BIOES scheme.

Words are split into subwords by the tokenizer; the first subword of each word carries the word's tag and
the others are ignored by the loss (the recipe of Devlin et al. 2019). Scores are entity-level precision,
recall and F1 with seqeval's semantics (an entity counts only when its type and both ends are right), per
entity type too. `predict` returns entity spans with character offsets in the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from strop.backbones.text import say_cut
from strop.data.conll import detect_scheme, read_conll, read_tagged_jsonl
from strop.data.tables import say_note
from strop.errors import StropError
from strop.evaluate.metrics import entity_metrics
from strop.tasks.base import TASKS, Examples, Task, compact

IGNORE = -100  # the label of subwords after a word's first, of special tokens and of padding
WORD = re.compile(r"\w+(?:[-'.&]\w+)*|[^\w\s]")  # raw text -> words: 1996-08-22, U.S, don't stay whole


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """A raw text's words and their (start, end) character offsets."""
    matches = list(WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def _words_and_offsets(x) -> tuple[list[str], list[tuple[int, int]], str]:
    """An input (a raw text, or words already split) as words, their offsets, and the text they index."""
    if isinstance(x, str):
        words, offsets = split_words(x)
        return words, offsets, x
    offsets, start = [], 0
    for word in x:
        offsets.append((start, start + len(word)))
        start += len(word) + 1
    return list(x), offsets, " ".join(x)


def _cut_words(backbone, words: list[str], word_ids: list[int | None]) -> int:
    """How many words of a sentence that filled model.max_length were cut off: those after the last word read
    that come to a token (a trailing soft hyphen comes to none, and was not cut)."""
    last_read = max((w for w in word_ids if w is not None), default=-1)
    rest = words[last_read + 1:]
    if not rest:
        return 0
    pieces = backbone.tokenizer(rest, is_split_into_words=False, add_special_tokens=False)["input_ids"]
    return sum(bool(p) for p in pieces)


@TASKS.register("token_classification")
@dataclass(frozen=True)
class TokenClassification(Task):
    tags: tuple[str, ...]
    scheme: str

    name = "token_classification"
    level = "token"
    input_kinds = ("text",)
    metric_names = ("f1", "precision", "recall", "accuracy", "loss")
    metric_ranges = {**dict.fromkeys(("f1", "precision", "recall", "accuracy"), (0.0, 1.0)), "loss": (0.0, np.inf)}
    lead_metric = "f1"
    pad_values = {"labels": IGNORE, "word_tags": IGNORE, "first_of_word": -1}

    @classmethod
    def read(cls, path: str | Path, data_cfg, input_kind: str, what: str, with_targets: bool = True) -> Examples:
        """CoNLL (any extension but .jsonl) or JSONL with lists of tokens and tags; in JSONL the keys are
        data.text_column and data.label_column where set, else `tokens` and `tags`."""
        if Path(path).suffix.lower() == ".jsonl":
            words, tags = read_tagged_jsonl(path, *jsonl_keys(data_cfg), what, with_targets)
        else:
            words, tags = read_conll(path, data_cfg.tag_column, what, with_targets)
        return Examples(words, tags, str(path))

    @classmethod
    def from_data(cls, train: Examples, validation: Examples | None, cfg) -> TokenClassification:
        detected = detect_scheme(train.targets, "data.train", train.source)
        scheme = detected if cfg.data.tag_scheme == "auto" else cfg.data.tag_scheme
        names = sorted({t for sentence in train.targets for t in sentence}, key=lambda t: (t != "O", t[2:], t))
        if len(names) < 2:
            raise StropError(f"data.train: every token in {Path(train.source).name} has the tag '{names[0]}'; "
                             "there are no entities to learn")
        if validation is not None:
            detect_scheme(validation.targets, "data.validation", validation.source)
            unseen = sorted({t for sentence in validation.targets for t in sentence} - set(names))
            if unseen:
                raise StropError(f"data.validation: tags {', '.join(unseen)} do not occur in the training data; "
                                 "add training sentences with them or remove those sentences")
        return cls(tuple(names), scheme)

    def info(self) -> dict[str, Any]:
        return {"labels": list(self.tags), "scheme": self.scheme}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> TokenClassification:
        return cls(tuple(info["labels"]), info["scheme"])

    def output_space(self) -> tuple:
        return self.tags

    @property
    def num_outputs(self) -> int:
        return len(self.tags)

    def plain_head(self) -> str | None:
        return "AutoModelForTokenClassification"

    def encode(self, backbone, examples: Examples) -> list[dict]:
        words = [_words_and_offsets(x)[0] for x in examples.inputs]
        ids = None if examples.targets is None else self.encode_targets(examples.targets)
        features, cut_sentences, cut_words = [], 0, 0
        for i, (feature, word_ids) in enumerate(backbone.encode_words(words)):
            # each token's word where the token is that word's first, else -1: a word that comes to no token
            # at all (a soft hyphen, a zero-width space) is absent here, and the words after it keep their places
            first_of_word, previous = [], None
            for word in word_ids:
                first_of_word.append(word if word is not None and word != previous else -1)
                previous = word
            feature["first_of_word"] = first_of_word
            feature["num_words"] = len(words[i])
            if ids is not None:
                feature["labels"] = [ids[i][w] if w >= 0 else IGNORE for w in first_of_word]
                feature["word_tags"] = ids[i]  # every word's tag, those cut off by model.max_length too
            if len(feature["input_ids"]) >= backbone.max_length:
                cut = _cut_words(backbone, words[i], word_ids)
                cut_sentences, cut_words = cut_sentences + bool(cut), cut_words + cut
            features.append(feature)
        if cut_sentences:
            say_cut(examples.source, backbone.max_length, f"{cut_sentences} of {len(words)} sentences",
                    f"their last {cut_words} words in all are not read (tagged O)")
        return features

    def encode_targets(self, targets: list[list[str]]) -> list[list[int]]:
        index = {tag: i for i, tag in enumerate(self.tags)}
        return [[index[t] for t in sentence] for sentence in targets]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # logits: (batch, seq, tags); labels: (batch, seq) with IGNORE where no word starts
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

    def outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        """Per example, (words, tags) probabilities, each word's from its first token; a word with no token
        (cut off by model.max_length, or one the tokenizer drops) gets tag O."""
        probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        first_of_word = batch["first_of_word"].cpu().numpy()
        no_token = np.zeros(len(self.tags), dtype=probabilities.dtype)
        no_token[self.tags.index("O") if "O" in self.tags else 0] = 1.0
        out = []
        for row, word_of, n in zip(probabilities, first_of_word, batch["num_words"].tolist()):
            words = np.tile(no_token, (n, 1))
            tokens = np.flatnonzero(word_of[:row.shape[0]] >= 0)
            words[word_of[tokens]] = row[tokens]
            out.append(words)
        return out

    def targets(self, batch: dict) -> list[np.ndarray]:
        return [row[row != IGNORE] for row in batch["word_tags"].cpu().numpy()]

    def scored_targets(self, targets: list[list[str]]) -> list[np.ndarray]:
        return [np.asarray(s) for s in self.encode_targets(targets)]

    def metrics(self, outputs: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, Any]:
        return entity_metrics(outputs, targets, list(self.tags), self.scheme)

    def predict_tags(self, outputs: list[np.ndarray]) -> list[list[str]]:
        return [[self.tags[i] for i in p.argmax(axis=1)] for p in outputs]

    def predictions(self, inputs: list, outputs: list[np.ndarray]) -> list[list[dict]]:
        return [r["entities"] for r in self.records(inputs, outputs)]

    def records(self, inputs: list, outputs: list[np.ndarray]) -> list[dict[str, Any]]:
        # seqeval's default mode reads entities of IOB1, IOB2 and BIOES tags alike
        from seqeval.metrics.sequence_labeling import get_entities

        rows = []
        for x, probabilities, tags in zip(inputs, outputs, self.predict_tags(outputs)):
            _, offsets, text = _words_and_offsets(x)
            entities = []
            for kind, first, last in get_entities(tags):
                start, end = offsets[first][0], offsets[last][1]
                score = float(probabilities[np.arange(first, last + 1), probabilities[first:last + 1].argmax(1)].mean())
                entities.append({"type": kind, "start": start, "end": end, "text": text[start:end],
                                 "score": compact(score)})
            rows.append({"text": text, "entities": entities})
        return rows


def jsonl_keys(data_cfg) -> tuple[str, str]:
    """The keys of a JSONL file's lists of tokens and of tags: data.text_column and data.label_column where set
    (other than their defaults, text and label), else `tokens` and `tags`."""
    return (data_cfg.text_column if data_cfg.text_column != "text" else "tokens",
            data_cfg.label_column if data_cfg.label_column != "label" else "tags")
