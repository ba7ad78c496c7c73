"""Defects found by trying strop as a new user would: each test fails on the code before its fix."""

import bz2
import gzip
import json
import subprocess
import sys

import pandas as pd
import pytest

import strop
from conftest import interrupt_after_checkpoint
from strop.config import DataConfig, load_config
from strop.errors import StropError
from strop.tasks.classification import Classification


def _read(path, **columns):
    return Classification.read(path, DataConfig(**columns), "text", "data.train")


def test_tsv_with_quoted_tabs_keeps_the_whole_text(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text('text\tlabel\n"a\tb"\tpos\n"c\td"\tneg\n')
    data = _read(path)
    assert data.inputs == ["a\tb", "c\td"] and data.targets == ["pos", "neg"]


def test_tsv_with_stray_quotes_keeps_them_and_a_bad_row_is_named(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text('text\tlabel\nhe said "hi\tpos\nfine\tneg\n')
    assert _read(path).inputs == ['he said "hi', "fine"]
    path.write_text('text\tlabel\ngood one\tpos\nfine\tneg\textra\n')
    with pytest.raises(StropError, match=r"line 3 of t.tsv has 3 fields where the header has 2 \('text', 'label'\)"):
        _read(path)


def test_jsonl_text_that_is_a_list_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": ["a", "b"], "label": "b"}\n')
    with pytest.raises(StropError, match="column 'text' of t.jsonl holds a list in row 2"):
        _read(path)


def test_parquet_bytes_are_decoded_not_written_as_b_quotes(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"text": [b"caf\xc3\xa9", b"ok"], "label": ["a", "b"]}).to_parquet(path)
    assert _read(path).inputs == ["café", "ok"]


def test_two_columns_with_one_name_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label,label\nfine,a,b\n")
    with pytest.raises(StropError, match="two columns named 'label'"):
        _read(path)


def test_labels_are_normalised_and_the_change_is_said(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,positive\nb,positive \nc,1\nd,1.0\n")
    assert _read(path).targets == ["positive", "positive", "1", "1.0"]  # mixed: numbers stay as written
    path.write_text("text,label\na,1\nb,1.0\nc, 2\n")
    assert _read(path).targets == ["1", "1", "2"]
    said = capsys.readouterr().err
    assert "'1.0' -> '1'" in said and "so one class now: '1' and '1.0' (as '1')" in said
    # ids past 2**53 are whole numbers read exactly: a float would round the first two onto one class
    path.write_text("text,label\na,1234567890123456781\nb,1234567890123456782\nc,+1234567890123456999\n")
    assert _read(path).targets == ["1234567890123456781", "1234567890123456782", "1234567890123456999"]
    assert "one class now" not in capsys.readouterr().err
    # spellings that differ only in case stay classes of their own ('US', 'us'), and that is said
    path.write_text("text,label\na,Positive\nb,positive\nc,negative\nd,Negative\ne,neutral\n")
    assert len(set(_read(path).targets)) == 5
    assert ("differ only in case are classes of their own: 'Negative' and 'negative', 'Positive' and 'positive'; "
            "if they mean one class, write them one way") in capsys.readouterr().err


def test_a_second_fit_into_a_locked_run_directory_is_refused(tiny_overrides, tmp_path):
    from strop.fit import lock_run_dir
    from strop.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    held = lock_run_dir(run)  # as a fit still running would hold it
    try:
        with pytest.raises(StropError, match="in use by another strop fit"):
            strop.fit(None, tiny_overrides)
    finally:
        held.close()
    assert [p.name for p in run.root.iterdir()] == [".lock"]  # nothing of a second run was written


def test_a_fit_into_an_empty_folder_it_cannot_write_says_so(tiny_overrides, tmp_path, monkeypatch):
    from pathlib import Path

    (tmp_path / "run").mkdir()  # there, empty, and (as a folder of another user's) not writable
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission "
                        "denied", str(self))) if self.name == ".lock" else real_open(self, *a, **k))
    with pytest.raises(StropError, match="could not write the run directory to .*Permission denied.*Give a folder you "
                                         "can write to, or change the permissions of this one"):
        strop.fit(None, tiny_overrides)
    assert (tmp_path / "run").is_dir()  # the folder it was given stays


