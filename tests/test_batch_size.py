"""train.batch_size=auto / train.eval_batch_size=auto: the fastest size on a CPU, the largest that fits on a GPU,
recorded in config.yaml, and a run that is the same as one with the chosen numbers written in."""

from __future__ import annotations

import json
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from strop.fit import fit
from strop.train.batch_size import Preserved, eval_candidates, find_batch_size, train_candidates


def timed_step(seconds_per_batch: dict[int, float]):
    """A step whose batch of n examples takes seconds_per_batch[n]."""
    return lambda batch: time.sleep(seconds_per_batch[len(batch)])


FEATURES = [{"x": i} for i in range(500)]


def test_on_a_cpu_the_size_with_the_most_examples_per_second_wins():
    # examples/s: 8 -> 400, 16 -> 800, 32 -> 1600, 64 -> 640, 128 -> 640: 32 wins, and 128 is not needed
    measured = find_batch_size(timed_step({8: 0.02, 16: 0.02, 32: 0.02, 64: 0.1, 128: 0.2, 256: 1.0}), FEATURES,
                               (8, 16, 32, 64, 128, 256), torch.device("cpu"), seed=0, repeats=2)
    assert measured.chosen == 32 and measured.goal == "fastest"
    assert list(measured.rates) == [8, 16, 32, 64, 128]  # stopped after two sizes slower than the best
    assert "training batch size 32 (auto: the fastest per example" in measured.describe("training")


def test_on_a_gpu_the_largest_size_that_fits_wins():
    def step(batch):
        if len(batch) >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory")
        time.sleep(0.001)

    measured = find_batch_size(step, FEATURES, (8, 16, 32, 64, 128), torch.device("cuda"), seed=0, repeats=1)
    assert measured.chosen == 32 and measured.rates[64] is None and 128 not in measured.rates
    assert "64: out of memory" in measured.describe("evaluation")


def test_training_sizes_leave_at_least_ten_steps_an_epoch():
    assert train_candidates(1000) == (8, 16, 32, 64)
    assert train_candidates(200) == (8, 16)
    assert train_candidates(30) == (8,)


def test_evaluation_sizes_stop_at_the_first_that_holds_every_example():
    assert eval_candidates(80) == (16, 32, 64, 128)
    assert eval_candidates(64) == (16, 32, 64)
    assert eval_candidates(5000) == (16, 32, 64, 128, 256)
    assert eval_candidates(3) == (16,)


def test_measuring_leaves_weights_buffers_and_random_state_as_they_were():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with Preserved(model):
        model.train()
        model(torch.randn(8, 4)).sum().backward()  # moves the batch norm statistics, draws dropout masks
        assert not torch.equal(model[1].running_mean, before["1.running_mean"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    with Preserved(model):  # a method's prepare freezes part of the model while measuring
        model[0].weight.requires_grad_(False)
    assert all(p.requires_grad for p in model.parameters())


def test_fewshot_with_auto_batch_size_tunes_the_body_in_its_contrastive_stage(tiny_overrides, tmp_path, capsys):
    from test_fewshot import _fewshot_data

    train, dev = _fewshot_data(tmp_path)
    overrides = [o for o in tiny_overrides if not o.startswith(("train.batch_size", "train.quiet"))]
    run = fit(None, overrides + [f"data.train={train}", f"data.validation={dev}", "method.name=fewshot",
                                 "method.pairs_per_example=8", "train.epochs=1", "train.batch_size=auto"])
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"] == 16
    assert "few-shot's contrastive groups hold this many examples" in capsys.readouterr().out
    stage = json.loads((run / "contrastive" / "summary.json").read_text())
    assert stage["steps"] > 0


def test_auto_is_recorded_and_trains_as_the_chosen_numbers_would(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith(("train.batch_size", "output_dir"))]
    auto = fit(None, overrides + ["train.batch_size=auto", "train.eval_batch_size=auto", f"output_dir={tmp_path / 'a'}"])
    chosen = yaml.safe_load((auto / "config.yaml").read_text())["train"]
    assert chosen["batch_size"] in (8, 16) and chosen["eval_batch_size"] in (16, 32, 64)
    fixed = fit(None, overrides + [f"train.batch_size={chosen['batch_size']}",
                                   f"train.eval_batch_size={chosen['eval_batch_size']}", f"output_dir={tmp_path / 'b'}"])
    a, b = load_file(auto / "model" / "model.safetensors"), load_file(fixed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_frozen_body_keeps_a_small_training_batch(tiny_overrides, tmp_path, capsys):
    overrides = [o for o in tiny_overrides if not o.startswith(("train.batch_size", "train.quiet"))]
    run = fit(None, overrides + ["train.batch_size=auto", "method.name=freeze", "train.epochs=1"])
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"] == 16
    assert "training batch size 16 (auto: the body is frozen" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "big", "1.5"])
def test_a_bad_batch_size_is_refused(value, tiny_overrides):
    from strop.errors import StropError

    with pytest.raises(StropError, match="train.batch_size must be"):
        fit(None, tiny_overrides + [f"train.batch_size={value}"])


def test_the_same_command_resumes_with_the_batch_sizes_auto_chose_not_measured_again(tiny_overrides, tmp_path,
                                                                                      monkeypatch):
    """config.yaml holds the sizes auto measured; the same overrides with train.resume=true were refused
    ('differs in train.batch_size'), which self-training's rounds, continued by the same command, then hit."""
    from conftest import interrupt_after_checkpoint

    import strop.train.batch_size as batch_size

    overrides = [o for o in tiny_overrides if not o.startswith("train.batch_size")] + [
        "train.batch_size=auto", "train.eval_batch_size=auto"]
    interrupt_after_checkpoint(monkeypatch, lambda: fit(None, overrides))
    chosen = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    monkeypatch.setattr(batch_size, "find_batch_size", lambda *a, **k: pytest.fail("measured again"))
    run = fit(None, overrides + ["train.resume=true"])
    resumed = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (resumed["batch_size"], resumed["eval_batch_size"]) == (chosen["batch_size"], chosen["eval_batch_size"])
