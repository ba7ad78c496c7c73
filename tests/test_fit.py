"""End-to-end runs of strop.fit on a tiny random BERT: files, determinism, heads, methods, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import strop
from conftest import interrupt_after_checkpoint
from strop.methods import METHODS
from strop.methods.base import count_parameters


def _history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_fit_writes_a_complete_run(tiny_overrides, tmp_path):
    run = strop.fit(None, tiny_overrides)
    assert run == tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model/model.safetensors", "model/config.json",
                 "model/strop.json", "model/tokenizer.json", "checkpoints/last/state.json"):
        assert (run / name).is_file(), name
    history = _history(run)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "train_samples_per_s",
                "train_tokens_per_s"):
        assert key in history[0]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # The resolved config reproduces the run's settings.
    cfg = strop.load_config(run / "config.yaml")
    assert cfg.optim.lr == 1e-3 and cfg.output_dir == str(run)
    assert cfg.train.quiet is False  # how this command ran (quiet), not a setting a later command should inherit
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labels"] == ["negative", "positive"]
    assert summary["parameters"]["trainable"] == summary["parameters"]["total"] > 0  # full fine-tuning
    assert summary["best"]["val_accuracy"] == max(r["val_accuracy"] for r in history)
    assert summary["validation"]["accuracy"] == summary["best"]["val_accuracy"]  # fp32 run: no re-validation


def test_predictor_learns_and_matches_plain_transformers(tiny_overrides, text_data):
    run = strop.fit(None, tiny_overrides + ["train.epochs=8"])
    predictor = strop.load(run)
    texts = ["great fun film , love it", "awful boring plot , worst film", "the story was good and nice"]
    proba = predictor.predict_proba(texts)
    assert proba.shape == (3, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    labels = predictor.predict(texts)
    assert labels[:2] == ["positive", "negative"]

    from transformers import pipeline

    classify = pipeline("text-classification", model=str(run / "model"), device="cpu")
    plain = classify(texts, top_k=None)
    for row, p in zip(plain, proba):
        scores = {r["label"]: r["score"] for r in row}
        assert set(scores) == {"negative", "positive"}
        assert np.allclose([scores["negative"], scores["positive"]], p, atol=1e-5)


def test_same_seed_same_metrics_other_seed_other_metrics(tiny_overrides, tmp_path):
    first = _history(strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / 'a'}", "train.epochs=2"]))
    second = _history(strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / 'b'}", "train.epochs=2"]))
    third = _history(strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / 'c'}", "train.epochs=2",
                                                       "train.seed=7"]))
    strip = lambda h: [(r["train_loss"], r["val_loss"], r["val_accuracy"]) for r in h]
    assert strip(first) == strip(second)
    assert strip(first) != strip(third)


def test_a_run_that_ends_on_its_last_epoch_did_not_stop_early(tiny_overrides, capsys):
    # lr 1e-12 moves nothing: no epoch after the first improves, and patience runs out at the last epoch
    overrides = [o for o in tiny_overrides if o != "train.quiet=true"]
    run = strop.fit(None, overrides + ["train.epochs=3", "train.patience=2", "optim.lr=1e-12", "optim.warmup=0"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and not summary["stopped_early"]
    assert "stopping early" not in capsys.readouterr().out


def test_early_stopping_restores_the_best_weights(tiny_overrides, text_data):
    # A huge learning rate wrecks the model after the first epoch, so accuracy cannot keep improving.
    run = strop.fit(None, tiny_overrides + ["train.epochs=8", "train.patience=1", "optim.lr=0.5",
                                            "optim.warmup=0", "train.metric=loss"])
    history = _history(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] and len(history) < 8
    best = min(history, key=lambda r: r["val_loss"])
    assert summary["best_epoch"] == best["epoch"]
    from strop.evaluate.scoring import evaluate_file

    scored = evaluate_file(strop.load(run), text_data["dev"])
    assert scored["loss"] == pytest.approx(best["val_loss"], abs=1e-4)


def test_sigmoid_head_single_logit(tiny_overrides):
    run = strop.fit(None, tiny_overrides + ["model.head=sigmoid", "train.epochs=8"])
    config = json.loads((run / "model" / "config.json").read_text())
    assert len(config["id2label"]) == 1
    predictor = strop.load(run)
    proba = predictor.predict_proba(["great fun film , love it", "awful boring plot , worst film"])
    assert proba.shape == (2, 2)
    assert predictor.predict(["great fun film , love it", "awful boring plot , worst film"]) == ["positive", "negative"]


def _tiny_task_model(tiny_model_dir, labels):
    from strop.backbones.text import TextBackbone
    from strop.model import with_new_head
    from strop.tasks.classification import Classification

    body, _ = TextBackbone.from_pretrained(str(tiny_model_dir), "auto", 32)  # no declared pooling: the pooler
    return with_new_head(body, Classification(tuple(labels)))


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_only_what_it_says(method, tiny_overrides, tiny_model_dir):
    from strop.model import named_state
    from strop.methods.peft import PEFT_METHODS

    if method in PEFT_METHODS + ("houlsby", "pfeiffer"):
        pytest.skip("an adapter method saves the adapter and head alone: tests/test_peft.py checks what it trains")
    model = _tiny_task_model(tiny_model_dir, ["negative", "positive"])
    before = {k: v.clone() for k, v in named_state(model, plain=True).items()}  # as model.safetensors names them
    METHODS.get(method)().prepare(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {
        "full": {n for n, _ in model.named_parameters()},
        "freeze": {n for n, _ in model.named_parameters() if n.startswith("head.")},  # the pooler and the output
        "linear_probe": {"head.output.weight", "head.output.bias"},
        "bitfit": {n for n, _ in model.named_parameters() if n.startswith("head.") or n.endswith("bias")},
        "gradual": {n for n, _ in model.named_parameters()},  # all in the optimizer; epoch 1 trains the head
        "fewshot": {n for n, _ in model.named_parameters() if n.startswith("head.")},  # its head stage
        "sparse": {n for n, _ in model.named_parameters()},  # full; zero weights kept at zero (none here)
    }[method]
    assert trainable == expected
    saved_expected = {"full": set(before), "freeze": {k for k in before if k.startswith(("classifier", "bert.pooler"))},
                      "linear_probe": {"classifier.weight", "classifier.bias"},
                      "bitfit": {k for k in before if k.startswith(("classifier", "bert.pooler")) or k.endswith("bias")},
                      "gradual": {k for k in before if k.startswith(("classifier", "bert.pooler"))},
                      "fewshot": set(before), "sparse": set(before)}[method]  # its contrastive stage tunes the body
    run = strop.fit(None, tiny_overrides + [f"method.name={method}", "train.epochs=1"])
    after = load_file(run / "model" / "model.safetensors")
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "classifier.weight" in changed
    assert changed <= saved_expected


def _fit_command(overrides):
    return [sys.executable, "-m", "strop.cli", "fit", *overrides]


def test_killed_run_resumes_to_the_same_weights(tiny_overrides, tmp_path):
    common = [o for o in tiny_overrides if not o.startswith(("output_dir", "train.epochs"))]
    common += ["train.epochs=6", "train.batch_size=4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_fit_command(common + [f"output_dir={straight}"]), check=True, env=env)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_fit_command(common + [f"output_dir={killed}"]), env=env)
    state = killed / "checkpoints" / "last" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists(), "the run ended before its first checkpoint"
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    epochs_done = json.loads(state.read_text())["epoch"]
    assert 1 <= epochs_done < 6

    subprocess.run(_fit_command(common + [f"output_dir={killed}", "train.resume=true"]), check=True, env=env)
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    timing = ("epoch_seconds", "train_samples_per_s", "train_tokens_per_s", "time")
    untimed = lambda run: [{k: v for k, v in r.items() if k not in timing} for r in _history(run)]
    assert untimed(killed) == untimed(straight)


def test_resume_refuses_a_changed_config_and_a_finished_run(tiny_overrides):
    run = strop.fit(None, tiny_overrides + ["train.epochs=1"])
    with pytest.raises(strop.StropError, match="already complete"):
        strop.fit(None, tiny_overrides + ["train.epochs=1", "train.resume=true"])
    (run / "summary.json").unlink()
    with pytest.raises(strop.StropError, match="differs in optim.lr"):
        strop.fit(None, tiny_overrides + ["train.epochs=1", "train.resume=true", "optim.lr=0.1"])


def test_count_parameters_freeze(tiny_model_dir):
    model = _tiny_task_model(tiny_model_dir, ["a", "b", "c"])
    METHODS.get("linear_probe")().prepare(model)
    assert count_parameters(model)[0] == 32 * 3 + 3


def test_gradient_accumulation_takes_one_step_per_n_batches(tiny_overrides):
    run = strop.fit(None, tiny_overrides + ["train.epochs=1", "train.batch_size=8", "train.grad_accum=4"])
    # 160 examples in batches of 8 = 20 batches = 5 optimizer steps
    assert _history(run)[0]["step"] == 5


def test_auto_learning_rate_rises_for_a_run_of_few_steps(tiny_overrides):
    run = strop.fit(None, tiny_overrides + ["train.epochs=2", "optim.lr=auto", "optim.warmup=0",
                                            "optim.schedule=constant"])
    summary = json.loads((run / "summary.json").read_text())
    # 160 examples in batches of 8: 40 steps in all, a quarter of 160, so 4 x 5e-5
    assert summary["steps"] == 40 and summary["peak_lr"] == pytest.approx(2e-4)
    assert _history(run)[0]["lr"] == pytest.approx(2e-4)  # what the optimizer actually used
    assert "lr: auto" in (run / "config.yaml").read_text()  # the config as given


def test_a_new_mlp_is_told_the_rate_all_its_parameters_train_at(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(rng.normal(size=(64, 3)), columns=["a", "b", "c"]).assign(y=["p", "q"] * 32)
    rows.to_csv(tmp_path / "t.csv", index=False)
    run = strop.fit(None, ["model.name=mlp", f"data.train={tmp_path / 't.csv'}", "data.label_column=y",
                           "train.epochs=1", "optim.warmup=0", "optim.schedule=constant", f"output_dir={tmp_path / 'r'}"])
    peak = json.loads((run / "summary.json").read_text())["peak_lr"]
    used = _history(run)[0]["lr"]
    # every parameter of a new MLP is new: auto gives them the head's rate, 20x, and the summary says it
    assert used == pytest.approx(peak) and peak > 20 * 5e-5 * 0.99
    said = capsys.readouterr().out
    assert f"learning rate {used:.1e} (auto:" in said
    assert "model: mlp (4,546 parameters)" in said  # 3*64+64 + 64*64+64 + 64*2+2: a count, not "0.00M"
    # a rate given is the rate it trains at, not 20 times it
    run = strop.fit(None, ["model.name=mlp", f"data.train={tmp_path / 't.csv'}", "data.label_column=y",
                           "train.epochs=1", "optim.warmup=0", "optim.schedule=constant", "optim.lr=1e-3",
                           f"output_dir={tmp_path / 'r2'}"])
    assert _history(run)[0]["lr"] == pytest.approx(1e-3)
    assert json.loads((run / "summary.json").read_text())["peak_lr"] == pytest.approx(1e-3)


def test_missing_train_file_setting():
    with pytest.raises(strop.StropError, match="data.train is not set"):
        strop.fit(None, ["train.epochs=1"])


@pytest.mark.parametrize("method", [["method.name=freeze"], ["method.freeze_layers=2"]], ids=["body", "bottom"])
def test_a_cached_bf16_run_quotes_what_strop_evaluate_gives(method, tiny_overrides, text_data, tmp_path,
                                                          monkeypatch):
    import strop.train.loop as loop
    from strop.evaluate.scoring import evaluate_file

    cached_in_bf16 = []  # per cache pass: train first, then validation
    cache = loop.cache_body_outputs
    monkeypatch.setattr(loop, "cache_body_outputs",
                        lambda *a, bf16, **k: cached_in_bf16.append(bf16) or cache(*a, bf16=bf16, **k))
    # The final validation runs what trains on the fp32 cache of the frozen part: the whole model's numbers.
    run = strop.fit(None, [o for o in tiny_overrides if not o.startswith("method.freeze_layers")] + method +
                    ["train.epochs=2", "train.mixed_precision=bf16"])
    summary = json.loads((run / "summary.json").read_text())
    scored = evaluate_file(strop.load(run), text_data["dev"])
    assert scored["loss"] == pytest.approx(summary["validation"]["loss"], abs=1e-6)
    assert scored["accuracy"] == summary["validation"]["accuracy"]
    assert summary["best"]["val_loss"] != summary["validation"]["loss"]  # the epoch's validation ran in bf16
    assert cached_in_bf16 == [True, False]


def _record_validations(monkeypatch) -> list[bool]:
    """The precision of each validation the loop runs from now on: True for bf16."""
    import strop.train.loop as loop

    in_bf16, evaluate = [], loop.evaluate

    def recorded(model, loader, task, accelerator, bf16=False, **progress):
        in_bf16.append(bf16)
        return evaluate(model, loader, task, accelerator, bf16, **progress)

    monkeypatch.setattr(loop, "evaluate", recorded)
    return in_bf16


def test_bf16_training_and_validation_with_a_final_fp32_validation(tiny_overrides, text_data, tmp_path, monkeypatch):
    fp32 = _history(strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / 'a'}", "train.epochs=2"]))
    in_bf16 = _record_validations(monkeypatch)
    run = strop.fit(None, tiny_overrides + [f"output_dir={tmp_path / 'b'}", "train.epochs=2",
                                            "train.mixed_precision=bf16"])
    bf16 = _history(run)
    assert bf16[0]["train_loss"] != fp32[0]["train_loss"]  # autocast really changed the arithmetic
    assert abs(bf16[0]["train_loss"] - fp32[0]["train_loss"]) < 0.05
    # Epoch 1 validates in bf16, the last epoch in fp32; the best epoch (1 here) is validated once more in fp32:
    # strop evaluate reproduces that exactly, and the bf16 validation of that epoch is close to it but not
    # bit-equal.
    from strop.evaluate.scoring import evaluate_file

    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and in_bf16 == [True, False, False]
    scored = evaluate_file(strop.load(run), text_data["dev"])
    assert scored["loss"] == pytest.approx(summary["validation"]["loss"], abs=1e-6)
    assert scored["accuracy"] == summary["validation"]["accuracy"]
    assert summary["best"]["val_loss"] != summary["validation"]["loss"]
    assert summary["best"]["val_loss"] == pytest.approx(summary["validation"]["loss"], abs=0.02)


def test_a_best_last_epoch_is_validated_once_in_fp32(tiny_overrides, text_data, tmp_path, monkeypatch):
    """The last epoch validates in fp32: where it is the best, those are the final numbers, measured once."""
    in_bf16 = _record_validations(monkeypatch)
    run = strop.fit(None, tiny_overrides + ["train.epochs=1", "train.mixed_precision=bf16"])
    summary = json.loads((run / "summary.json").read_text())
    assert in_bf16 == [False]
    assert summary["best"]["val_loss"] == summary["validation"]["loss"]  # the epoch's line is the final number
    from strop.evaluate.scoring import evaluate_file

    assert evaluate_file(strop.load(run), text_data["dev"])["loss"] == pytest.approx(summary["validation"]["loss"],
                                                                                    abs=1e-6)


@pytest.mark.parametrize("method", ["freeze", "linear_probe"])
def test_frozen_body_runs_once_and_gives_the_uncached_result(method, tiny_overrides, tmp_path, monkeypatch):
    from transformers import BertModel

    calls = []
    forward = BertModel.forward
    monkeypatch.setattr(BertModel, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    common = tiny_overrides + [f"method.name={method}", "train.epochs=3"]
    cached = strop.fit(None, common + [f"output_dir={tmp_path / 'cached'}"])
    # One pass over train (160 texts, 3 batches of 64) and validation (60 texts, 1 batch); not 3 epochs x
    # (20 training batches + 1 validation batch), and not once more for the final validation, which runs the
    # head on the validation cache.
    assert len(calls) == 3 + 1

    monkeypatch.setattr(METHODS.get(method), "frozen_split", lambda self, model: None)
    uncached = strop.fit(None, common + [f"output_dir={tmp_path / 'uncached'}"])
    a = load_file(cached / "model" / "model.safetensors")
    b = load_file(uncached / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    for x, y in zip(_history(cached), _history(uncached)):
        assert x["val_accuracy"] == y["val_accuracy"]
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-5)


@pytest.mark.parametrize("frozen", [["method.name=freeze"], ["method.freeze_layers=2"]], ids=["body", "bottom"])
def test_interrupted_frozen_run_resumes_to_the_same_weights(frozen, tiny_overrides, tmp_path, monkeypatch):

    common = [o for o in tiny_overrides if not o.startswith(("output_dir", "method.freeze_layers"))] + frozen
    straight = strop.fit(None, common + [f"output_dir={tmp_path / 'straight'}"])

    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, common + [f"output_dir={tmp_path / 'resumed'}"]))
    resumed = strop.fit(None, common + [f"output_dir={tmp_path / 'resumed'}", "train.resume=true"])
    assert len(_history(resumed)) == 3
    # The saved model (best epoch) and the last epoch's head both match: the resumed epochs started from the
    # interrupted run's head, not from a fresh one.
    for weights in ("model/model.safetensors", "checkpoints/last/model.safetensors"):
        a, b = load_file(straight / weights), load_file(resumed / weights)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (weights, key)
    if "method.freeze_layers=2" in frozen:  # the checkpoint leaves out the cached bottom; the saved model has it
        saved = load_file(straight / "model/model.safetensors")
        checkpoint = load_file(straight / "checkpoints/last/model.safetensors")
        assert any("embeddings" in key for key in saved)
        assert not any("embeddings" in key and key.endswith("weight") for key in checkpoint)
    timing = ("epoch_seconds", "train_samples_per_s", "train_tokens_per_s", "time")
    untimed = lambda run: [{k: v for k, v in r.items() if k not in timing} for r in _history(run)]
    assert untimed(resumed) == untimed(straight)


def test_a_checkpoint_whose_optimizer_does_not_fit_the_run_is_refused_with_a_message(tmp_path):
    from strop.errors import StropError
    from strop.train.checkpoint import LoopState, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 2)
    constant = lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    by_kind = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias]}])  # two groups
    save_checkpoint(tmp_path / "last", model, by_kind, constant(by_kind), LoopState(epoch=1), None)
    one_group = torch.optim.AdamW(model.parameters())
    with pytest.raises(StropError, match=r"the checkpoint in .*last does not fit this run's optimizer \(.*\): it "
                                         r"cannot be resumed; start the run again in a new output_dir"):
        load_checkpoint(tmp_path / "last", model, one_group, constant(one_group))


def test_a_max_length_past_the_models_positions_is_cut_to_them(tiny_overrides, capsys):
    # the tiny BERT has 128 positions: 1,000 tokens would index past them (a crash on the first long text)
    run = strop.fit(None, tiny_overrides + ["model.max_length=1000", "train.epochs=1", "train.quiet=false"])
    assert "model.max_length=1000 is more than" in capsys.readouterr().out
    assert json.loads((run / "model" / "strop.json").read_text())["max_length"] == 128
    long_text = " ".join(["the film was good"] * 200)  # about 800 tokens
    assert strop.load(run).predict([long_text])[0] in ("positive", "negative")


def test_a_run_resumed_with_other_library_versions_warns_and_records_the_earlier_ones(tiny_overrides, monkeypatch,
                                                                                      capsys):
    fit_module = sys.modules["strop.fit"]  # the module; strop.fit is its function
    overrides = tiny_overrides + ["train.epochs=2"]
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, overrides))
    run = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("output_dir=")))
    started = json.loads((run / "provenance.json").read_text())["versions"]
    real = fit_module._provenance

    def upgraded(*args):
        provenance = real(*args)
        provenance["versions"]["torch"] = "99.0"
        return provenance

    monkeypatch.setattr(fit_module, "_provenance", upgraded)
    capsys.readouterr()
    strop.fit(None, overrides + ["train.resume=true"])
    assert f"(torch {started['torch']} -> 99.0)" in capsys.readouterr().err
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["versions"]["torch"] == "99.0" and provenance["earlier_versions"] == [started]


def test_a_run_resumed_with_the_same_versions_says_nothing_of_them(tiny_overrides, monkeypatch, capsys):
    overrides = tiny_overrides + ["train.epochs=2"]
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, overrides))
    run = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("output_dir=")))
    capsys.readouterr()
    strop.fit(None, overrides + ["train.resume=true"])
    assert "other versions" not in capsys.readouterr().err
    assert "earlier_versions" not in json.loads((run / "provenance.json").read_text())


def test_a_script_that_calls_fit_gets_its_random_generators_back_as_they_were(tiny_overrides):
    import random

    def draws():
        return random.random(), float(np.random.random()), float(torch.rand(1))

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = draws()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    run = strop.fit(None, tiny_overrides + ["train.epochs=1"])  # seeds every global generator from train.seed
    assert draws() == expected
    from strop.fit import lr_find  # so do the learning-rate range test and a model's load (its head's first draw)

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    lr_find(None, tiny_overrides, output=run.parent / "lr", steps=20)
    strop.load(run)
    assert draws() == expected


def test_texts_longer_than_max_length_are_said_once_a_source(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import strop.backbones.text as text_backbone

    monkeypatch.setattr(text_backbone, "CUT_SAID", set())  # said once a process: not yet in this test
    body, _ = text_backbone.TextBackbone.from_pretrained(str(tiny_model_dir), "mean", 16)
    source = tmp_path / "train.csv"
    source.write_text("stands for the file the texts come from")
    texts = ["good film"] * 3 + [" ".join(["good"] * 30)] * 2
    assert max(len(f["input_ids"]) for f in body.encode(texts, str(source))) == 16
    assert ("2 of 5 texts in train.csv are longer than model.max_length=16 tokens: their ends are not read"
            in capsys.readouterr().err)
    body.encode(texts, str(source))
    assert capsys.readouterr().err == ""  # once a source
    body.encode([(text, "and a second text") for text in texts], "input")
    assert "2 of 5 text pairs are longer than model.max_length=16" in capsys.readouterr().err
    body.encode(["good film", " ".join(["good"] * 14)], "other")  # 16 tokens with [CLS] and [SEP]: none cut
    assert capsys.readouterr().err == ""
