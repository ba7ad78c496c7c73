"""Text augmentation for training (`data.augment`): random deletion and random swap of words (Wei and Zou
2019, "EDA: Easy Data Augmentation Techniques"), drawn afresh for every batch.

Only the training texts are augmented, only while the body trains, and only where what trains reads the text:
with a frozen body (or frozen bottom layers) the outputs are computed once and cached, so augmented texts
would never reach what trains, and such a run is refused. Synonym replacement and back-translation need a
thesaurus or a translation model, which strop does not bundle; they are not offered.

The words are the text's whitespace-separated pieces. The draws come from torch's generator, which strop
seeds and checkpoints, so a resumed run draws what the uninterrupted run would.
"""

from __future__ import annotations

import random

import torch

from strop.errors import StropError

TEXT_AUGMENTS = ("deletion", "swap", "deletion_swap")
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


def augment_text(text: str, mode: str, rate: float, rng: random.Random) -> str:
    words = text.split()
    if mode in ("deletion", "deletion_swap"):
        words = delete_words(words, rate, rng)
    if mode in ("swap", "deletion_swap"):
        words = swap_words(words, rate, rng)
    return " ".join(words)


class AugmentingCollate:
    """The run's collate, with each training feature re-encoded from an augmented copy of its text while the
    body trains (features carrying SOURCE); SOURCE never reaches the model."""

    def __init__(self, collate, body, mode: str, rate: float):
        self.collate, self.body, self.mode, self.rate = collate, body, mode, rate

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if self.body.training and features and SOURCE in features[0]:
            rng = random.Random(int(torch.randint(0, 2**31 - 1, ())))
            sources = [self._augmented(f[SOURCE], rng) for f in features]
            encoded = self.body.encode(sources)
            features = [{**{k: v for k, v in f.items() if k != SOURCE}, **e} for f, e in zip(features, encoded)]
        else:
            features = [{k: v for k, v in f.items() if k != SOURCE} for f in features]
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
    if mode in ("auto", "none"):
        return features, collate, None
    if mode not in TEXT_AUGMENTS:
        raise StropError(f"data.augment={mode} is for images; for texts choose {', '.join(TEXT_AUGMENTS)} or none")
    if task.level != "sequence":
        raise StropError(f"data.augment={mode}: {task.name} labels each word, and deleting or swapping words would "
                         "move them off their labels; use data.augment=none")
    if cached:
        from strop.methods.base import uncached_hint

        raise StropError(f"data.augment={mode} with method.name={cfg.method.name}"
                         + (f", method.freeze_layers={cfg.method.freeze_layers}" if cfg.method.freeze_layers else "")
                         + ": the frozen layers' outputs are computed once and cached, so augmented texts would never "
                         "reach what trains. Use data.augment=none, or a method that trains the body (full, "
                         "gradual, lora)" + uncached_hint(cfg))
    marked = [{**f, SOURCE: text} for f, text in zip(features, inputs)]
    note = (f"augmentation: {mode.replace('_', ' and ')} of words at rate {cfg.data.augment_rate:g}, drawn afresh "
            "for every training batch")
    return marked, AugmentingCollate(collate, body, mode, cfg.data.augment_rate), note
