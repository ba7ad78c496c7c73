"""The fine-tuning controls: what trains, how fast, how regularised. Each test fails if its option is ignored."""

import json

import pytest
import torch
from safetensors.torch import load_file

import strop
from conftest import interrupt_after_checkpoint
from strop.config import OptimConfig
from strop.train.optim import build_optimizer, layer_rate_multiples, schedule_factor


def _weights(run, name="model/model.safetensors"):
    return load_file(run / name)


def _history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_bottom_k_layers_stay_bit_identical(tiny_overrides, tiny_model_dir):
    from transformers import BertModel

    before = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_model_dir).state_dict().items()}
    run = strop.fit(None, tiny_overrides + ["method.freeze_layers=2", "train.epochs=2"])  # embeddings + layer 0
    after = _weights(run)
    frozen = [k for k in before if k.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [k for k in before if k.startswith("bert.encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight"))


def test_too_many_frozen_layers_are_refused(tiny_overrides):
    with pytest.raises(strop.StropError, match="freeze_layers=9, but the backbone has 3 layers"):
        strop.fit(None, tiny_overrides + ["method.freeze_layers=9"])


def test_bitfit_trains_only_biases_and_the_head(tiny_overrides, tiny_model_dir):
    from transformers import BertModel

    before = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_model_dir).state_dict().items()}
    after = _weights(strop.fit(None, tiny_overrides + ["method.name=bitfit", "train.epochs=1"]))
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("bias") or k.startswith("bert.pooler") for k in changed)


def test_bitfit_trains_its_biases_and_head_at_one_rate_the_heads(tiny_overrides, tmp_path):
    import json

    from strop.methods import METHODS

    auto = [*(o for o in tiny_overrides if not o.startswith(("optim.lr", "output_dir"))), "optim.lr=auto",
            "train.epochs=1"]
    peak = lambda run: json.loads((run / "summary.json").read_text())["peak_lr"]
    full = strop.fit(None, [*auto, f"output_dir={tmp_path / 'full'}"])
    bitfit = strop.fit(None, [*auto, f"output_dir={tmp_path / 'bitfit'}", "method.name=bitfit"])
    assert peak(bitfit) == pytest.approx(20 * peak(full))  # optim.head_lr_scale: as the peft methods
    assert METHODS.get("bitfit")().body_rate is False and METHODS.get("full")().body_rate is True


def test_layer_wise_rates_are_in_the_optimizer_groups(tiny_model_dir):
    from test_fit import _tiny_task_model

    model = _tiny_task_model(tiny_model_dir, ["a", "b"])
    layers = model.body.layers()  # embeddings, layer 0, layer 1
    rates = layer_rate_multiples(layers, 0.5)
    optimizer = build_optimizer(model, OptimConfig(layer_decay=0.5), 1e-3, model.new_parameters, rates)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(layers[0].word_embeddings.weight)] == pytest.approx(1e-3 * 0.25)
    assert lr_of[id(layers[1].attention.self.query.weight)] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(layers[2].attention.self.query.weight)] == pytest.approx(1e-3)
    assert lr_of[id(model.head.output.weight)] == pytest.approx(1e-3 * 20)  # the new head: its own rate


@pytest.mark.parametrize("schedule, at_half", [("linear", 0.5), ("cosine", 0.5), ("constant", 1.0),
                                               ("polynomial", 0.25), ("exponential", 0.1), ("step", 0.1)])
def test_schedules_have_their_shape(schedule, at_half):
    cfg = OptimConfig(schedule=schedule, warmup=10.0, power=2.0, final_lr_ratio=0.01, step_epochs=1, step_gamma=0.1)
    # 10 warmup steps (a number, not a share), then 100 steps of decay; 55 steps an epoch
    assert schedule_factor(cfg, 5, 110, 55) == pytest.approx(0.5)
    assert schedule_factor(cfg, 10, 110, 55) == pytest.approx(1.0)
    assert schedule_factor(cfg, 60, 110, 55) == pytest.approx(at_half)


