"""Using a trained run: load its model folder and predict labels or class probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from strop.errors import StropError
from strop.runs import RunDir
from strop.tasks.text_classification import TextClassification, collate


class Predictor:
    """A trained text classifier. Build it with `strop.load(run_dir)`."""

    def __init__(self, model, tokenizer, task: TextClassification, info: dict, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.task = task
        self.info = info
        self.batch_size = batch_size

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    @torch.no_grad()
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(len(texts), num_classes) class probabilities, columns in the order of `.labels`."""
        if isinstance(texts, str):
            texts = [texts]
        features = self.task.encode(self.tokenizer, list(texts))
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))  # least padding
        out = np.zeros((len(features), len(self.task.labels)), dtype=np.float32)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            batch = collate([features[i] for i in index], self.tokenizer.pad_token_id)
            logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[index] = self.task.probabilities(logits).cpu().numpy()
        return out

    def predict(self, texts: list[str]) -> list[str]:
        """The most probable label for each text."""
        probabilities = self.predict_proba(texts)
        return [self.task.labels[i] for i in probabilities.argmax(axis=1)]


def load(run_dir: str | Path, device: str | None = None) -> Predictor:
    """Loads the model of a completed run (or a run's model/ folder itself).

    Raises:
        StropError: the folder holds no strop model.
    """
    run_dir = Path(run_dir)
    model_dir = run_dir if (run_dir / "strop.json").is_file() else RunDir(run_dir).model
    if not (model_dir / "strop.json").is_file():
        raise StropError(f"{run_dir} holds no trained model (expected {model_dir}/strop.json); "
                         "is it a completed run of strop fit?")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from strop.backbones.text import quiet_transformers

    info = json.loads((model_dir / "strop.json").read_text(encoding="utf-8"))
    task = TextClassification(labels=tuple(info["labels"]), head=info["head"], max_length=info["max_length"])
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model.to(device), AutoTokenizer.from_pretrained(model_dir), task, info)
