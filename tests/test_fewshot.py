"""method.name=fewshot: balanced, linear pair generation; the contrastive stage and the head stage in the
loop, with checkpoints, resume, and a saved model that strop.load and strop predict use."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import strop
from conftest import interrupt_after_checkpoint, write_csv
from strop.errors import StropError
from strop.methods.fewshot import PairCollate, PairEncoder, PairFeatures, contrastive_pairs, split_evenly


def _class_of(labels, rows):
    return np.asarray(labels)[rows]


@pytest.mark.parametrize("sizes", [[8, 8, 8], [30, 5, 2, 1], [2, 2], [100, 3]])
def test_pairs_have_the_budget_half_positive_and_balanced_across_classes(sizes):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    budget = 40 * len(labels)
    pairs = contrastive_pairs(labels, budget, seed=0)
    assert pairs.shape == (budget, 3)
    first, second, same = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    assert ((_class_of(labels, first) == _class_of(labels, second)) == (same == 1)).all()
    assert (first[same == 1] != second[same == 1]).all()  # a positive pair is two different examples
    assert same.sum() == budget // 2
    pairable = [c for c, n in enumerate(sizes) if n >= 2]
    positives = Counter(_class_of(labels, first[same == 1]).tolist())
    assert sorted(positives) == pairable
    assert max(positives.values()) - min(positives.values()) <= 1  # the large class does not take the budget
    anchors = Counter(_class_of(labels, first[same == 0]).tolist())
    assert len(anchors) == len(sizes) and max(anchors.values()) - min(anchors.values()) <= 1
    partners = Counter(_class_of(labels, second[same == 0]).tolist())
    expected = (budget - budget // 2) / len(sizes)  # each class is a partner about as often as an anchor
    assert all(abs(partners[c] - expected) < 0.2 * expected for c in range(len(sizes)))


def test_pairs_scale_linearly_and_are_reproducible():
    labels = np.arange(20_000) % 7  # 2e8 pairs exist; the budget draws 2e5 without enumerating them
    pairs = contrastive_pairs(labels, 10 * len(labels), seed=3)
    assert len(pairs) == 200_000 and pairs.nbytes == 200_000 * 3 * 8
    assert np.array_equal(pairs, contrastive_pairs(labels, 10 * len(labels), seed=3))
    assert not np.array_equal(pairs, contrastive_pairs(labels, 10 * len(labels), seed=4))


def test_pairs_without_a_class_of_two_are_all_negative_and_one_class_is_refused():
    assert contrastive_pairs([0, 1, 2], 30, seed=0)[:, 2].sum() == 0
    with pytest.raises(StropError, match="two classes"):
        contrastive_pairs([1, 1, 1], 10, seed=0)


def test_split_evenly():
    assert split_evenly(10, 3) == [4, 3, 3] and sum(split_evenly(7, 7)) == 7 and split_evenly(0, 2) == [0, 0]


def test_a_batch_encodes_each_distinct_example_once_and_gives_cosines(tiny_model_dir):
    from strop.backbones.text import TextBackbone
    from strop.model import with_new_head
    from strop.tasks.base import pad_collate
    from strop.tasks.classification import Classification

    body, _ = TextBackbone.from_pretrained(str(tiny_model_dir), "mean", 32)
    model = with_new_head(body, Classification(("a", "b")))
    examples = body.encode(["one text", "another text here", "a third"])
    collate = PairCollate(examples, lambda f: pad_collate(f, body.pad_values))
    batch = collate([PairFeatures(np.array([[0, 1, 1], [1, 0, 0], [2, 2, 1]]))[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 3 and batch["labels"].tolist() == [1.0, 0.0, 1.0]
    model.eval()
    cos = PairEncoder(model)(**batch)
    assert cos.shape == (3,) and torch.allclose(cos[0], cos[1]) and torch.allclose(cos[2], torch.tensor(1.0))


def _fewshot_data(tmp_path):
    """Three classes, 6 examples each: a class's texts share its words."""
    words = {"sport": ["goal", "match", "team", "score"], "food": ["bread", "soup", "cook", "taste"],
             "money": ["bank", "price", "loan", "cash"]}
    rng = np.random.default_rng(0)

    def rows(n):
        return [(" ".join(rng.choice(w, 3).tolist() + ["the", "news"]), label) for label, w in words.items()
                for _ in range(n)]

    return write_csv(tmp_path / "train.csv", rows(6)), write_csv(tmp_path / "dev.csv", rows(4))