def _record_gradual_stages(monkeypatch) -> list[list[bool]]:
    """Each epoch's list of which backbone layers train, as gradual unfreezing sets them."""
    from strop.methods import METHODS

    seen = []
    start = METHODS.get("gradual").start_epoch

    def recording(self, model, epoch):
        start(self, model, epoch)
        seen.append([any(p.requires_grad for p in layer.parameters()) for layer in model.body.layers()])

    monkeypatch.setattr(METHODS.get("gradual"), "start_epoch", recording)
    return seen


def test_gradual_unfreezing_stage_after_each_epoch_and_resume_mid_way(tiny_overrides, tmp_path, monkeypatch):
    seen = _record_gradual_stages(monkeypatch)
    common = [o for o in tiny_overrides if not o.startswith("output_dir")] + ["method.name=gradual", "train.epochs=4"]
    straight = strop.fit(None, common + [f"output_dir={tmp_path / 'straight'}"])
    # 3 layer groups (embeddings, layer 0, layer 1): epoch 1 only the head, then one more group each epoch
    assert seen == [[False, False, False], [False, False, True], [False, True, True], [True, True, True]]

    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, common + [f"output_dir={tmp_path / 'resumed'}"]),
                               checkpoints=2)
    resumed = strop.fit(None, common + [f"output_dir={tmp_path / 'resumed'}", "train.resume=true"])
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradual_unfreezing_stops_above_the_bottom_that_freeze_layers_keeps_frozen(tiny_overrides, tiny_model_dir,
                                                                                     tmp_path, monkeypatch):
    from transformers import BertModel

    seen = _record_gradual_stages(monkeypatch)
    common = [o for o in tiny_overrides if not o.startswith("output_dir")] + ["method.name=gradual", "train.epochs=4",
                                                                              "method.freeze_layers=2"]
    run = strop.fit(None, common + [f"output_dir={tmp_path / 'run'}"])
    assert seen == [[False, False, False], [False, False, True], [False, False, True], [False, False, True]]
    started = BertModel.from_pretrained(tiny_model_dir).state_dict()
    # the last epoch's weights (the best epoch's may be the first, where gradual trains the head alone)
    last = _weights(run, "checkpoints/last/model.safetensors")
    trained = {k.split("body.model.", 1)[1]: v for k, v in last.items() if "body.model." in k}
    frozen = [k for k in started if k.startswith(("embeddings.", "encoder.layer.0."))]
    assert frozen and all(torch.equal(started[k], trained[k]) for k in frozen)
    assert not torch.equal(started["encoder.layer.1.output.dense.weight"], trained["encoder.layer.1.output.dense.weight"])
    with pytest.raises(strop.StropError, match="method.freeze_layers=4, but the backbone has 3 layers"):
        strop.fit(None, common + ["method.freeze_layers=4", f"output_dir={tmp_path / 'deep'}"])
    assert not (tmp_path / "deep").exists()


def test_l1_and_label_smoothing_change_the_training_loss(tiny_overrides, tmp_path):
    runs = {}
    for name, extra in (("plain", []), ("l1", ["optim.l1=1e-4"]), ("smooth", ["train.label_smoothing=0.2"])):
        runs[name] = _history(strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / name}", "train.epochs=1",
                                                                *extra]))[0]["train_loss"]
    assert runs["l1"] > runs["plain"] + 1e-3  # the penalty is part of the loss
    assert runs["smooth"] != pytest.approx(runs["plain"], abs=1e-4)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_other_optimizers_train(name, tiny_overrides, tmp_path):
    history = _history(strop.fit(None, tiny_overrides + [f"optim.name={name}", "optim.nesterov=true",
                                                          "optim.lr=1e-2" if name == "sgd" else "optim.lr=1e-3"]))
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_dropout_overrides_reach_every_dropout_layer(tiny_model_dir, text_data, tmp_path):
    from strop.config import load_config
    from strop.fit import load_splits, resolve_config
    from strop.model import build_model, resolve_source

    cfg = resolve_config(load_config(None, [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
                                            "model.body_dropout=0.3", "model.head_dropout=0.4"]))
    source = resolve_source(cfg.model.name)
    splits = load_splits(cfg, source.input_kind)
    model, _, _ = build_model(source, splits.task, cfg, splits.train.inputs)
    body = [m.p for m in model.body.modules() if isinstance(m, torch.nn.Dropout)]
    assert body and set(body) == {0.3} and model.head.dropout.p == 0.4