def test_two_fits_started_together_one_wins_one_exits_2(tiny_overrides, tmp_path):
    command = [sys.executable, "-m", "strop.cli", "fit", *tiny_overrides, "train.epochs=1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    codes = sorted([first.wait(), second.wait()])
    assert codes == [0, 2]
    history = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 1  # one run's epoch, not two runs mixed


def test_infinite_learning_rate_is_refused():
    with pytest.raises(StropError, match="optim.lr must be a finite number; got 'inf'"):
        load_config(None, ["optim.lr=inf"])


def test_a_nonfinite_loss_stops_the_run_naming_the_step(tiny_overrides, monkeypatch):
    from strop.tasks.classification import Classification as C

    loss = C.loss
    calls = []

    def diverging(self, logits, labels):
        calls.append(1)
        value = loss(self, logits, labels)
        return value * float("nan") if len(calls) >= 25 else value  # epoch 2 (20 batches an epoch)

    monkeypatch.setattr(C, "loss", diverging)
    with pytest.raises(StropError, match=r"loss became nan at step 25 \(epoch 2.*checkpoint of epoch 1 is kept"):
        strop.fit(None, tiny_overrides)
    calls.clear()
    run = strop.fit(None, [o for o in tiny_overrides if not o.startswith("output_dir")]
                    + [f"output_dir={tiny_overrides[3].split('=')[1]}-skip", "train.nonfinite=skip"])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[1]["skipped_batches"] == 16 and history[2]["skipped_batches"] == 20


def test_json_strop_writes_is_valid_without_nan():
    from strop.runs import to_json

    text = to_json({"loss": float("nan"), "f1": float("inf"), "x": [1.0, float("-inf")]})
    assert json.loads(text) == {"loss": None, "f1": None, "x": [1.0, None]}


def test_output_dir_at_a_file_and_options_mixed_with_overrides(tiny_overrides, tmp_path):
    (tmp_path / "file").write_text("x")
    overrides = [o for o in tiny_overrides if not o.startswith("output_dir")]
    out = subprocess.run([sys.executable, "-m", "strop.cli", "fit", "--quiet", *overrides,
                          f"output_dir={tmp_path / 'file' / 'run'}"], capture_output=True, text=True)
    assert out.returncode == 2 and "is a file, not a folder" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("opener, suffix", [(gzip.open, ".csv.gz"), (bz2.open, ".csv.bz2"), (gzip.open, ".csv")])
def test_compressed_files_are_read(tmp_path, opener, suffix):
    path = tmp_path / f"t{suffix}"
    with opener(path, "wt") as f:
        f.write("text,label\nfine,a\nbad,b\n")
    assert _read(path).inputs == ["fine", "bad"]


def test_semicolon_csv_is_read_and_said(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("text;label\nfine;a\nbad;b\n")
    assert _read(path).targets == ["a", "b"]
    assert "semicolons" in capsys.readouterr().err


def test_folder_jsonl_line_numbers_and_fifo(tmp_path):
    import os

    with pytest.raises(StropError, match="is a folder, not a file"):
        _read(tmp_path)
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": }\n')
    with pytest.raises(StropError, match="line 3 of t.jsonl is not valid JSON"):
        _read(path)
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(StropError, match="not a regular file"):
        _read(tmp_path / "pipe.csv")


def test_duplicate_yaml_sections_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-3\ntrain:\n  epochs: 2\noptim:\n  lr: 5.0e-5\n")
    with pytest.raises(StropError, match="'optim' is given twice"):
        load_config(path)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    # each level holds the one below twice: 40 levels would expand to 2**40 values
    levels = ["a0: &a0 [1, 2]"] + [f"a{i}: &a{i} {{p: *a{i - 1}, q: *a{i - 1}}}" for i in range(1, 41)]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(levels) + "\n")
    with pytest.raises(StropError, match=r"line 2: the alias \*a0 is not read in a config; write the value out"):
        load_config(path)


def test_saved_weights_are_as_readable_as_the_files_beside_them(tiny_overrides):
    import os
    import stat

    before = os.umask(0o022)  # the usual one: files readable by all, writable by their owner
    try:
        run = strop.fit(None, tiny_overrides + ["train.epochs=1"])
    finally:
        os.umask(before)
    weights = [run / "model" / "model.safetensors", *run.glob("checkpoints/*/model.safetensors")]
    assert len(weights) >= 2
    for path in weights + [run / "model" / "strop.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_model_folder_whose_strop_json_was_edited_is_refused_in_plain_words(tiny_overrides, tmp_path):
    import shutil

    run = strop.fit(None, tiny_overrides + ["train.epochs=1"])
    saved = json.loads((run / "model" / "strop.json").read_text())
    edits = {"labels": "ab", "pooling": "evil", "max_length": "32", "threshold": "x", "task": ["text"]}
    for key, value in [*edits.items(), ("labels", ["a", "a"]), ("labels", None), ("labels", [1, 2])]:
        folder = tmp_path / "edited"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(run / "model", folder)
        (folder / "strop.json").write_text(json.dumps({**saved, key: value}))
        with pytest.raises(StropError, match="strop cannot rebuild|damaged"):
            strop.load(folder).predict(["a fine film"])
    (folder / "strop.json").write_text("[1, 2]")
    with pytest.raises(StropError, match="holds a list, not a model's description"):
        strop.load(folder)
    # a max_length past the model's positions is cut to them, as fit cuts it: a long text predicts
    (folder / "strop.json").write_text(json.dumps({**saved, "max_length": 10**9}))
    assert strop.load(folder).predict([" ".join(["good"] * 300)])[0] in saved["labels"]


def test_predict_refuses_an_empty_text_as_fit_does(tiny_overrides):
    run = strop.fit(None, tiny_overrides + ["train.epochs=1"])
    out = subprocess.run([sys.executable, "-m", "strop.cli", "predict", str(run), "--text", ""],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--text number 1 is empty" in out.stderr


def test_macro_f1_counts_the_classes_present_not_the_absent_one():
    import numpy as np

    from strop.evaluate.metrics import classification_metrics

    probabilities = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.8, 0.2, 0.0]])
    metrics = classification_metrics(probabilities, np.array([0, 1, 0]), ["a", "b", "c"])  # no 'c' anywhere
    assert metrics["macro_f1"] == 1.0 and metrics["classes_scored"] == 2


