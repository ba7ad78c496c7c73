"""method.name=auto: the rule (few-shot for few texts a class, frozen features for images on a CPU, full
otherwise), and a run that records what it chose and why; method.freeze_layers=auto: the bottom half of a
text classifier frozen on little data."""

import json

import pytest
import torch
import yaml

import strop
from strop.methods.auto import (FEWSHOT_MAX_CLASSES, FEWSHOT_MAX_EXAMPLES_CPU, FEWSHOT_MAX_PER_CLASS,
                                FREEZE_BOTTOM_MAX_EXAMPLES, choose_freeze_layers, choose_method)
from strop.tasks.classification import Classification
from strop.tasks.image_classification import ImageClassification
from strop.tasks.multilabel import MultiLabel
from strop.tasks.regression import Regression


def _labels(per_class: int, classes: int) -> list[str]:
    return [f"c{c}" for c in range(classes) for _ in range(per_class)]


def _text_task(classes: int) -> Classification:
    return Classification(labels=tuple(f"c{c}" for c in range(classes)))


@pytest.mark.parametrize("gpu", [False, True])
def test_few_texts_a_class_go_to_few_shot_and_many_to_full(gpu):
    assert choose_method(_text_task(6), _labels(8, 6), "text", gpu)[0] == "fewshot"
    assert choose_method(_text_task(2), _labels(FEWSHOT_MAX_PER_CLASS, 2), "text", gpu)[0] == "fewshot"
    name, why = choose_method(_text_task(2), _labels(FEWSHOT_MAX_PER_CLASS + 1, 2), "text", gpu)
    assert name == "full" and f"median {FEWSHOT_MAX_PER_CLASS + 1} a class" in why


def test_a_batch_size_too_small_for_contrastive_groups_goes_to_full_not_to_a_refusal():
    name, why = choose_method(_text_task(2), _labels(8, 2), "text", gpu=False, batch_size=2)
    assert name == "full" and "train.batch_size=2 cannot hold few-shot's contrastive groups" in why
    assert choose_method(_text_task(2), _labels(8, 2), "text", gpu=False, batch_size=4)[0] == "fewshot"
    assert choose_method(_text_task(2), _labels(8, 2), "text", gpu=False, batch_size="auto")[0] == "fewshot"


def test_on_a_cpu_too_many_examples_for_pairs_go_to_full_and_a_gpu_keeps_few_shot():
    labels = _labels(10, 5) + ["c0"] * FEWSHOT_MAX_EXAMPLES_CPU  # median 10 a class, more than a CPU pairs
    name, why = choose_method(_text_task(5), labels, "text", gpu=False)
    assert name == "full" and "too many pairs for a CPU" in why
    assert choose_method(_text_task(5), labels, "text", gpu=True)[0] == "fewshot"


@pytest.mark.parametrize("gpu", [False, True])
def test_more_classes_than_a_contrastive_group_holds_go_to_full(gpu):
    assert choose_method(_text_task(FEWSHOT_MAX_CLASSES), _labels(8, FEWSHOT_MAX_CLASSES), "text", gpu)[0] == "fewshot"
    name, why = choose_method(_text_task(20), _labels(8, 20), "text", gpu)
    assert name == "full" and "20 classes" in why and f"up to {FEWSHOT_MAX_CLASSES}" in why


def test_the_median_class_decides_not_the_largest():
    labels = _labels(8, 5) + ["c0"] * 500  # one huge class, the rest few
    assert choose_method(_text_task(5), labels, "text", gpu=False)[0] == "fewshot"


def test_images_freeze_on_a_cpu_and_train_the_body_on_a_gpu_with_enough_a_class():
    task = ImageClassification(labels=("cat", "dog"))
    assert choose_method(task, ["cat", "dog"] * 1000, "image", gpu=False)[0] == "freeze"
    assert choose_method(task, ["cat", "dog"] * 10, "image", gpu=True)[0] == "freeze"
    assert choose_method(task, ["cat", "dog"] * 1000, "image", gpu=True)[0] == "full"


def test_augmented_inputs_steer_auto_away_from_methods_that_cache_the_body():
    name, why = choose_method(_text_task(2), _labels(8, 2), "text", gpu=False, augmenting=True)
    assert name == "full" and "fewshot would compute once and cache" in why
    assert choose_method(_text_task(2), _labels(8, 2), "text", gpu=False)[0] == "fewshot"