def test_imbalance_made_concrete_again_keeps_nothing_of_the_first_time():
    from strop.tasks.classification import Classification

    # the whole file at a ratio of 3 (weights), its training share at 2.8 (auto: nothing), as fit's split gives
    whole = Classification(("a", "b")).with_imbalance(["a"] * 36 + ["b"] * 12, "auto", 2.0)
    assert whole.imbalance == "weights" and whole.class_weights and whole.positive == 1
    share = whole.with_imbalance(["a"] * 28 + ["b"] * 10, "auto", 2.0)
    assert (share.imbalance, share.class_weights, share.positive, share.focal_gamma) == ("none", None, None, 0.0)
    assert "auto chose nothing" in share.note
    # a class none of whose examples is left to train on weighs as one example, not infinitely
    absent = Classification(("a", "b", "c")).with_imbalance(["a"] * 6 + ["b"] * 3, "weights", 2.0)
    assert absent.class_weights == pytest.approx((10 / 18, 10 / 9, 10 / 3))  # counts 6, 3 and 1


def test_class_weights_change_the_loss_on_a_known_batch():
    from strop.tasks.classification import Classification

    plain = Classification(("a", "b"))
    weighted = plain.with_imbalance(["a"] * 9 + ["b"], "weights", 2.0)
    assert weighted.class_weights == pytest.approx((10 / 18, 10 / 2))
    logits, labels = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
    # the minority class's error weighs 9 times the majority's
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (ce * torch.tensor([10 / 18, 10 / 2])).sum() / (10 / 18 + 10 / 2)
    assert weighted.loss(logits, labels) == pytest.approx(float(expected))
    assert plain.loss(logits, labels) == pytest.approx(float(ce.mean()))
    focal = plain.with_imbalance(["a"] * 9 + ["b"], "focal", 2.0)
    assert focal.loss(logits, labels) < plain.loss(logits, labels)  # the easy example counts less


def test_balanced_sampler_draws_classes_evenly():
    from strop.tasks.classification import Classification
    from strop.train.sampler import BatchSampler

    task = Classification(("a", "b")).with_imbalance(["a"] * 90 + ["b"] * 10, "sample", 2.0)
    features = [{"labels": 0}] * 90 + [{"labels": 1}] * 10
    sampler = BatchSampler([1] * 100, 10, seed=1, group_by_length=False, weights=task.example_weights(features))
    drawn = [features[i]["labels"] for epoch in range(20) for batch in (sampler.set_epoch(epoch) or sampler)
             for i in batch]
    assert len(drawn) == 2000 and 0.4 < sum(drawn) / len(drawn) < 0.6  # about half minority, not 10%


def test_auto_imbalance_says_what_it_chose_and_predict_uses_the_tuned_threshold(tiny_overrides, tmp_path, capsys):
    import pandas as pd

    from conftest import make_texts, write_csv

    rows = make_texts(400, seed=3)
    positive = [r for r in rows if r[1] == "positive"][:20]
    negative = [r for r in rows if r[1] == "negative"]
    train = write_csv(tmp_path / "imbalanced.csv", negative + positive)  # 10:1
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.quiet"))]
    run = strop.fit(None, overrides + [f"data.train={train}", "train.imbalance=auto", "train.epochs=2"])
    out = capsys.readouterr().out
    assert "auto chose class weights" in out
    info = json.loads((run / "model" / "strop.json").read_text())
    assert info["positive"] == "positive" and 0 < info["threshold"] < 1
    assert f"decision threshold: 'positive' where its probability reaches {info['threshold']:g}" in out
    predictor = strop.load(run)
    texts = pd.read_csv(tmp_path / "imbalanced.csv")["text"].tolist()[:50]
    p = predictor.predict_proba(texts)[:, 1]
    assert predictor.predict(texts) == ["positive" if x >= info["threshold"] else "negative" for x in p]