def test_multilabel_macro_f1_counts_the_labels_present_not_the_absent_one():
    import numpy as np

    from strop.evaluate.metrics import multilabel_metrics

    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])  # no 'c' in the data, none predicted
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.7, 0.3, 0.2]])  # 'b' missed once
    metrics = multilabel_metrics(probabilities, targets, ["a", "b", "c"], np.full(3, 0.5))
    assert metrics["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2) and metrics["labels_scored"] == 2


def test_resume_refuses_changed_data_and_keeps_the_resolved_precision(tiny_overrides, text_data, tmp_path,
                                                                       monkeypatch):
    import yaml

    import strop.train.loop as loop
    from conftest import make_texts, write_csv

    train = write_csv(tmp_path / "train.csv", make_texts(160, seed=1))  # a copy of its own, changed below
    common = [o for o in tiny_overrides if not o.startswith(("train.mixed_precision", "data.train"))]
    common += ["train.mixed_precision=auto", f"data.train={train}"]
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, common))
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["mixed_precision"] in ("no", "bf16")  # what ran, not "auto"
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["precision"] == saved["train"]["mixed_precision"] and len(provenance["data"]["train"]) == 64

    original = train.read_text()
    train.write_text(original.replace("good", "fine"))  # same file, changed texts
    with pytest.raises(StropError, match="the train data differ from those the run started with"):
        strop.fit(None, common + ["train.resume=true"])
    train.write_text(original)
    # The same data resume; `auto` on the command line takes the precision the run started with.
    # The probe would now decide the other way (a busy machine): the resumed run keeps what it started with.
    monkeypatch.setattr(loop, "cpu_bf16_speedup", lambda: 0.5 if saved["train"]["mixed_precision"] == "bf16" else 5.0)
    strop.fit(None, common + ["train.resume=true"])
    assert (run / "summary.json").is_file()
    assert json.loads((run / "provenance.json").read_text())["precision"] == saved["train"]["mixed_precision"]