def test_cv_and_curve_train_every_part_with_the_method_a_fit_on_all_the_data_chooses(tiny_overrides, tmp_path,
                                                                                      monkeypatch):
    from strop.curve import learning_curve
    from strop.cv import cross_validate

    methods = []

    def recorded(cfg, train_file, score_file, seed, run_dir, keep_run, **_):
        methods.append(cfg.method.name)
        return {"accuracy": 0.5 + 0.1 * len(methods) ** 0.5, "macro_f1": 0.5, "loss": 0.5}, 72

    monkeypatch.setattr("strop.cv.fit_and_score", recorded)
    auto = [*tiny_overrides, "method.name=auto"]  # 80 a class in all: full; 20 a class alone would be fewshot
    result = learning_curve(None, auto, fractions=(0.25, 0.5, 1.0), seeds=1, output=tmp_path / "c", quiet=True)
    assert methods == ["full"] * 3 and result["config"]["method"]["name"] == "full"
    methods.clear()
    cross_validate(None, auto, folds=4, seeds=1, output=tmp_path / "cv", quiet=True)
    assert methods == ["full"] * 4


def test_tasks_without_a_few_shot_recipe_train_in_full():
    assert choose_method(Regression(columns=("y",), mean=(0.5,), std=(1.0,)), [0.5] * 20, "text", gpu=False)[0] == "full"
    assert choose_method(MultiLabel(labels=("a", "b"), thresholds=(0.5, 0.5)), [["a"]] * 20, "text", gpu=False)[0] == "full"
    assert choose_method(_text_task(2), _labels(8, 2), "vector", gpu=False)[0] == "full"
    new, pretrained = (choose_method(_text_task(2), _labels(8, 2), "vector", False, pretrained=p)[1] for p in (0, 1))
    assert "a new MLP has no pretrained body" in new and "new MLP" not in pretrained  # what it says fits the model


def test_an_auto_run_records_its_choice_and_trains_the_chosen_method(tiny_overrides, tmp_path):
    run = strop.fit(None, [*tiny_overrides, "method.name=auto", "method.pairs_per_example=2", "train.epochs=1"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    choice = json.loads((run / "provenance.json").read_text())["method_choice"]
    # 160 examples, two classes: 80 a class, beyond few-shot's range
    assert config["method"]["name"] == "full" == choice["chosen"] and choice["asked"] == "auto"
    assert "median 80 a class" in choice["why"]
    assert json.loads((run / "model" / "strop.json").read_text())["method"] == "full"
    assert "method.name=auto chose <b>full</b>: 160 examples" in (run / "report.html").read_text()


def test_an_auto_run_with_a_batch_too_small_for_few_shot_trains_in_full(tiny_overrides, tmp_path):
    from conftest import make_texts, write_csv

    few = write_csv(tmp_path / "few.csv", make_texts(24, seed=3))  # about 12 a class: few-shot's range
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train=", "data.validation="))]
    run = strop.fit(None, [*overrides, f"data.train={few}", "method.name=auto", "train.batch_size=2",
                           "train.epochs=1"])
    choice = json.loads((run / "provenance.json").read_text())["method_choice"]
    assert choice["chosen"] == "full" and "train.batch_size=2 cannot hold few-shot's" in choice["why"]


def test_a_resumed_auto_run_keeps_its_recorded_choice(tiny_overrides, tmp_path, monkeypatch):
    from conftest import interrupt_after_checkpoint

    overrides = [*tiny_overrides, "method.name=auto", "train.epochs=2"]
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, overrides))
    run = tmp_path / "run"
    strop.fit(str(run / "config.yaml"), ["train.resume=true"])  # its config says method.name=full, not auto
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2
    choice = json.loads((run / "provenance.json").read_text())["method_choice"]
    assert choice["asked"] == "auto" and choice["chosen"] == "full" and "median 80 a class" in choice["why"]
    assert "method.name=auto chose <b>full</b>" in (run / "report.html").read_text()


def test_auto_is_accepted_and_a_misspelt_method_names_it(tiny_overrides):
    with pytest.raises(strop.StropError, match="or auto"):
        strop.fit(None, [*tiny_overrides, "method.name=autoo"])


