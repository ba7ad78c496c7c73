"""strop pretrain: masked-language-model training on domain text writes a model that fit starts from."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

import strop
from conftest import make_texts
from strop.pretrain import MaskingCollate, mask_tokens


def test_masking_follows_bert_and_never_touches_special_tokens():
    ids = torch.randint(1000, 2000, (64, 50))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    masked, labels = mask_tokens(ids, special, mask_id=103, vocab_size=30522, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and (labels[chosen] == ids[chosen]).all()
    share = chosen[:, 1:].float().mean().item()
    assert 0.12 < share < 0.18  # 15% of the tokens
    assert 0.7 < (masked[chosen] == 103).float().mean().item() < 0.9  # 80% of them [MASK]
    assert (masked[~chosen] == ids[~chosen]).all()


def test_pretrain_writes_a_model_that_fit_starts_from(tiny_model_dir, tiny_overrides, tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(t for t, _ in make_texts(60, seed=3)) + "\n\n", encoding="utf-8")
    out = tmp_path / "pretrained"
    done = subprocess.run([sys.executable, "-m", "strop", "pretrain", f"model.name={tiny_model_dir}", "train.epochs=2",
                           "train.batch_size=8", "model.max_length=32", "optim.lr=1e-3", "train.mixed_precision=no",
                           "--data", str(text), "--output", str(out), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[1]["val_loss"] < history[0]["val_loss"] + 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_texts"] + summary["validation_texts"] == 60
    tuned = load_file(out / "model" / "model.safetensors")
    before = load_file(tiny_model_dir / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned[f"bert.{key}"], before[key])  # the encoder trained
    run = strop.fit(None, [o for o in tiny_overrides if not o.startswith("model.name")]
                    + [f"model.name={out / 'model'}", "train.epochs=1"])
    assert json.loads((run / "model" / "strop.json").read_text())["base_model"] == str(out / "model")


def test_validation_masks_are_the_same_every_epoch(tiny_model_dir):
    from transformers import AutoTokenizer

    from strop.tasks.base import pad_collate

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    collate = MaskingCollate(tokenizer, lambda f: pad_collate(f, {"input_ids": 0}))
    features = [{**{k: v for k, v in tokenizer(t).items()}, "seed": i} for i, t in
                enumerate(["a fairly long sentence about films and plots", "another one here"])]
    first, second = collate(features), collate(features)
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