def test_gradient_checkpointing_gives_the_same_training(tiny_overrides, tmp_path, monkeypatch):
    import transformers.modeling_utils as checkpointing  # where transformers keeps torch's checkpoint

    calls = []
    original = checkpointing.checkpoint
    monkeypatch.setattr(checkpointing, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    a = strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / 'a'}", "train.epochs=1", "model.body_dropout=0"])
    b = strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / 'b'}", "train.epochs=1", "model.body_dropout=0",
                                          "train.gradient_checkpointing=true"])
    assert calls  # the layers were recomputed in the backward pass
    wa, wb = _weights(a), _weights(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    config = (b / "config.yaml").read_text()
    assert "gradient_checkpointing: true" in config


def test_lr_finder_leaves_the_model_untouched_and_suggests_a_rate(tiny_overrides, tmp_path, capsys, monkeypatch):
    from strop.cli import main
    from strop.config import load_config
    from strop.fit import prepare
    from strop.methods import METHODS
    from strop.train.lr_find import range_test

    prepared = prepare(load_config(None, tiny_overrides))
    before = {k: v.clone() for k, v in prepared.model.state_dict().items()}
    result = range_test(prepared.model, prepared.task, METHODS.get("full")(), prepared.train_features,
                        prepared.collate, prepared.cfg, torch.device("cpu"), steps=40)
    after = prepared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert 1e-7 <= result["suggestion"] <= 1 and len(result["lr"]) == len(result["smoothed"]) >= 5
    assert result["lr"] == sorted(result["lr"])

    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)  # a log's line after every step
    capsys.readouterr()
    loud = [o for o in tiny_overrides if not o.startswith("train.quiet")]
    assert main(["lr-find", *loud, "--steps", "30", "--output", str(tmp_path / "curve")]) == 0
    assert "learning-rate range test: 1/30 steps" in capsys.readouterr().err  # the test shows its progress
    assert (tmp_path / "curve" / "lr_find.png").stat().st_size > 1000
    assert json.loads((tmp_path / "curve" / "lr_find.json").read_text())["suggestion"] > 0
    assert not (tmp_path / "run").exists()  # the run in output_dir was not made
    # quiet: the suggestion alone on stdout, for a script to read
    assert main(["lr-find", *loud, "--steps", "30", "--output", str(tmp_path / "curve"), "-q"]) == 0
    said = capsys.readouterr()
    assert float(said.out) == pytest.approx(json.loads((tmp_path / "curve" / "lr_find.json").read_text())["suggestion"],
                                            rel=0.01) and said.err == ""


def test_suggestion_ignores_early_spikes_and_nan():
    import numpy as np

    from strop.train.lr_find import suggest

    lrs = np.logspace(-7, 0, 50)
    smoothed = np.concatenate([[5.0, 0.5], np.full(13, 2.0), np.linspace(2.0, 0.4, 20), np.linspace(0.4, 3, 15)])
    lr, _ = suggest(lrs, smoothed)  # the spike at step 1 is in the ignored first tenth
    assert lrs[15] <= lr <= lrs[34]
    # a dip in the first tenth, lower than anything after it, is ignored too
    dipped = np.concatenate([[5.0, 0.1], np.full(13, 2.0), np.linspace(2.0, 0.4, 20), np.linspace(0.4, 3, 15)])
    lr, _ = suggest(lrs, dipped)
    assert lrs[15] <= lr <= lrs[34]
    # a loss that only rises after the first tenth: never a rate below the test's start
    lr, why = suggest(lrs, np.concatenate([[5.0, 0.1], np.linspace(1.0, 3.0, 48)]))
    assert lr == lrs[0] and "start rate" in why


