"""train.ema_decay: the weights' moving average is what is validated, kept, saved and resumed."""

import json

import pytest
import torch
from safetensors.torch import load_file

import strop
from conftest import interrupt_after_checkpoint
from strop.errors import StropError
from strop.evaluate.scoring import evaluate_file
from strop.train.average import WeightAverage
from test_augment import _vectors  # a linear rule on three numeric columns


def test_the_average_follows_the_trained_weights_with_a_warmed_up_decay():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)  # frozen: neither copied nor averaged
    average = WeightAverage(0.9)
    average.track(model)
    assert "2.weight" not in average.shadow and "1.running_mean" in average.shadow
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(2.0)
    average.update(model, 1)  # decay min(0.9, 2/11): mostly the new weights
    kept = 2 / 11
    assert torch.allclose(average.shadow["0.weight"], kept * start + (1 - kept) * (start + 1))
    assert torch.allclose(average.shadow["1.running_mean"], torch.full((4,), (1 - kept) * 2.0))
    for step in range(2, 202):
        average.update(model, step)  # the decay reaches its ceiling, 0.9, and the average the weights
    assert torch.allclose(average.shadow["0.weight"], start + 1, atol=1e-6)

    with torch.no_grad():
        model[0].weight.add_(5.0)
    own = model[0].weight.detach().clone()
    with average.swapped_in(model):
        assert torch.allclose(model[0].weight, start + 1, atol=1e-6)
    assert torch.equal(model[0].weight, own)


@pytest.fixture
def vectors(tmp_path):
    return ["model.name=mlp", "task.name=text_classification", f"data.train={_vectors(tmp_path / 't.csv', 160, 1)}",
            f"data.validation={_vectors(tmp_path / 'v.csv', 80, 2)}", "data.label_column=y", "train.quiet=true",
            "train.patience=0", "model.hidden=[16]", "train.batch_size=16", "train.mixed_precision=no",
            "train.ema_decay=0.9"]


def test_the_saved_model_is_the_average_not_the_last_step(vectors, tmp_path):
    run = strop.fit(None, [*vectors, "train.epochs=1", f"output_dir={tmp_path / 'run'}"])
    saved = load_file(run / "model" / "model.safetensors")
    average = load_file(run / "checkpoints" / "last" / "average.safetensors")
    last_step = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert average and set(average) <= set(saved)
    assert all(torch.equal(saved[name], average[name]) for name in average)
    assert any(not torch.equal(last_step[name], average[name]) for name in average)
    # what was validated is what was saved: strop evaluate gives the run's own numbers
    summary = json.loads((run / "summary.json").read_text())
    scored = evaluate_file(strop.load(run), tmp_path / "v.csv")
    assert scored["loss"] == pytest.approx(summary["validation"]["loss"], abs=1e-5)


def test_a_resumed_run_with_an_average_equals_the_uninterrupted_one(vectors, tmp_path, monkeypatch):
    common = [*vectors, "train.epochs=3"]
    straight = strop.fit(None, [*common, f"output_dir={tmp_path / 'straight'}"])
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, [*common, f"output_dir={tmp_path / 'resumed'}"]))
    resumed = strop.fit(None, [*common, f"output_dir={tmp_path / 'resumed'}", "train.resume=true"])
    a, b = load_file(straight / "model/model.safetensors"), load_file(resumed / "model/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = lambda run: (run / "metrics.jsonl").read_text()
    assert json.loads(history(straight).splitlines()[-1])["val_loss"] == \
        json.loads(history(resumed).splitlines()[-1])["val_loss"]


def test_a_decay_outside_zero_to_one_is_refused_with_the_range(vectors, tmp_path):
    with pytest.raises(StropError, match=r"train.ema_decay must be in \[0, 1\)"):
        strop.fit(None, [*vectors, "train.ema_decay=1.0", f"output_dir={tmp_path / 'bad'}"])
    assert not (tmp_path / "bad").exists()


def test_the_note_says_when_a_run_ends_before_its_decay_is_reached():
    from strop.config import load_config
    from strop.fit import _average_note

    def note(decay, epochs, examples=10_000):
        cfg = load_config({"train": {"ema_decay": decay, "epochs": epochs, "batch_size": 32}})
        return _average_note(cfg, examples)

    # 313 steps an epoch: 9 epochs (2,817 steps) end before 0.998's warm-up (4,490 steps) and 0.999's, at the same
    # decay, so the two settings train and keep the same average
    short = note(0.999, 9)
    assert "first 8,990 optimizer steps" in short
    assert "2,817 steps end before that, at 0.9968" in short and "last 314 steps" in short
    assert note(0.998, 9).split("; this run's")[1] == short.split("; this run's")[1]
    assert "end before" not in note(0.99, 9)  # 0.99 is reached after 890 steps


def test_a_run_whose_batch_size_is_found_is_told_when_it_ends_before_its_decay(vectors, tmp_path, capsys):
    # 160 examples, 1 epoch: a handful of steps, far short of 0.999's warm-up; with batch_size=auto the steps are
    # known only once the size is found, and the short run's warning was left out
    overrides = [o for o in vectors if not o.startswith(("train.batch_size", "train.ema_decay", "train.quiet"))]
    strop.fit(None, [*overrides, "train.batch_size=auto", "train.ema_decay=0.999", "train.epochs=1",
                     f"output_dir={tmp_path / 'run'}"])
    said = capsys.readouterr().out
    assert said.count("train.ema_decay=0.999") == 1 and "steps end before that" in said
