"""The CLI contract: exit codes, messages, no half-written runs, predict and evaluate outputs."""

import importlib
import json

import pytest
import torch

from strop.cli import main


def _fit(overrides):
    return main(["fit", *overrides])


BAD_INPUTS = {
    "missing file": ("data.train={tmp}/nope.csv", "file not found"),
    "missing column": ("data.text_column=sentence", "column 'sentence' not found"),
    "empty file": ("data.train={tmp}/empty.csv", "is empty"),
    "one class": ("data.train={tmp}/one_class.csv", "at least two classes"),
    "missing label": ("data.train={tmp}/nan_label.csv", "1 empty or missing label in nan_label.csv, rows 2"),
    "missing label of a nullable column": ("data.train={tmp}/na_label.parquet",
                                           "1 empty or missing label in na_label.parquet, rows 2"),
    "empty text": ("data.train={tmp}/empty_text.csv", "1 empty or missing text in empty_text.csv, rows 1"),
    "unseen validation label": ("data.validation={tmp}/unseen.csv", "labels neutral do not occur"),
    "not utf-8": ("data.train={tmp}/latin1.csv", "not valid UTF-8"),
    "unknown model": ("model.name=no-such-org/no-such-model", "model hub cannot be reached"),
    "unknown key": ("optim.learnig_rate=1", "unknown key 'optim.learnig_rate'"),
    "bad value": ("train.epochs=0", "train.epochs must be >= 1"),
}
if not torch.cuda.is_available():  # Accelerate would train on the CPU while the run's config said cuda
    BAD_INPUTS["cuda without a GPU"] = ("train.device=cuda", "train.device=cuda: PyTorch sees no CUDA GPU here")


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "one_class.csv").write_text("text,label\na,x\nb,x\nc,x\n")
    (tmp_path / "nan_label.csv").write_text("text,label\ngood,positive\nbad,\nfine,positive\n")
    import pandas as pd

    pd.DataFrame({"text": ["good", "bad", "fine", "awful"],  # a nullable integer column: its gap is pd.NA
                  "label": pd.array([1, None, 1, 0], dtype="Int64")}).to_parquet(tmp_path / "na_label.parquet")
    (tmp_path / "empty_text.csv").write_text("text,label\n,positive\nbad,negative\n")
    (tmp_path / "unseen.csv").write_text("text,label\nmeh,neutral\ngood,positive\n")
    (tmp_path / "latin1.csv").write_bytes("text,label\ncr\u00e8me,positive\nbad,negative\n".encode("latin-1"))
    return tmp_path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_message_and_no_run(case, tiny_overrides, bad_files, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    override, message = BAD_INPUTS[case]
    override = override.format(tmp=bad_files)
    key = override.split("=")[0]
    overrides = [o for o in tiny_overrides if o.split("=")[0] != key] + [override]
    assert _fit(overrides) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert not (bad_files / "run").exists()


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1218496 vs 1218384"),  # torch.save
    Exception("No space left on device (os error 28)")])  # the tokenizers library's save
def test_a_full_disk_that_a_library_reports_in_its_own_words_is_one_message(failure, tmp_path):
    from strop.errors import WriteError
    from strop.runs import staged

    with pytest.raises(WriteError, match="could not write the checkpoint to .*Free disk space"):
        with staged(tmp_path / "last", "the checkpoint"):
            raise failure
    assert list(tmp_path.iterdir()) == []  # the partial folder is gone
    with pytest.raises(ValueError):  # not a failed write: raised as it is, whatever its words
        with staged(tmp_path / "last", "the checkpoint"):
            raise ValueError("a fault of the code: unexpected position (os error 5)")
    inner = WriteError("could not write ensemble.json to x: [Errno 28] No space left on device. Free disk space")
    with pytest.raises(WriteError) as said:  # a write within, reported already: not wrapped in a second message
        with staged(tmp_path / "last", "the ensemble"):
            raise inner
    assert said.value is inner