def test_optim_lr_find_trains_at_the_found_rate(tiny_overrides):
    run = strop.fit(None, tiny_overrides + ["optim.lr=find", "train.epochs=1", "optim.schedule=constant",
                                            "optim.warmup=0"])
    found = json.loads((run / "lr_find.json").read_text())["suggestion"]
    assert json.loads((run / "summary.json").read_text())["peak_lr"] == pytest.approx(found)
    assert _history(run)[0]["lr"] == pytest.approx(found)
    # the test's random draws (dropout) are put back: the run is the one given the found rate
    given = strop.fit(None, [o for o in tiny_overrides if not o.startswith("output_dir")] + [
        f"optim.lr={found!r}", "train.epochs=1", "optim.schedule=constant", "optim.warmup=0",
        f"output_dir={run.parent / 'given'}"])
    assert _history(given)[0]["train_loss"] == _history(run)[0]["train_loss"]
    from strop.fit import lr_find

    with pytest.raises(strop.StropError, match="--steps 5: the range test needs at least 20"):
        lr_find(None, tiny_overrides, steps=5)


@pytest.mark.parametrize("where", ["afile", "afile/sub", "/proc/strop-cannot-make-this"])
def test_an_output_lr_find_cannot_write_is_refused_before_the_test(where, tiny_overrides, tmp_path, monkeypatch):
    import strop
    from strop.fit import lr_find

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr("strop.train.lr_find.range_test", lambda *a, **k: pytest.fail("the test ran"))
    with pytest.raises(strop.StropError, match=f"--output {where}: .*choose another --output"):
        lr_find(None, tiny_overrides, output=where, steps=20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]



def test_a_failed_lr_find_leaves_none_of_the_folders_it_made(tiny_overrides, tmp_path, monkeypatch):
    import strop
    from strop.fit import lr_find

    def no_finite_loss(*args, **kwargs):
        raise strop.StropError("the range test found no finite loss")

    monkeypatch.setattr("strop.train.lr_find.range_test", no_finite_loss)
    (tmp_path / "there").mkdir()
    for output in (tmp_path / "there", tmp_path / "new" / "deeper" / "lr"):
        with pytest.raises(strop.StropError, match="no finite loss"):
            lr_find(None, tiny_overrides, output=output, steps=20)
    assert [p.name for p in tmp_path.iterdir()] == ["there"]  # the user's folder stays; new/ and deeper/ go


def test_the_threshold_is_tuned_only_on_enough_validation_examples_of_the_minority():
    import numpy as np

    from strop.tasks.classification import THRESHOLD_MIN_POSITIVES, Classification

    task = Classification(("a", "b")).with_imbalance(["a"] * 90 + ["b"] * 10, "auto", 2.0)
    assert task.labels[task.positive] == "b"
    rng = np.random.default_rng(0)

    def validation(positives):  # minority examples score low: their best-F1 threshold is far below 0.5
        p = np.concatenate([rng.uniform(0.0, 0.1, 40), rng.uniform(0.02, 0.3, positives)])
        return [np.array([1 - x, x]) for x in p], [0] * 40 + [1] * positives

    assert task.calibrated(*validation(3)).threshold is None  # 3 examples: an F1 of noise (it gave 0.05)
    tuned = task.calibrated(*validation(THRESHOLD_MIN_POSITIVES)).threshold
    assert tuned is not None and tuned < 0.5


def test_a_threshold_that_would_lower_the_macro_f1_of_the_two_classes_is_not_kept():
    """A model that barely tells the classes apart has its best minority F1 where every example is called
    minority: accuracy 0.75 would become 0.25, macro-F1 0.43 become 0.20. The most probable class decides."""
    import numpy as np

    from strop.tasks.classification import Classification

    task = Classification(("a", "b")).with_imbalance(["a"] * 90 + ["b"] * 30, "weights", 2.0)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.46, 0.49, 80)  # the minority's probability, the same spread for both classes
    outputs, targets = [np.array([1 - x, x]) for x in p], [0] * 60 + [1] * 20
    calibrated = task.calibrated(outputs, targets)
    assert calibrated.threshold is None and calibrated.decision_note() is None
    assert calibrated.metrics(outputs, targets)["accuracy"] == 0.75