def test_fit_then_load_and_predict(tiny_overrides, tiny_model_dir, tmp_path):
    train, dev = _fewshot_data(tmp_path)
    # Mean pooling: the first token of a random tiny BERT hardly depends on the text.
    run = strop.fit(None, tiny_overrides + [f"data.train={train}", f"data.validation={dev}", "method.name=fewshot",
                                            "method.pairs_per_example=8", "method.pair_lr=1e-3", "model.pooling=mean"])
    stage = json.loads((run / "contrastive" / "summary.json").read_text())
    assert stage["pairs"] == 8 * 18 and stage["positive_pairs"] == 72 and stage["steps"] == 18
    assert len((run / "contrastive" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (run / "contrastive" / "checkpoints").exists()  # superseded by the saved body
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["accuracy"] > 0.6  # chance is 1/3
    # The saved body is the tuned one, the same as the resume copy, and unlike the pretrained one.
    saved = load_file(run / "model" / "model.safetensors")
    tuned = load_file(run / "checkpoints" / "contrastive_body" / "model.safetensors")
    pretrained = load_file(tiny_model_dir / "model.safetensors")
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(saved[key], tuned["body.model.encoder.layer.0.attention.self.query.weight"])
    assert not torch.equal(saved[key], pretrained["encoder.layer.0.attention.self.query.weight"])
    predictor = strop.load(run)
    texts = ["goal team match the news", "bread soup the news", "bank loan cash the news"]
    assert len(predictor.predict(texts)) == 3
    out = subprocess.run([sys.executable, "-m", "strop", "predict", str(run), "--text", texts[0]],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["label"] == predictor.predict(texts[:1])[0]


def test_resume_after_the_contrastive_stage_and_within_it(tiny_overrides, tmp_path, monkeypatch):
    train, dev = _fewshot_data(tmp_path)
    common = [o for o in tiny_overrides if not o.startswith("output_dir=")] + [
        f"data.train={train}", f"data.validation={dev}", "method.name=fewshot", "method.pairs_per_example=8",
        "method.pair_lr=1e-3", "method.pair_epochs=2", "train.epochs=2", "model.pooling=mean"]
    whole = strop.fit(None, common + [f"output_dir={tmp_path / 'whole'}"])
    # Interrupted after the contrastive stage's first epoch, then after the head stage's first epoch.
    for checkpoints in (1, 3):
        out = tmp_path / f"resumed{checkpoints}"
        interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, common + [f"output_dir={out}"]), checkpoints)
        resumed = strop.fit(None, common + [f"output_dir={out}", "train.resume=true"])
        a, b = load_file(whole / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
        assert len((resumed / "contrastive" / "metrics.jsonl").read_text().splitlines()) == 2


def test_fewshot_refuses_a_task_it_cannot_pair(tiny_overrides, tmp_path):
    rows = [(f"text number {i}", str(i * 0.5)) for i in range(20)]
    train = write_csv(tmp_path / "reg.csv", rows)
    overrides = [o for o in tiny_overrides if not o.startswith("data.")] + [
        f"data.train={train}", "task.name=regression", "method.name=fewshot"]
    with pytest.raises(StropError, match="fewshot is for classifying texts"):
        strop.fit(None, overrides)
    assert not (tmp_path / "run").exists()