def test_a_full_disk_exits_1_with_one_message_and_a_run_that_resumes(tiny_overrides, tmp_path, capsys, monkeypatch):
    import errno

    import strop.train.checkpoint as checkpoint

    real_save, calls = checkpoint.save_file, []

    def save_file(tensors, filename):  # the second epoch's checkpoint finds the disk full
        calls.append(filename)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        real_save(tensors, filename)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    assert _fit(tiny_overrides) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "could not write the checkpoint" in err and "No space left on device" in err and "train.resume=true" in err
    run = tmp_path / "run"
    # the first epoch's checkpoint is kept, and no partial one is left to take space
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["epoch"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last"]

    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert _fit(tiny_overrides + ["train.resume=true"]) == 0
    assert (run / "summary.json").is_file()


def _fill_disk_while_writing(monkeypatch, name: str) -> None:
    """Every write of `name` (through its temporary sibling) writes part of the file, then finds the disk full."""
    import builtins
    import errno
    from pathlib import Path

    import strop.runs

    class HalfWritten:
        def __init__(self, file):
            self.file = file

        def write(self, text):
            self.file.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", self.file.name)

        def __getattr__(self, attribute):
            return getattr(self.file, attribute)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def filling_open(path, *args, **kwargs):
        file = builtins.open(path, *args, **kwargs)
        return HalfWritten(file) if Path(path).name.startswith(f".{name}.tmp") else file

    monkeypatch.setattr(strop.runs, "open", filling_open, raising=False)  # atomic_write_text's open


@pytest.mark.parametrize("name, what", [("config.yaml", "the config"), ("summary.json", "the summary")])
def test_a_full_disk_on_a_small_file_exits_1_and_leaves_no_partial_file(name, what, tiny_overrides, tmp_path, capsys,
                                                                        monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _fill_disk_while_writing(patch, name)
        assert _fit(tiny_overrides) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"could not write {what} to {run / name}" in err and "No space left on device" in err
    if name == "config.yaml":  # nothing trained yet: no run is left
        assert not run.exists()
    else:  # the trained run is kept, without a partial summary, and resuming completes it
        assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoints", "config.yaml", "metrics.jsonl", "model",
                                                         "provenance.json"]
        assert _fit(tiny_overrides + ["train.resume=true"]) == 0
        assert json.loads((run / "summary.json").read_text())["epochs_run"] == 3


def test_keep_checkpoint_false_deletes_the_checkpoint_of_a_complete_run(tiny_overrides, tmp_path):
    import strop

    assert _fit(tiny_overrides + ["train.keep_checkpoint=false"]) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml", "data_summary.json", "metrics.jsonl",
                                                     "model", "provenance.json", "report.html", "summary.json",
                                                     "validation_predictions.jsonl"]
    assert strop.load(run).predict(["great fun"])[0] in ("negative", "positive")


