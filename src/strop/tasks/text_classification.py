"""Text classification: one label per text, a softmax over the classes or a single sigmoid logit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from strop.evaluate.metrics import classification_metrics


@dataclass(frozen=True)
class TextClassification:
    """Turns texts and labels into model inputs and turns logits back into probabilities and labels.

    labels: class names in label-map order (index = class id).
    head: "softmax" (one logit per class) or "sigmoid" (one logit for labels[1], binary only).
    """

    labels: tuple[str, ...]
    head: str = "softmax"
    max_length: int = 128

    @property
    def num_logits(self) -> int:
        return 1 if self.head == "sigmoid" else len(self.labels)

    def encode(self, tokenizer, texts: list[str], labels: list[str] | None = None) -> list[dict]:
        """Tokenizes once, unpadded; padding happens per batch in `collate` (dynamic padding)."""
        encoded = tokenizer(texts, truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        index = {name: i for i, name in enumerate(self.labels)}
        features = []
        for i in range(len(texts)):
            feature = {k: encoded[k][i] for k in keys}
            if labels is not None:
                feature["labels"] = index[labels[i]]
            features.append(feature)
        return features

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # logits: (batch, num_logits); targets: (batch,) class ids
        if self.head == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), targets.float())
        return F.cross_entropy(logits.float(), targets)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(batch, num_logits) logits -> (batch, num_classes) probabilities."""
        if self.head == "sigmoid":
            positive = torch.sigmoid(logits[:, 0].float())
            return torch.stack([1 - positive, positive], dim=1)
        return torch.softmax(logits.float(), dim=-1)

    def metrics(self, probabilities: np.ndarray, targets: np.ndarray) -> dict:
        return classification_metrics(probabilities, targets, list(self.labels))


def collate(features: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pads a batch to its longest sequence. features: dicts of token lists (+ an int 'labels')."""
    longest = max(len(f["input_ids"]) for f in features)
    batch = {}
    for key in features[0]:
        if key == "labels":
            batch[key] = torch.tensor([f[key] for f in features])
            continue
        pad = pad_token_id if key == "input_ids" else 0
        rows = [f[key] + [pad] * (longest - len(f[key])) for f in features]
        batch[key] = torch.tensor(rows)  # (batch, longest)
    return batch
