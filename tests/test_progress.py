"""Progress: a bar on a terminal, plain lines in a log or a pipe, nothing when quiet."""

import sys

import pytest

from strop.progress import Lines, Silent, progress


def test_a_log_gets_plain_lines_with_count_rate_eta_and_postfix(capsys):
    # capsys's stderr is no terminal, as in `strop fit ... 2> log`
    shown = progress(range(4), "epoch 1/2", show=True, every=0.0)
    assert isinstance(shown, Lines)
    seen = []
    for item in shown:
        seen.append(item)
        shown.set_postfix(loss=f"{item / 10:.4f}")
    assert seen == [0, 1, 2, 3]
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    # a line after each item but the last (the epoch's own line says that it ended)
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/2: 1/4 batches, ") and "batch/s" in lines[0] and "ETA " in lines[0]
    assert lines[2].startswith("epoch 1/2: 3/4 batches") and lines[2].endswith("loss=0.2000")  # set while item 2 was in hand


def test_lines_wait_for_their_interval(capsys):
    list(progress(range(50), "caching", show=True, every=3600.0))
    assert capsys.readouterr().err == ""


def test_quiet_shows_nothing_and_a_terminal_gets_a_bar(capsys, monkeypatch):
    quiet = progress([1, 2], "epoch", show=False, every=0.0)
    assert isinstance(quiet, Silent) and list(quiet) == [1, 2]
    quiet.set_postfix(loss="1.0")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    from tqdm.auto import tqdm

    bar = progress([1, 2], "epoch", show=True)
    assert isinstance(bar, tqdm) and list(bar) == [1, 2]


def test_images_are_counted_in_images(capsys):
    list(progress(iter(range(3)), "checking images", show=True, unit="image", total=3, every=0.0))
    assert capsys.readouterr().err.splitlines()[0].startswith("checking images: 1/3 images, ")


def test_the_epoch_line_eta_counts_the_epochs_not_a_one_off_pass(capsys):
    from types import SimpleNamespace

    from strop.tasks.classification import Classification
    from strop.train.checkpoint import LoopState
    from strop.train.loop import _print_epoch

    # a frozen body's single 9 s pass is in train_seconds; each epoch of the head takes 0.5 s
    record = {"epoch": 2, "train_loss": 0.1, "val_loss": 0.2, "val_accuracy": 0.9, "val_macro_f1": 0.9,
              "epoch_seconds": 0.5, "train_samples_per_s": 100.0, "best": True}
    state = LoopState(epoch=2, train_seconds=10.0, history=[{**record, "epoch": 1}, record])
    _print_epoch(record, SimpleNamespace(epochs=10, patience=2), state, Classification(("a", "b")), "accuracy")
    assert "ETA 4s" in capsys.readouterr().out  # 8 epochs left at 0.5 s, not 8 at (10 s / 2)
    _print_epoch(record, SimpleNamespace(epochs=10, patience=2), state, Classification(("a", "b")), "accuracy", 1.5)
    assert "ETA 16s" in capsys.readouterr().out  # each epoch's validation too: 8 at 0.5 + 1.5 s


def test_the_contrastive_stages_epoch_line_counts_pairs_not_samples(capsys):
    from types import SimpleNamespace

    from strop.methods.fewshot import PairTask
    from strop.train.checkpoint import LoopState
    from strop.train.loop import _print_epoch

    record = {"epoch": 1, "train_loss": 0.1, "val_loss": 0.2, "val_pair_accuracy": 0.9, "val_pair_auc": 0.9,
              "epoch_seconds": 6.8, "train_samples_per_s": 757.0, "best": True}
    _print_epoch(record, SimpleNamespace(epochs=1, patience=0), LoopState(epoch=1, history=[record]), PairTask(),
                 "loss")
    out = capsys.readouterr().out
    assert "(757 pairs/s)" in out  # 43 steps of 16 sentences: 101 sentences/s, not 757
    assert out.startswith("contrastive stage, epoch 1/1  ")  # not read as the head stage's epoch 1


def test_a_studys_quiet_run_still_shows_its_named_bars_under_the_runs_name(capsys):
    from strop.progress import bars_of_quiet_runs

    with bars_of_quiet_runs(True, "seed 42 fold 2/5"):
        list(progress(range(3), "epoch 1/3", show=False, every=0.0))
        list(progress(range(3), "", show=False, every=0.0))  # unnamed work (a prediction's) stays silent
    with bars_of_quiet_runs(False, "seed 42 fold 3/5"):  # the study is quiet itself
        list(progress(range(3), "epoch 1/3", show=False, every=0.0))
    list(progress(range(3), "epoch 2/3", show=False, every=0.0))  # after the study's run
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("seed 42 fold 2/5, epoch 1/3: ") for line in lines)