def test_existing_output_dir_is_not_overwritten(tiny_overrides, tmp_path, capsys, monkeypatch):
    fit_module = importlib.import_module("strop.fit")  # `strop.fit` is also the function
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    built = []
    monkeypatch.setattr(fit_module, "build_model", lambda *a, **k: built.append(1))
    assert _fit(tiny_overrides) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"
    assert not built  # said before the model loads (seconds, for a large one)
    assert _fit(tiny_overrides + [f"output_dir={tmp_path / 'none'}", "train.resume=true"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err and not built


def test_an_interrupt_before_the_first_checkpoint_says_nothing_was_kept(tiny_overrides, tmp_path, capsys,
                                                                        monkeypatch):
    import strop.train.loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(strop.train.loop, "train", interrupted)
    assert _fit(tiny_overrides + ["train.quiet=false"]) == 130
    err = capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert "nothing was kept" in err and "train.resume" not in err  # no resume hint for a removed run


def test_an_interrupt_while_the_report_is_drawn_leaves_a_complete_run_and_says_so(tiny_overrides, tmp_path, capsys,
                                                                                  monkeypatch):
    """The run is complete once summary.json is written (README): a Ctrl-C while its report is drawn gave a resume
    command that was then refused ('already complete'), and the index said interrupted."""
    import strop.report
    from strop.index import list_runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(strop.report, "report_after_fit", interrupted)
    assert _fit(tiny_overrides + ["train.quiet=false", "train.epochs=1", "train.keep_checkpoint=false"]) == 130
    err = capsys.readouterr().err
    run = tmp_path / "run"
    assert f"{run} is complete" in err and f"strop report {run}" in err and "train.resume" not in err
    assert (run / "summary.json").is_file() and not (run / "checkpoints").exists()  # keep_checkpoint=false
    assert [r["status"] for r in list_runs(tmp_path)] == ["complete"]
    monkeypatch.undo()
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()


def test_fit_predict_evaluate(tiny_overrides, text_data, tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 5\n")
    assert main(["fit", str(config), *tiny_overrides, "train.epochs=8", "train.batch_size=8"]) == 0
    run = tmp_path / "run"
    capsys.readouterr()

    assert main(["predict", str(run), "--text", "great fun , love it", "--text", "awful , worst"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert set(rows[0]["probabilities"]) == {"negative", "positive"}

    import pandas as pd

    out, dev = tmp_path / "pred.csv", pd.read_csv(text_data["dev"])
    dev.insert(0, "id", [f"r{i}" for i in range(len(dev))])  # a column the model does not read comes along
    dev["p_positive"] = 0.25  # ... named like a column of the table's predictions: kept too, renamed
    dev.to_csv(tmp_path / "dev-with-ids.csv", index=False)
    assert main(["predict", str(run), "--input", str(tmp_path / "dev-with-ids.csv"), "--output", str(out)]) == 0
    predictions = pd.read_csv(out)
    assert list(predictions.columns) == ["id", "input_label", "input_p_positive", "text", "label", "score",
                                         "p_negative", "p_positive"]
    assert (predictions["input_p_positive"] == 0.25).all() and (predictions["p_positive"] != 0.25).all()
    assert predictions["id"].tolist() == dev["id"].tolist()
    assert predictions["input_label"].tolist() == dev["label"].tolist()  # the file's labels beside the model's
    assert predictions["text"].tolist() == dev["text"].tolist()
    with monkeypatch.context() as patch:  # a full disk: one message, exit 1, and no partial file
        _fill_disk_while_writing(patch, "pred.jsonl")
        assert main(["predict", str(run), "--input", str(text_data["dev"]), "--output", str(tmp_path / "pred.jsonl")]) == 1
    assert "could not write the predictions" in capsys.readouterr().err
    assert not list(tmp_path.glob("*pred.jsonl*"))

    assert main(["evaluate", str(run), "--data", str(text_data["dev"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "macro_f1", "loss", "n", "confusion_matrix"):
        assert key in metrics
    assert metrics["n"] == 60 and sum(map(sum, metrics["confusion_matrix"])) == 60
    truth = pd.read_csv(text_data["dev"])["label"]
    assert metrics["accuracy"] == pytest.approx((predictions["label"] == truth).mean())
    best = max(json.loads(l)["val_accuracy"] for l in (run / "metrics.jsonl").read_text().splitlines())
    assert metrics["accuracy"] == pytest.approx(best)

    assert main(["evaluate", str(run), "--data", str(text_data["dev"])]) == 0
    assert "confusion matrix" in capsys.readouterr().out

    # a file whose columns are named otherwise: the fix is the command's own option, not a config key
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(text_data["dev"]).rename(columns={"text": "sentence", "label": "gold"}).to_csv(renamed, index=False)
    assert main(["evaluate", str(run), "--data", str(renamed)]) == 2
    assert "Name the right one with --text-column <column>" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(renamed), "--text-column", "sentence"]) == 2
    assert "Name the right one with --label-column <column>" in capsys.readouterr().err
    assert main(["predict", str(run), "--input", str(renamed)]) == 2
    assert "Name the right one with --text-column <column>" in capsys.readouterr().err
    # labels the model does not know: a few named, the fix said, and amounts pointed to regression
    scores = tmp_path / "scores.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(30)], "label": [i / 7 for i in range(30)]}).to_csv(scores,
                                                                                                     index=False)
    assert main(["evaluate", str(run), "--data", str(scores)]) == 2
    err = capsys.readouterr().err
    assert "and 20 more are not among the model's labels (negative, positive): check --label-column, or evaluate a " \
           "run trained on these labels. The labels are 30 different numbers" in err and len(err) < 700
    lines = tmp_path / "texts.txt"
    lines.write_text("great fun , love it\n\nawful , worst\n", encoding="utf-8")  # one text a line
    assert main(["predict", str(run), "--input", str(lines)]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(r)["text"] for r in out.splitlines()] == ["great fun , love it", "awful , worst"]
    assert "note: --input " in err and "1 blank line skipped (2); one prediction for each of its 2 other lines" in err
    assert main(["predict", str(run), "--input", str(renamed)]) == 2
    assert "Name the right one with --text-column <column>" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(renamed), "--text-column", "sentence",
                 "--label-column", "gold"]) == 0

    # predicting and scoring a file show their progress on stderr (here a log's line after every batch), --quiet none
    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)
    larger = tmp_path / "larger.csv"  # 3 batches of 64
    pd.concat([pd.read_csv(text_data["dev"])] * 3).to_csv(larger, index=False)
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(larger)]) == 0
    assert "predicting 180 inputs: 1/3 batches" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(larger)]) == 0
    assert f"scoring {larger}: 1/3 batches" in capsys.readouterr().err
    assert main(["predict", str(run), "--input", str(larger), "--quiet"]) == 0
    assert main(["evaluate", str(run), "--data", str(larger), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_predict_keeps_every_input_column_of_an_earlier_output_or_a_header_with_spaces(tiny_overrides, tmp_path,
                                                                                       capsys, recwarn):
    import pandas as pd

    assert _fit([*tiny_overrides, "train.epochs=1"]) == 0
    run = tmp_path / "run"
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("id, text , label\nr1,great fun,positive\nr2,awful film,negative\n")
    assert main(["predict", str(run), "--input", str(spaced), "--output", str(tmp_path / "first.csv")]) == 0
    first = pd.read_csv(tmp_path / "first.csv")
    assert list(first.columns)[:4] == ["id", "input_label", "text", "label"]
    assert first["input_label"].tolist() == ["positive", "negative"]
    assert first["text"].tolist() == ["great fun", "awful film"]
    assert main(["evaluate", str(run), "--data", str(spaced), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
    (tmp_path / "semi.csv").write_text("id;text\nr1;great fun\nr2;awful film\n")  # a note, said once, not twice
    assert main(["predict", str(run), "--input", str(tmp_path / "semi.csv"), "--output", str(tmp_path / "s.csv")]) == 0
    assert capsys.readouterr().err.count("has no comma in its header but semicolons") == 1
    # predicting on that output: its label, beside an input_label, must not take input_label's place
    again = tmp_path / "again.csv"
    assert main(["predict", str(run), "--input", str(tmp_path / "first.csv"), "--output", str(again)]) == 0
    again = pd.read_csv(again)
    assert list(again.columns)[:3] == ["id", "input_label", "input_input_label"]
    assert again["input_label"].tolist() == ["positive", "negative"]
    assert again["input_input_label"].tolist() == first["label"].tolist()
    assert again["input_score"].tolist() == pytest.approx(first["score"].tolist())
    assert not [w for w in recwarn if "not unique" in str(w.message)]


def test_predict_carries_parquet_and_jsonl_columns_as_json_values(tiny_overrides, tmp_path, capsys):
    """Columns the model does not read come back as JSON holds them: timestamps, dates, decimals, bytes and lists
    from Parquet (a timestamp crashed the writer; a list of one came back as its item), integer ids from a JSONL
    where a row lacks one (they came back as 1.0)."""
    import datetime
    import decimal

    import pandas as pd

    assert _fit([*tiny_overrides, "train.epochs=1"]) == 0
    run = tmp_path / "run"
    pd.DataFrame({"text": ["good film", "bad film"], "created": pd.to_datetime(["2024-01-01 10:30", None]),
                  "day": [datetime.date(2024, 1, 2), datetime.date(2024, 1, 3)],
                  "amount": [decimal.Decimal("1.10"), decimal.Decimal("2.25")], "raw": [b"ab", b"\xff"],
                  "took": pd.to_timedelta(["1s", "2min"]), "keywords": [["a", "b"], ["c"]],
                  "meta": [{"source": "x"}, {"source": "y"}]}).to_parquet(tmp_path / "typed.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamps = pq.read_table(tmp_path / "typed.parquet").append_column(  # lists of timestamps: numpy datetime64 arrays
        "stamps", pa.array([[datetime.datetime(2024, 5, 1)], []], pa.list_(pa.timestamp("ns"))))
    pq.write_table(stamps, tmp_path / "typed.parquet")
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(tmp_path / "typed.parquet")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["created"] for r in rows] == ["2024-01-01T10:30:00", None]
    assert [r["day"] for r in rows] == ["2024-01-02", "2024-01-03"]
    assert [r["amount"] for r in rows] == ["1.10", "2.25"] and [r["raw"] for r in rows] == ["ab", "/w=="]
    assert [r["took"] for r in rows] == ["P0DT0H0M1S", "P0DT0H2M0S"]
    assert [r["keywords"] for r in rows] == [["a", "b"], ["c"]]
    assert [r["meta"] for r in rows] == [{"source": "x"}, {"source": "y"}]
    assert [r["stamps"] for r in rows] == [["2024-05-01T00:00:00"], []]
    assert main(["predict", str(run), "--input", str(tmp_path / "typed.parquet"), "--output",
                 str(tmp_path / "typed.csv")]) == 0
    assert pd.read_csv(tmp_path / "typed.csv")["keywords"].tolist() == ['["a", "b"]', '["c"]']
    (tmp_path / "ids.jsonl").write_text('{"id": 1, "text": "good"}\n{"text": "bad"}\n{"id": 3, "text": "fine"}\n')
    assert main(["predict", str(run), "--input", str(tmp_path / "ids.jsonl")]) == 0
    ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == [1, None, 3] and isinstance(ids[0], int)  # not 1.0: the output joins back on the id as written
    assert main(["predict", str(run), "--input", str(tmp_path / "ids.jsonl"), "--output",
                 str(tmp_path / "ids.csv")]) == 0
    assert [line.split(",")[0] for line in (tmp_path / "ids.csv").read_text().splitlines()] == ["id", "1", "", "3"]
    # Parquet written by another tool than pandas (no pandas metadata): pandas reads an integer column with a null
    # as floats; the ids come back as the file holds them
    pq.write_table(pa.table({"id": pa.array([1, None, 3], pa.int64()), "weight": [0.5, None, 2.0],
                             "text": ["good", "bad", "fine"]}), tmp_path / "ids.parquet")
    assert main(["predict", str(run), "--input", str(tmp_path / "ids.parquet")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [1, None, 3] and isinstance(rows[0]["id"], int)
    assert [r["weight"] for r in rows] == [0.5, None, 2.0]  # a float column stays one


def test_predict_and_evaluate_errors(tiny_overrides, tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--text", "x"]) == 2
    assert "holds no trained model" in capsys.readouterr().err
    assert main(["predict", str(tmp_path)]) == 2
    assert "--text" in capsys.readouterr().err
    # --output is checked before the model is loaded (this folder holds none)
    assert main(["predict", str(tmp_path), "--text", "x", "--output", str(tmp_path / "out.txt")]) == 2
    assert "use a .jsonl, .csv or .tsv file" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--text", "x", "--output", str(tmp_path / "no" / "out.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert main(["predict", str(tmp_path), "--text", "x", "--output", str(tmp_path / "afile" / "out.csv")]) == 2
    assert "afile is a file, not a folder; choose another --output" in capsys.readouterr().err  # not: no folder


def test_overrides_may_follow_options_in_every_command_that_takes_them(tmp_path):
    import pandas as pd
    import yaml

    pool = tmp_path / "pool.csv"
    pd.DataFrame({"a": range(40), "b": [i % 7 for i in range(40)]}).to_csv(pool, index=False)
    out = tmp_path / "ae"
    assert main(["pretrain", "--data", str(pool), "model.name=mlp", "--output", str(out), "train.epochs=2",
                 "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2
    with pytest.raises(SystemExit):  # an option a command does not have is still refused
        main(["pretrain", "--data", str(pool), "--output", str(tmp_path / "x"), "--nonsense"])


def test_output_to_a_reader_that_has_gone_is_dropped_not_raised():
    from strop.cli import ClosedPipeTolerant

    class ClosedPipe:
        written = 0

        def write(self, text):
            ClosedPipe.written += 1
            raise BrokenPipeError

        def flush(self):
            raise BrokenPipeError

    out = ClosedPipeTolerant(ClosedPipe())
    assert out.write("epoch 1\n") == 8  # `strop fit ... | head`: the run goes on to save its model
    out.write("epoch 2\n")
    out.flush()
    assert ClosedPipe.written == 1  # not tried again once the reader is gone


@pytest.mark.parametrize("entry", ["run", "main"])
def test_the_command_exits_without_the_interpreters_last_garbage_collections(entry):
    """The `strop` command (and `python -m strop`) freezes the garbage collector as it exits, so the interpreter's
    collections at exit skip the objects torch and transformers made (1.4 s after a few-shot run); main() leaves it
    alone, as tests and scripts call it in a process that goes on."""
    import subprocess
    import sys

    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: print('frozen objects', gc.get_freeze_count()))\n"  # runs after the exit
             "from strop import cli\n"
             f"sys.argv = ['strop', 'fit', '--help']\ncli.{entry}()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    frozen = int(done.stdout.rsplit("frozen objects", 1)[1])
    assert (frozen > 0) == (entry == "run")


def test_an_unknown_option_shows_the_commands_usage_and_the_override_a_config_key_takes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "some.yaml", "--epochs", "3"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("usage: strop fit ")  # not strop's list of commands
    assert "unrecognized arguments: --epochs 3 (config keys are set as key=value: train.epochs=...)" in err
    with pytest.raises(SystemExit):
        main(["cv", "some.yaml", "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: strop cv ") and err.rstrip().endswith("unrecognized arguments: --bogus")
    with pytest.raises(SystemExit):
        main(["fit", "--train.epochs=3"])
    assert "(config keys are set as key=value: train.epochs=...)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without overrides: no key=value to point to
        main(["evaluate", "run", "--data", "x.csv", "--batch-size", "4"])
    assert capsys.readouterr().err.rstrip().endswith("unrecognized arguments: --batch-size 4")


def test_main_called_by_a_script_leaves_its_stdout_as_it_was(tmp_path):
    import sys

    before = sys.stdout
    main(["runs", "--dir", str(tmp_path)])  # the command's own process wraps it (strop.cli.run), not main()
    assert sys.stdout is before


def test_predicts_blank_lines_are_numbered_as_an_editor_shows_them(tmp_path, capsys):
    import argparse
    from types import SimpleNamespace

    from strop.cli import _file_inputs

    path = tmp_path / "in.txt"  # a line separator, a form feed and U+0085 inside texts, one blank line (3)
    path.write_text("good movie\nline with\u2028separator\n\nbad\f\fmovie\u0085 too\nlast\n", encoding="utf-8")
    predictor = SimpleNamespace(task=SimpleNamespace(level="sentence"), info={}, reads_pairs=False,
                                model=SimpleNamespace(body=SimpleNamespace(kind="text")))
    args = argparse.Namespace(input=str(path), text_column=None, text_pair_column=None, skip_bad_images=False)
    texts = _file_inputs(args, predictor)
    assert texts == ["good movie", "line with\u2028separator", "bad\f\fmovie\u0085 too", "last"]
    assert "1 blank line skipped (3); one prediction for each of its 4 other lines" in capsys.readouterr().err