def test_a_pickle_only_model_folder_is_refused_before_anything_is_loaded(tiny_model_dir, tiny_overrides, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not even a real pickle")
    overrides = [o for o in tiny_overrides if not o.startswith("model.name")] + [f"model.name={folder}"]
    with pytest.raises(StropError, match=r"only as a pickle \(pytorch_model.bin\).*safetensors only"):
        strop.fit(None, overrides)


def test_corrupt_weights_in_a_model_folder_get_a_message(tiny_model_dir, tiny_overrides, tmp_path):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    overrides = [o for o in tiny_overrides if not o.startswith("model.name")] + [f"model.name={folder}"]
    with pytest.raises(StropError, match="could not load"):
        strop.fit(None, overrides)
    run = strop.fit(None, tiny_overrides + ["train.epochs=1"])
    (run / "model" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(StropError, match="cannot be read"):
        strop.load(run)


def test_class_names_with_a_comma_are_quoted_where_the_run_starts(tiny_overrides, tmp_path, capsys):
    from conftest import make_texts, write_csv

    rows = [(text, "good, really" if label == "positive" else "bad") for text, label in make_texts(40, seed=5)]
    train = write_csv(tmp_path / "commas.csv", rows)
    overrides = [o for o in tiny_overrides if not o.startswith(("data.", "train.quiet"))]
    strop.fit(None, overrides + [f"data.train={train}", "train.epochs=1"])
    assert "2 classes ('bad', 'good, really')" in capsys.readouterr().out


def test_a_fit_on_the_cpu_after_one_on_another_device_in_the_same_process_runs_where_its_config_says(monkeypatch):
    import torch
    from accelerate.state import PartialState

    from strop.config import load_config
    from strop.train.loop import make_accelerator

    make_accelerator(load_config(None, ["train.device=cpu"]))
    monkeypatch.setitem(PartialState._shared_state, "device", torch.device("cuda"))  # as a GPU fit leaves it
    assert make_accelerator(load_config(None, ["train.device=cpu"])).device.type == "cpu"  # it was refused


def test_a_fit_whose_engine_cannot_start_leaves_no_folder_and_no_lock(tiny_overrides, tmp_path, monkeypatch):
    def no_engine(cfg):
        raise RuntimeError("the engine could not start")

    monkeypatch.setattr("strop.train.loop.make_accelerator", no_engine)  # fit imports it when it runs
    with pytest.raises(RuntimeError, match="could not start"):
        strop.fit(None, tiny_overrides)
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    assert (strop.fit(None, tiny_overrides) / "summary.json").is_file()  # not refused as in use


def test_a_header_repeated_by_joining_two_files_is_left_out_and_said(tmp_path, capsys):
    path = tmp_path / "t.csv"
    first, second = "text,label\r\ngood,pos\r\nbad,neg\r\n", "\ufefftext, label\r\nfine,pos\r\n"
    path.write_bytes((first + second + second.lstrip("\ufeff")).encode("utf-8"))  # cat a.csv b.csv b.csv
    data = _read(path)
    assert data.inputs == ["good", "bad", "fine", "fine"] and data.targets == ["pos", "neg", "pos", "pos"]
    assert "t.csv: lines 4, 6 repeat the header and are left out (two files joined?)" in capsys.readouterr().err


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_excels_sep_line_names_the_separator_and_the_header_follows(tmp_path, sep):
    path = tmp_path / "t.csv"
    path.write_text(f"sep={sep}\ntext{sep}label\ngood{sep}pos\nbad{sep}neg\n")
    data = _read(path)
    assert data.inputs == ["good", "bad"] and data.targets == ["pos", "neg"]
    path.write_text(f"sep={sep}\ntext{sep}label\ngood{sep}pos\nbad{sep}neg{sep}x\n")
    with pytest.raises(StropError, match="line 4 of t.csv has 3 fields"):  # lines counted as an editor shows
        _read(path)


def test_a_spreadsheets_empty_unnamed_columns_are_left_out_and_one_with_values_is_kept(tmp_path):
    from strop.data.tables import read_table

    path = tmp_path / "t.csv"
    path.write_text("text,label,,\ngood,pos,,\nbad,neg,,\n")  # Excel's trailing columns
    assert list(read_table(path).columns) == ["text", "label"] and _read(path).targets == ["pos", "neg"]
    path.write_text("text,label,,\ngood,pos,x,\nbad,neg,,\n")  # an unnamed column with a value stays
    assert list(read_table(path).columns) == ["text", "label", ""]
    path.write_text("text,label,,\ngood,pos,x,y\nbad,neg,,\n")
    with pytest.raises(StropError, match="two columns named ''"):
        _read(path)


def test_the_bf16_probe_is_kept_per_thread_count_in_strop_cache(tmp_path, monkeypatch):
    """A process held to fewer threads than the cores (a test worker, OMP_NUM_THREADS) measures a different
    bf16 speedup: its measurement must not decide for runs that use every core."""
    import torch

    from strop.train import loop

    monkeypatch.setenv("STROP_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    try:
        keys = []
        for count in (1, 2):
            torch.set_num_threads(count)
            loop.cpu_bf16_speedup.cache_clear()
            loop.cpu_bf16_speedup()
            keys.append(loop._machine_key())
    finally:
        torch.set_num_threads(threads)
        loop.cpu_bf16_speedup.cache_clear()
    assert "1 threads" in keys[0] and "2 threads" in keys[1]
    assert set(json.loads((tmp_path / "bf16_speedup.json").read_text())) == set(keys)  # two measurements, kept


def test_a_tokenizer_from_another_model_is_refused_by_fit_and_pretrain_not_met_with_an_index_error(
        tiny_model_dir, tiny_overrides, tmp_path):
    """A folder put together by hand: a 1,000-word model beside a 30,522-token tokenizer crashed the first batch."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from strop.pretrain import pretrain

    folder = tmp_path / "mixed"
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    said = r"tokenizer has 30,522 tokens but the model's word embeddings have 1,000 rows.*own tokenizer files"
    with pytest.raises(StropError, match=said):
        strop.fit(None, [*tiny_overrides, f"model.name={folder}"])
    assert not (tmp_path / "run").exists()
    texts = tmp_path / "domain.txt"
    texts.write_text("".join(f"a line of domain text number {i}\n" for i in range(20)))
    with pytest.raises(StropError, match=said):
        pretrain(None, [f"model.name={folder}", "train.quiet=true"], data=texts, output=tmp_path / "mlm")
    assert not (tmp_path / "mlm").exists()


def test_a_model_folder_of_a_type_transformers_does_not_know_says_so_in_one_line(tiny_overrides, tmp_path, capsys):
    """transformers' own error was six lines ending in advice to install sentencepiece or tiktoken."""
    from strop.cli import main

    folder = tmp_path / "foo"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "foo"}')
    assert main(["fit", *tiny_overrides, f"model.name={folder}"]) == 2
    err = capsys.readouterr().err
    assert "its config.json names the model type 'foo', which transformers" in err and "does not know" in err
    assert len(err.strip().splitlines()) == 1 and "sentencepiece" not in err and not (tmp_path / "run").exists()