def test_a_studys_clock_says_each_runs_time_and_the_time_left_as_its_runs_sizes_predict(monkeypatch):
    from strop import progress as module

    now = iter([0.0, 10.0, 40.0, 50.0])
    monkeypatch.setattr(module.time, "perf_counter", lambda: next(now))
    clock = module.StudyClock([1, 1, 1])  # runs alike: each as long as the mean
    assert clock.lap() == "(10 s; about 20 s left)"
    assert clock.lap() == "(30 s; about 20 s left)"  # 1 run left at the mean of 10 and 30
    assert clock.lap() == "(10 s)"
    now = iter([0.0, 12.0, 32.0, 1000.0])
    curve = module.StudyClock([100, 300, 1000, 100])  # a curve's sizes: 12 s for 100, 20 s for 300
    assert curve.lap() == "(12 s)"  # one size done: how much of it is fixed cost is not known yet
    assert curve.lap() == "(20 s; about 60 s left)"  # 8 s + 0.04 s an example, through both: 48 + 12 s
    assert [module.duration(s) for s in (89, 150, 5400, 9000)] == ["89 s", "2 min", "1.5 h", "2.5 h"]


def test_tokenizing_a_large_data_set_shows_progress_and_gives_what_one_call_gives(tiny_model_dir, monkeypatch,
                                                                                    capsys):
    from transformers import AutoModel

    from strop.backbones.text import TextBackbone, load_tokenizer
    from conftest import make_texts

    body = TextBackbone(AutoModel.from_pretrained(tiny_model_dir), load_tokenizer(str(tiny_model_dir)), "cls", 16)
    capsys.readouterr()  # the model's loading bar
    texts = [t for t, _ in make_texts(10, seed=1)]
    pairs, words = list(zip(texts, reversed(texts))), [t.split() for t in texts]
    whole = (body.encode(texts), body.encode(pairs), body.encode_words(words))
    assert "tokenizing" not in capsys.readouterr().err  # one chunk: no progress shows (pairs cut at 16 are said)
    monkeypatch.setattr("strop.backbones.text.TOKENIZE_CHUNK", 3)
    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)  # a log's line after every chunk
    assert (body.encode(texts), body.encode(pairs), body.encode_words(words)) == whole
    err = capsys.readouterr().err
    assert err.count("tokenizing 10 texts: 1/4 chunks") == 3 and "3/4 chunks" in err


def test_a_runs_validation_shows_its_progress(tiny_overrides, monkeypatch, capsys):
    import strop

    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)  # a log's line after every batch
    loud = [o for o in tiny_overrides if not o.startswith(("train.quiet", "train.epochs"))]
    strop.fit(None, loud + ["train.epochs=2", "train.eval_batch_size=4"])
    err = capsys.readouterr().err
    assert "epoch 2/2, validating: 1/" in err and "\r" not in err


def test_train_quiet_silences_progress_in_every_part_of_a_fit(tiny_overrides, monkeypatch, capsys):
    import sys
    from pathlib import Path

    import strop

    def some_part(cfg, *args):  # a part that asks for progress whatever the config says (a folder of images checked)
        list(progress(range(3), "checking images", show=True, every=0.0))
        return Path(".")

    monkeypatch.setattr(sys.modules["strop.fit"], "_fit", some_part)
    strop.fit(None, [*tiny_overrides, "train.quiet=true"])
    assert capsys.readouterr().err == ""
    strop.fit(None, [*tiny_overrides, "train.quiet=false"])
    assert "checking images: 1/3" in capsys.readouterr().err


def test_train_quiet_silences_progress_in_every_part_of_the_learning_rate_range_test(tiny_overrides, tmp_path,
                                                                                     monkeypatch, capsys):
    from strop.fit import lr_find

    def some_part(*args, **kwargs):  # a part that asks for progress whatever the config says (tokenizing much)
        list(progress(range(3), "tokenizing 60000 texts", show=True, every=0.0))
        raise KeyboardInterrupt  # enough: the test is of what showed

    monkeypatch.setattr(sys.modules["strop.fit"], "prepare", some_part)
    for quiet, said in (("true", ""), ("false", "tokenizing 60000 texts: 1/3")):
        with pytest.raises(KeyboardInterrupt):
            lr_find(None, [*tiny_overrides, f"train.quiet={quiet}"], output=tmp_path / "lr", steps=20)
        err = capsys.readouterr().err
        assert said in err and (said or err == "")
