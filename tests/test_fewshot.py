"""method.name=fewshot: balanced, linear pair generation; the contrastive stage and the head stage in the
loop, with checkpoints, resume, and a saved model that strop.load and strop predict use."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from safetensors.torch import load_file

import strop
from conftest import interrupt_after_checkpoint, write_csv
from strop.errors import StropError
from strop.methods.fewshot import (GroupCollate, GroupFeatures, PairEncoder, PairTask, cosent, groups_for,
                                   different, distinct_pairs, pair_groups, pairs_in, pairs_of_group,
                                   split_evenly)


@pytest.mark.parametrize("sizes, group_size", [([8, 8, 8], 16), ([30, 5, 2, 1], 16), ([2, 2], 4), ([100, 3], 16),
                                              ([3] * 20, 8), ([4] * 5, 8),  # 5 classes, 4 a group: turns wrap
                                              ([3000, 1200, 40], 16)])  # classes past LARGE_CLASS: drawn apart
def test_groups_are_balanced_across_classes_in_each_group_and_over_all(sizes, group_size):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    groups = pair_groups(labels, group_size, 300, seed=0)
    assert groups.shape == (300, group_size) and groups.dtype == np.int64
    per_group = min(len(sizes), group_size // 2)
    appearances = Counter()
    for group in groups:
        counts = Counter(labels[group].tolist())
        assert len(counts) == per_group  # as many classes as leave each two examples or more
        assert max(counts.values()) - min(counts.values()) <= 1 and min(counts.values()) >= 2
        appearances.update(counts.keys())
        for c, n in counts.items():  # drawn without replacement where the class has enough examples
            assert len(set(group[labels[group] == c].tolist())) == min(n, sizes[c])
    assert sorted(appearances) == list(range(len(sizes)))
    assert max(appearances.values()) - min(appearances.values()) <= 2  # a large class takes no more turns


def test_groups_scale_linearly_and_are_reproducible():
    labels = np.arange(20_000) % 7  # 2e8 pairs exist; the groups hold 10 a labelled example, not all of them
    count = groups_for(10 * len(labels), 16)
    groups = pair_groups(labels, 16, count, seed=3)
    assert count == 1667 and groups.nbytes == count * 16 * 8 and count * pairs_of_group(16) >= 200_000
    assert np.array_equal(groups, pair_groups(labels, 16, count, seed=3))
    assert not np.array_equal(groups, pair_groups(labels, 16, count, seed=4))


def test_the_larger_share_of_a_group_goes_to_the_larger_class_and_pairs_are_counted_as_they_train():
    # 3 examples, two of class 0: the group of 3 holds those two (a positive pair), not class 1's one twice
    for seed in range(10):
        groups = pair_groups([1, 0, 0], 3, 1, seed=seed)
        assert sorted(groups[0].tolist()) == [0, 1, 2]
    assert pairs_in(np.array([[0, 0, 2]])) == 2  # an example drawn twice is not a pair with itself
    # of one class: (1, 2) in the first group, (3, 1) twice in the second (places, not examples, make pairs)
    assert pairs_in(np.array([[0, 1, 2], [3, 3, 1]]), np.array([0, 1, 1, 1])) == 1 + 2
    # the different pairs: (0, 1), (0, 2), (1, 2), (1, 3): (3, 1) twice and (1, 2) again count once
    assert distinct_pairs(np.array([[0, 1, 2], [3, 3, 1], [2, 1, 1]])) == 4
    # the start line says how many of the validated pairs differ where a class's examples repeat to fill groups
    repeated = np.array([[0, 1, 2], [3, 3, 1], [2, 1, 1]])
    assert different(repeated, pairs_in(repeated)) == " (4 of them different)"
    assert different(np.array([[0, 1, 2], [3, 4, 5]]), 6) == ""


def test_many_pairs_are_not_counted_apart_for_the_message(monkeypatch):
    """Past COUNTED_PAIRS_MAX pairs, their different ones are not counted (seconds and a gigabyte, for a line)."""
    repeated = np.array([[0, 1, 2], [3, 3, 1], [2, 1, 1]])  # 9 pairs, 4 different
    monkeypatch.setattr("strop.methods.fewshot.COUNTED_PAIRS_MAX", 8)
    assert distinct_pairs(repeated) is None and different(repeated, pairs_in(repeated)) == ""


def test_one_example_of_each_class_is_warned_of_no_pair_of_one_class(tiny_overrides, tmp_path, capsys):
    train, dev = _fewshot_data(tmp_path)
    one_each = write_csv(tmp_path / "one_each.csv", list(pd.read_csv(train).groupby("label").head(1)
                                                         .itertuples(index=False)))
    strop.fit(None, [o for o in tiny_overrides if not o.startswith(("data.", "train.quiet"))] + [
        f"data.train={one_each}", f"data.validation={dev}", "method.name=fewshot", "method.pairs_per_example=8",
        "train.epochs=1"])
    captured = capsys.readouterr()
    assert "warning: no two training examples share a class" in captured.err
    assert "(16 pairs, 3 of them different, for a budget of 8 per example" in captured.out  # groups of 3: [a, a, b]


def test_one_class_is_refused():
    with pytest.raises(StropError, match="two classes"):
        pair_groups([1, 1, 1], 4, 10, seed=0)


def test_split_evenly():
    assert split_evenly(10, 3) == [4, 3, 3] and sum(split_evenly(7, 7)) == 7 and split_evenly(0, 2) == [0, 0]


def test_a_batch_encodes_each_distinct_example_once_and_pairs_within_groups_only(tiny_model_dir):
    from strop.backbones.text import TextBackbone
    from strop.model import with_new_head
    from strop.tasks.base import pad_collate
    from strop.tasks.classification import Classification

    body, _ = TextBackbone.from_pretrained(str(tiny_model_dir), "mean", 32)
    model = with_new_head(body, Classification(("a", "b")))
    examples = [dict(f, labels=label) for f, label in
                zip(body.encode(["one text", "another text here", "a third", "one text"]), [0, 0, 1, 0])]
    collate = GroupCollate(examples, lambda f: pad_collate(f, body.pad_values))
    # Two groups: 0 is in both and 1 twice in the second (no pair with itself); 3 is 0's text, another example.
    batch = collate([GroupFeatures(np.array([[0, 1, 2], [0, 1, 1]]))[i] for i in range(2)] +
                    [GroupFeatures(np.array([[3, 0]]))[0]])
    assert batch["input_ids"].shape[0] == 4  # examples 0, 1, 2, 3 once each
    pairs = sorted(zip(batch["first"].tolist(), batch["second"].tolist(), batch["labels"].tolist()))
    assert pairs == [(0, 1, 1.0), (0, 1, 1.0), (0, 1, 1.0), (0, 2, 0.0), (1, 2, 0.0), (3, 0, 1.0)]
    model.eval()
    cos = PairEncoder(model)(**batch)
    assert cos.shape == (6,) and torch.allclose(cos[-1], torch.tensor(1.0))  # (3, 0): the same text


def test_positive_and_negative_pairs_weigh_half_each():
    similarity = torch.tensor([0.5, 0.0, 0.0, 0.0])
    same = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert PairTask().loss(similarity, same).item() == pytest.approx(0.125)  # (0.25 + 0) / 2, not 0.25 / 4
    # validation outputs and targets come a group of pairs an item (two groups here), measured as one set of pairs
    groups = PairTask().metrics([np.array([0.9, 0.2]), np.array([0.7, 0.1])],
                                [np.array([1.0, 0.0]), np.array([0.0, 0.0])])
    assert groups["pair_accuracy"] == pytest.approx(5 / 6)
    # validation pairs all of different classes (no two examples share one): nothing to say, not a perfect score
    one_kind = PairTask().metrics([np.array([0.1, 0.2, 0.1])], [np.array([0.0, 0.0, 0.0])])
    assert np.isnan(one_kind["pair_accuracy"]) and np.isnan(one_kind["pair_auc"])
    assert PairTask().loss(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 0.0])).item() == pytest.approx(0.25)


def test_cosent_ranks_each_positive_pair_above_each_negative_one():
    similarity = torch.tensor([0.9, 0.2, 0.7], requires_grad=True)
    same = torch.tensor([True, False, False])
    loss = cosent(similarity, same)
    expected = np.log(1 + np.exp(20 * (0.2 - 0.9)) + np.exp(20 * (0.7 - 0.9)))  # two (positive, negative) terms
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert similarity.grad[0] < 0 and similarity.grad[2] > similarity.grad[1] > 0  # the closest negative pushed most
    assert cosent(np.array([0.9, 0.2, 0.7]), np.array([True, False, False])) == pytest.approx(expected, rel=1e-9)
    assert cosent(torch.tensor([0.1, 0.4]), torch.tensor([False, False])).item() == 0.0  # no positive: nothing to rank
    task = PairTask("cosent")
    float32_loss = task.loss(torch.tensor([0.9, 0.2, 0.7]), torch.tensor([1.0, 0.0, 0.0])).item()
    assert float32_loss == pytest.approx(expected, rel=1e-5)
    # ranked right whatever their level: the ranking measure is 1 where 0.5 as a threshold gets half the pairs
    scores = task.metrics([np.array([0.3, 0.2, 0.1, 0.25])], [np.array([1.0, 0.0, 0.0, 0.0])])
    assert scores["pair_auc"] == 1.0 and scores["pair_accuracy"] == pytest.approx(0.5)
    with pytest.raises(StropError, match="method.pair_loss must be cosine or cosent"):
        strop.config.load_config(None, ["method.pair_loss=triplet"])


def test_fit_with_the_cosent_loss(tiny_overrides, tmp_path):
    train, dev = _fewshot_data(tmp_path)
    run = strop.fit(None, tiny_overrides + [f"data.train={train}", f"data.validation={dev}", "method.name=fewshot",
                                            "method.pair_loss=cosent", "method.pairs_per_example=24",
                                            "method.pair_lr=1e-3", "model.pooling=mean"])
    stage = json.loads((run / "contrastive" / "summary.json").read_text())
    assert stage["pair_loss"] == "cosent" and stage["validation"]["pair_auc"] > 0.7  # pairs of 3 classes ranked
    assert json.loads((run / "summary.json").read_text())["validation"]["accuracy"] > 0.6  # chance is 1/3


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
                                            "method.pairs_per_example=24", "method.pair_lr=1e-3", "model.pooling=mean"])
    stage = json.loads((run / "contrastive" / "summary.json").read_text())
    # 18 examples, 24 pairs each: 432 pairs, 16 groups of 8 (the batch size) a step each, 28 pairs a group
    assert stage["group_size"] == 8 and stage["groups"] == stage["steps"] == 16 and stage["pairs"] == 16 * 28
    assert len((run / "contrastive" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (run / "contrastive" / "checkpoints").exists()  # superseded by the saved body
    page = (run / "report.html").read_text()  # the report shows the stage beside the head's epochs
    assert "Contrastive stage (method.name=fewshot)" in page and "pair AUC" in page
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["accuracy"] > 0.6  # chance is 1/3
    assert summary["stage_train_seconds"] == stage["train_seconds"] > 0  # the contrastive stage is training time
    assert summary["train_seconds"] > stage["train_seconds"]
    # the run's summary says what the stage trained: the body, in steps of its own (the head stage trains the head)
    assert summary["stage"]["steps"] == 16 and summary["stage"]["summary"] == "contrastive/summary.json"
    body = sum(v.numel() for k, v in load_file(tiny_model_dir / "model.safetensors").items()
               if not k.startswith("pooler."))
    assert summary["stage"]["parameters"]["trainable"] == body > summary["parameters"]["trainable"]
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
    # Interrupted after the contrastive stage's first epoch, then after the head stage's first epoch (the stage's
    # last epoch writes no checkpoint: the tuned body replaces it).
    for checkpoints in (1, 2):
        out = tmp_path / f"resumed{checkpoints}"
        interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, common + [f"output_dir={out}"]), checkpoints)
        resumed = strop.fit(None, common + [f"output_dir={out}", "train.resume=true"])
        a, b = load_file(whole / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
        assert len((resumed / "contrastive" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("stopped_at", ["the contrastive stage's summary", "the tuned body"])
def test_interrupted_after_the_contrastive_stage_trained_but_before_it_was_saved(stopped_at, tiny_overrides, tmp_path,
                                                                                 monkeypatch):
    """The stage's last epoch writes no checkpoint (the tuned body is saved instead); a run stopped between the
    two resumes from the epoch before and ends as the uninterrupted run, its stage's summary too (the body, which
    marks the stage complete, is saved after the summary)."""
    import strop.runs

    train, dev = _fewshot_data(tmp_path)
    common = [o for o in tiny_overrides if not o.startswith("output_dir=")] + [
        f"data.train={train}", f"data.validation={dev}", "method.name=fewshot", "method.pairs_per_example=8",
        "method.pair_lr=1e-3", "method.pair_epochs=2", "train.epochs=2", "model.pooling=mean"]
    whole = strop.fit(None, common + [f"output_dir={tmp_path / 'whole'}"])
    writer = "staged" if stopped_at == "the tuned body" else "atomic_write_json"
    write = getattr(strop.runs, writer)

    def interrupt_there(path, content, *what):
        if stopped_at in (content, *what):
            raise KeyboardInterrupt
        return write(path, content, *what)

    out = tmp_path / "resumed"
    monkeypatch.setattr(strop.runs, writer, interrupt_there)
    with pytest.raises(KeyboardInterrupt):
        strop.fit(None, common + [f"output_dir={out}"])
    monkeypatch.setattr(strop.runs, writer, write)
    assert len((out / "contrastive" / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "checkpoints" / "contrastive" / "last" / "state.json").read_text())["epoch"] == 1
    resumed = strop.fit(None, common + [f"output_dir={out}", "train.resume=true"])
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert (resumed / "contrastive" / "metrics.jsonl").read_text().count("\n") == 2
    assert not (resumed / "checkpoints" / "contrastive").exists()
    timing = ("train_seconds", "wall_seconds_this_session")
    summaries = [json.loads((run / "contrastive" / "summary.json").read_text()) for run in (whole, resumed)]
    assert [{k: v for k, v in s.items() if k not in timing} for s in summaries][0] == \
        [{k: v for k, v in s.items() if k not in timing} for s in summaries][1]


def test_fewshot_refuses_a_task_it_cannot_pair(tiny_overrides, tmp_path):
    rows = [(f"text number {i}", str(i * 0.5)) for i in range(20)]
    train = write_csv(tmp_path / "reg.csv", rows)
    overrides = [o for o in tiny_overrides if not o.startswith("data.")] + [
        f"data.train={train}", "task.name=regression", "method.name=fewshot"]
    with pytest.raises(StropError, match="fewshot is for classifying texts"):
        strop.fit(None, overrides)
    assert not (tmp_path / "run").exists()


def test_fewshot_on_images_is_told_the_methods_that_train_images_not_to_use_a_text_model():
    from types import SimpleNamespace

    from strop.methods.fewshot import check_supported
    from strop.tasks.classification import Classification
    from strop.tasks.image_classification import ImageClassification

    images = SimpleNamespace(body=SimpleNamespace(kind="image"))
    with pytest.raises(StropError, match="not image_classification: use method.name=full or freeze"):
        check_supported(images, ImageClassification(("cat", "dog")))
    vectors = SimpleNamespace(body=SimpleNamespace(kind="vector"))  # an MLP: full is its method
    with pytest.raises(StropError, match="tunes a text model.*method.name=full for an MLP"):
        check_supported(vectors, Classification(("a", "b")))


def test_lr_find_refuses_fewshot_and_names_the_test_that_runs_on_its_head_stage(tiny_overrides, tmp_path):
    from strop.fit import lr_find

    with pytest.raises(StropError, match="optim.lr is the rate of the head stage.*strop fit ... optim.lr=find"):
        lr_find(None, tiny_overrides + ["method.name=fewshot"], output=tmp_path / "lr")
    assert not (tmp_path / "lr").exists()


def test_pair_similarities_give_the_same_gradients_every_time():
    from types import SimpleNamespace

    from strop.methods.fewshot import PairEncoder

    class Table(torch.nn.Module):  # a body whose embeddings are its parameters
        def __init__(self):
            super().__init__()
            self.vectors = torch.nn.Parameter(torch.randn(16, 384, generator=torch.Generator().manual_seed(0)))

        def forward(self, level, **inputs):
            return self.vectors

    encoder = PairEncoder(SimpleNamespace(body=Table(), level="sequence", head=SimpleNamespace()))
    first, second = torch.triu_indices(16, 16, 1)  # every example in 15 pairs: its gradient sums 15 parts
    grads = []
    for _ in range(10):
        encoder.zero_grad()
        ((encoder(first, second) - 0.5) ** 2).mean().backward()
        grads.append(encoder.body.vectors.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads)  # summed in one order every time


def test_the_same_seed_gives_the_same_contrastive_stage(tiny_overrides, tmp_path):
    train, dev = _fewshot_data(tmp_path)
    runs = [strop.fit(None, [o for o in tiny_overrides if not o.startswith("output_dir")] + [
        f"data.train={train}", f"data.validation={dev}", "method.name=fewshot", "method.pairs_per_example=24",
        "method.pair_lr=1e-3", "model.pooling=mean", "train.epochs=1", f"output_dir={tmp_path / str(i)}"])
        for i in range(2)]
    stages = [(run / "contrastive" / "metrics.jsonl").read_text() for run in runs]
    bodies = [load_file(run / "checkpoints" / "contrastive_body" / "model.safetensors") for run in runs]
    assert json.loads(stages[0])["train_loss"] == json.loads(stages[1])["train_loss"]
    assert all(torch.equal(bodies[0][k], bodies[1][k]) for k in bodies[0])


def test_a_handful_of_validation_examples_is_not_validated_on_repeated_pairs(tiny_overrides, tmp_path):
    train, dev = _fewshot_data(tmp_path)
    two = write_csv(tmp_path / "two.csv", [r for r in pd.read_csv(dev).itertuples(index=False)
                                           if r.label in ("sport", "food")][::4])  # one of each class
    assert len(pd.read_csv(two)) == 2
    run = strop.fit(None, [o for o in tiny_overrides if not o.startswith("data.")] + [
        f"data.train={train}", f"data.validation={two}", "method.name=fewshot", "method.pairs_per_example=8",
        "train.epochs=1"])
    assert json.loads((run / "contrastive" / "summary.json").read_text())["validation_pairs"] == 1  # not 4
    rows = pd.read_csv(dev)
    three = write_csv(tmp_path / "three.csv", [*rows[rows.label == "sport"].itertuples(index=False)][:2]
                      + [*rows[rows.label == "food"].itertuples(index=False)][:1])
    assert sorted(pd.read_csv(three)["label"]) == ["food", "sport", "sport"]
    run = strop.fit(None, [o for o in tiny_overrides if not o.startswith(("data.", "output_dir"))] + [
        f"data.train={train}", f"data.validation={three}", "method.name=fewshot", "method.pairs_per_example=8",
        "train.epochs=1", f"output_dir={tmp_path / 'three'}"])
    summary = json.loads((run / "contrastive" / "summary.json").read_text())
    # the two of one class make the positive pair, so the stage is scored (its pair_accuracy was null)
    assert summary["validation_pairs"] == 3 and summary["validation"]["pair_accuracy"] is not None


def test_groups_without_pairs_of_one_class_or_validation_of_one_class_are_refused(tiny_overrides, tmp_path):
    train, dev = _fewshot_data(tmp_path)
    one_class = write_csv(tmp_path / "one.csv", [r for r in pd.read_csv(dev).itertuples(index=False)
                                                 if r.label == "sport"])
    base = [o for o in tiny_overrides if not o.startswith("data.")] + [f"data.train={train}", "method.name=fewshot"]
    with pytest.raises(StropError, match=r"train.batch_size=2 cannot hold two classes of two: use 4 or more"):
        strop.fit(None, base + [f"data.validation={dev}", "train.batch_size=2"])
    with pytest.raises(StropError, match=r"data.validation \(.*one.csv\) holds \d+ example\(s\) of one class"):
        strop.fit(None, base + [f"data.validation={one_class}"])
    assert not (tmp_path / "run").exists()


def test_frozen_bottom_layers_stay_put_in_the_contrastive_stage(tiny_overrides, tiny_model_dir, tmp_path):
    train, dev = _fewshot_data(tmp_path)
    # method.cache_bottom is left at auto (cached where a method can): the pair encoder must run the frozen
    # layers itself rather than fail on a cached bottom
    overrides = [o for o in tiny_overrides if not o.startswith("method.freeze_layers")]
    run = strop.fit(None, overrides + [f"data.train={train}", f"data.validation={dev}", "method.name=fewshot",
                                       "method.freeze_layers=1", "method.pairs_per_example=24",
                                       "method.pair_lr=1e-3", "model.pooling=mean"])
    tuned = load_file(run / "model" / "model.safetensors")
    pretrained = load_file(tiny_model_dir / "model.safetensors")

    def weight(weights, suffix):
        return next(v for k, v in weights.items() if k.endswith(suffix))

    embeddings, top = "embeddings.word_embeddings.weight", "encoder.layer.1.output.dense.weight"
    assert torch.equal(weight(tuned, embeddings), weight(pretrained, embeddings))  # frozen: layer 0
    assert not torch.equal(weight(tuned, top), weight(pretrained, top))  # tuned by the pairs


def test_the_head_stage_starts_from_the_seed_whatever_the_contrastive_stage_drew(tiny_overrides, tmp_path,
                                                                              monkeypatch):
    # A run resumed within the contrastive stage draws fewer random numbers there than one that was not stopped
    # (a separate process resumed mid-stage ended with head weights 0.01 apart): the head's epochs must not
    # depend on how many the stage drew.
    import random

    import numpy as np

    from strop.methods.fewshot import FewShot

    train, dev = _fewshot_data(tmp_path)
    common = [o for o in tiny_overrides if not o.startswith("output_dir=")] + [
        f"data.train={train}", f"data.validation={dev}", "method.name=fewshot", "method.pairs_per_example=8",
        "method.pair_lr=1e-3", "train.epochs=2", "model.pooling=mean", "model.head_dropout=0.3"]
    plain = strop.fit(None, common + [f"output_dir={tmp_path / 'plain'}"])
    stage = FewShot.contrastive_stage

    def stage_drawing_more(self, *args, **kwargs):
        stage(self, *args, **kwargs)
        torch.rand(1000), np.random.rand(1000), random.random()

    monkeypatch.setattr(FewShot, "contrastive_stage", stage_drawing_more)
    drawn = strop.fit(None, common + [f"output_dir={tmp_path / 'drawn'}"])
    a, b = load_file(plain / "model" / "model.safetensors"), load_file(drawn / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_contrastive_stage_whose_loss_diverges_names_its_own_learning_rate(tiny_overrides, tmp_path):
    with pytest.raises(StropError, match="loss became .* Lower method.pair_lr and start a new run"):
        strop.fit(None, [*tiny_overrides, "method.name=fewshot", "method.pairs_per_example=8", "method.pair_lr=1e4"])


def test_the_heads_logistic_regression_on_many_classes_of_few_examples_does_not_warn(tiny_model_dir):
    """scikit-learn warns that y 'could represent a regression problem' where more than half of 20+ examples
    are of a class of their own: few-shot's normal case with many classes (a learning curve's smallest part)."""
    import warnings

    from strop.methods.fewshot import fit_logistic_head

    class Encoder(nn.Module):  # the embeddings: a vector per example that tells its class apart
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def embed(self, x):
            return self.scale * x

    classes = 13
    labels = [c for c in range(11) for _ in range(2)] + [11, 12]  # 24 examples, 13 classes
    features = [{"x": torch.nn.functional.one_hot(torch.tensor(c), classes).float(), "labels": c} for c in labels]
    head = SimpleNamespace(head=SimpleNamespace(output=nn.Linear(classes, classes)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accuracy = fit_logistic_head(head, Encoder(), features, lambda rows: {"x": torch.stack([r["x"] for r in rows])},
                                     8)
    assert accuracy == 1.0 and not [w for w in caught if "unique classes" in str(w.message)]