def test_auto_freezes_the_bottom_half_of_a_text_classifier_on_little_data_only():
    task = _text_task(2)
    k, why = choose_freeze_layers("full", task, 1000, "text", layer_count=7, augmenting=False)
    assert k == 4 and "bottom 3 of 6 blocks" in why  # the bundled MiniLM-L6: embeddings + 3 of 6 blocks
    assert choose_freeze_layers("full", task, FREEZE_BOTTOM_MAX_EXAMPLES, "text", 13, False)[0] == 7
    assert choose_freeze_layers("full", task, FREEZE_BOTTOM_MAX_EXAMPLES + 1, "text", 7, False) == (0, None)


@pytest.mark.parametrize("method, kind, augmenting", [("lora", "text", False), ("bitfit", "text", False),
                                                      ("full", "image", False), ("full", "text", True)])
def test_auto_trains_every_layer_where_the_rule_has_no_measurement(method, kind, augmenting):
    assert choose_freeze_layers(method, _text_task(2), 100, kind, 7, augmenting) == (0, None)


def test_auto_trains_every_layer_of_other_tasks():
    regression = Regression(columns=("y",), mean=(0.5,), std=(1.0,))
    assert choose_freeze_layers("full", regression, 100, "text", 7, False) == (0, None)
    assert choose_freeze_layers("full", MultiLabel(labels=("a", "b"), thresholds=(0.5, 0.5)), 100, "text", 7,
                                False) == (0, None)


def test_a_default_run_on_little_text_freezes_its_bottom_half_and_says_so(tiny_overrides, tiny_model_dir, capsys):
    from safetensors.torch import load_file
    from transformers import BertModel

    before = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_model_dir).state_dict().items()}
    defaults = [o for o in tiny_overrides if not o.startswith("method.freeze_layers")]
    run = strop.fit(None, [*defaults, "train.epochs=1", "train.quiet=false"])
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["freeze_layers"] == 2  # embeddings + block 0
    assert "method.freeze_layers auto -> 2: 160 training examples" in capsys.readouterr().out
    after = load_file(run / "model" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("bert.embeddings.", "bert.encoder.layer.0.")))
    assert not torch.equal(before["bert.encoder.layer.1.output.dense.weight"], after["bert.encoder.layer.1.output.dense.weight"])


def test_freeze_layers_zero_trains_every_layer(tiny_overrides, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import BertModel

    before = BertModel.from_pretrained(tiny_model_dir).state_dict()["embeddings.word_embeddings.weight"]
    run = strop.fit(None, [*tiny_overrides, "train.epochs=1", "method.freeze_layers=0"])
    assert not torch.equal(before, load_file(run / "model" / "model.safetensors")["bert.embeddings.word_embeddings.weight"])


def test_cv_and_curve_parts_train_as_a_fit_on_all_the_data_would(tiny_overrides, tmp_path, monkeypatch):
    """Parts on either side of the threshold would measure two methods: above it, every part trains every layer;
    at or below it, auto is left to each part (which chooses alike)."""
    import strop.cv
    import strop.methods.auto as auto
    from strop.curve import learning_curve

    seen = []

    def fit_and_score(cfg, train_file, score_file, seed, run_dir, keep_run, **_):
        seen.append(cfg.method.freeze_layers)
        return {"accuracy": 0.5 + 0.1 * len(seen) ** 0.5, "macro_f1": 0.5}, 72

    monkeypatch.setattr(strop.cv, "fit_and_score", fit_and_score)
    defaults = [o for o in tiny_overrides if not o.startswith(("method.freeze_layers", "output_dir", "data.validation"))]
    monkeypatch.setattr(auto, "FREEZE_BOTTOM_MAX_EXAMPLES", 100)  # the curve's pool: 144 examples
    result = learning_curve(None, defaults, fractions=(0.25, 0.5, 1), seeds=1, output=tmp_path / "above", quiet=True)
    assert seen == [0, 0, 0] and result["config"]["method"]["freeze_layers"] == 0
    seen.clear()
    strop.cv.cross_validate(None, defaults, folds=2, output=tmp_path / "cv", quiet=True)  # 160 examples
    assert seen == [0, 0]
    seen.clear()
    monkeypatch.setattr(auto, "FREEZE_BOTTOM_MAX_EXAMPLES", 1000)
    learning_curve(None, defaults, fractions=(0.25, 0.5, 1), seeds=1, output=tmp_path / "below", quiet=True)
    assert seen == ["auto"] * 3
