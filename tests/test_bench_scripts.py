"""The benchmark scripts beside run.py (curve_check.py, scarce.py, fewshot_screen.py) and run.py's refusals: bad
data and arguments stop them with one message before anything is written, results say which data they were
measured on, and the tables read their own result files. Training is replaced by stand-ins."""

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import curve_check  # noqa: E402
import fewshot_screen  # noqa: E402
import rows  # noqa: E402
import run  # noqa: E402
import scarce  # noqa: E402


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setattr(rows, "DATA_ROOT", root)
    monkeypatch.setattr(rows, "NER_ROOT", root.parent / "ner")
    return root


def _no_git(monkeypatch):
    # `git status` may rewrite the index; a test has no commit to record
    monkeypatch.setattr(run, "source_commit", lambda: "test")


def _exit_code(main, argv: list[str]) -> int:
    """A script's exit code, whether its main returns it or argparse exits with it (a refusal at parse time)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


# curve_check.py


def _fit_and_score_stand_in(calls: list):
    def fit_and_score(cfg, train_file, score_file, seed, run_dir, keep_run, method_choice=None):
        calls.append((len(pd.read_csv(train_file)), seed))
        return {"accuracy": 0.5 + seed / 1000, "macro_f1": 0.5}, len(pd.read_csv(train_file))

    return fit_and_score


def test_curve_check_trains_at_a_size_with_what_fit_and_score_returns_and_writes_its_result(data_root, tmp_path,
                                                                                           monkeypatch):
    import strop.cv

    write_labels(data_root / "intents", "train.csv", ["a", "b"] * 40)  # any data folder, not only sst2/trec/banking77
    write_labels(data_root / "intents", "dev.csv", ["a", "b"] * 5)
    calls = []
    monkeypatch.setattr(strop.cv, "fit_and_score", _fit_and_score_stand_in(calls))
    out = tmp_path / "out"
    assert curve_check.main(["--data", "intents", "--actual-only", "30", "--big-seeds", "2", "--epochs", "1",
                             "--out", str(out)]) == 0
    assert calls == [(30, 42), (30, 43)]
    [result_file] = out.glob("curve-check-*.json")
    result = json.loads(result_file.read_text())
    assert [(r["size"], r["seed"], r["accuracy"]) for r in result["actual_runs"]] == [(30, 42, 0.542),
                                                                                     (30, 43, 0.543)]
    assert result["data_root"] == str(data_root.resolve())


def test_curve_check_with_a_curve_file_records_and_prints_the_curves_settings(data_root, tmp_path, capsys):
    write_labels(data_root / "intents", "train.csv", ["a", "b"] * 40)
    write_labels(data_root / "intents", "dev.csv", ["a", "b"] * 5)
    sizes, accuracy = [6, 12, 24, 36, 48, 60], [0.52, 0.55, 0.64, 0.68, 0.74, 0.75]
    curve = {"config": {"train": {"seed": 42, "epochs": 1}}, "metric": "accuracy", "fractions": [0.1, 0.2, 0.4,
             0.6, 0.8, 1.0], "sizes": sizes, "seeds": [42, 43], "pool_examples": 60,
             "points": [{"examples": n, "seed": seed, "scores": {"accuracy": a + (seed - 42) / 100}}
                        for n, a in zip(sizes, accuracy) for seed in (42, 43)]}
    curve_file = tmp_path / "curve.json"
    curve_file.write_text(json.dumps(curve))
    actual = tmp_path / "actual.json"
    actual.write_text(json.dumps({"actual_runs": [{"size": 70, "seed": 42, "accuracy": 0.8}]}))
    out = tmp_path / "out"
    assert curve_check.main(["--data", "intents", "--curve", str(curve_file), "--actual", str(actual),
                             "--big", "70", "--out", str(out)]) == 0
    result = json.loads(next(out.glob("curve-check-*.json")).read_text())
    assert (result["pool"], result["seeds"], result["epochs"], result["fractions"]) == (60, 2, 1, curve["fractions"])
    assert [c["size"] for c in result["checks"]] == [70]
    printed = capsys.readouterr().out
    assert "fit on 60 examples" in printed and "2 seeds a size" in printed and "train.epochs=1" in printed


def test_curve_check_refuses_a_missing_data_folder_before_it_writes_anything(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        curve_check.main(["--data", "sst2", "--out", str(out)])
    assert stop.value.code == 2
    assert "no data folder sst2 with a train.csv under" in capsys.readouterr().err
    assert not out.exists()


# scarce.py and fewshot_screen.py: cells and data checked before anything is written


@pytest.mark.parametrize("cells", ["bank6", "bank6:", "bank6:x", "bank6:0", ":8"])
def test_a_cell_without_a_whole_k_is_refused(cells, data_root, capsys):
    write_labels(data_root / "bank6", "train.csv", ["a", "b"] * 20)
    with pytest.raises(SystemExit) as stop:
        scarce.parse_args(["--cells", cells])
    assert stop.value.code == 2
    assert "give each cell as DATASET:K" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        fewshot_screen.main(["--cells", cells])
    assert stop.value.code == 2


@pytest.mark.parametrize("script", ["scarce", "fewshot_screen"])
def test_bad_data_stop_the_scarce_label_scripts_with_one_message_before_anything_is_written(script, data_root,
                                                                                           tmp_path, capsys):
    main = {"scarce": scarce.main, "fewshot_screen": fewshot_screen.main}[script]
    pd.DataFrame({"sentence": ["x", "y"], "category": ["a", "b"]}).to_csv(data_root / "cols.csv", index=False)
    (data_root / "badcols").mkdir()
    (data_root / "cols.csv").rename(data_root / "badcols" / "train.csv")
    (data_root / "latin1").mkdir()
    (data_root / "latin1" / "train.csv").write_bytes("text,label\ncaf\xe9 noir,a\nth\xe9,b\n".encode("latin-1"))
    out = tmp_path / "out"
    for cell, message in [("nosuch:8", "no data folder nosuch with a train.csv under"),
                          ("badcols:8", "has no column text or label (its columns: sentence, category)"),
                          ("latin1:8", "latin1/train.csv is not UTF-8 text")]:
        with pytest.raises(SystemExit) as stop:
            main(["--cells", cell, "--draws", "1", "--out", str(out)])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


def test_scarce_records_its_data_root(data_root, tmp_path, monkeypatch):
    write_labels(data_root / "fs", "train.csv", ["a"] * 20 + ["b"] * 20)
    write_labels(data_root / "fs", "dev.csv", ["a", "b"])
    _no_git(monkeypatch)
    monkeypatch.setattr(scarce, "run_method", lambda *_: {"accuracy": 0.5, "wall_seconds": 1.0})
    out = tmp_path / "out"
    assert scarce.main(["--cells", "fs:4", "--draws", "1", "--methods", "frozen", "--out", str(out)]) == 0
    result = json.loads(next(out.glob("scarce-*.json")).read_text())
    assert result["data_root"] == str(data_root.resolve())
    assert [r["accuracy"] for r in result["runs"]] == [0.5]


def test_scarce_table_of_overlapping_files_counts_each_draw_once_the_later_file_winning(tmp_path, capsys):
    def entry(draw, method, accuracy):
        return {"dataset": "x", "per_class": 8, "draw": draw, "method": method, "accuracy": accuracy,
                "wall_seconds": 1.0}

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"runs": [entry(1, "fewshot", 0.8), entry(1, "frozen", 0.7)]}))
    second.write_text(json.dumps({"runs": [entry(1, "fewshot", 0.9), entry(1, "frozen", 0.7),
                                           entry(2, "fewshot", 0.85), entry(2, "frozen", 0.75)]}))
    assert scarce.main(["--table", str(first), str(second)]) == 0
    table = capsys.readouterr().out
    assert "| x | 8 | fewshot | 2 | 0.875 ± 0.035 (0.900, 0.850) |  | 1 |" in table
    assert "| x | 8 | frozen | 2 | 0.725 ± 0.035 (0.700, 0.750) | -0.150 (2) | 1 |" in table


def test_fewshot_screen_table_leaves_failed_runs_out_and_counts_them(tmp_path, capsys):
    lines = [{"dataset": "x", "per_class": 4, "draw": 1, "variant": "base", "rank": 0, "accuracy": 0.6,
              "wall_seconds": 2.0},
             {"dataset": "x", "per_class": 4, "draw": 1, "variant": "bad", "rank": 1, "error": "StropError: no"},
             {"dataset": "x", "per_class": 4, "draw": 1, "variant": "frz", "rank": 2, "accuracy": 0.5,
              "wall_seconds": 1.0}]
    screen = tmp_path / "screen.jsonl"
    screen.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert fewshot_screen.main(["--table", str(screen)]) == 0
    table = capsys.readouterr().out
    assert "| x | 4 | base | 1 | 0.6000 |  |  | 2 | 0 |" in table
    assert "| x | 4 | bad | 0 | not available: StropError: no | | | | 1 |" in table
    assert "| x | 4 | frz | 1 | 0.5000 | -0.1000 (1) | 0/1 | 1 | 0 |" in table
    assert "1 of 3 runs failed" in table


def _screen_run_stand_in(cell, draw, name, overrides, work, rank=0):
    if name == "bad":
        raise ValueError("unknown key method.nosuch")
    return {"dataset": cell[0], "per_class": cell[1], "draw": draw, "variant": name, "rank": rank,
            "overrides": overrides, "accuracy": 0.5, "wall_seconds": 1.0}


def test_fewshot_screen_says_and_records_short_classes_and_its_data_root(data_root, tmp_path, monkeypatch,
                                                                         capsys):
    write_labels(data_root / "fs", "train.csv", ["a"] * 20 + ["b"] * 20 + ["c"] * 3)
    write_labels(data_root / "fs", "dev.csv", ["a", "b", "c"])
    monkeypatch.setattr(fewshot_screen, "ProcessPoolExecutor", ThreadPoolExecutor)  # the stand-in runs in-process
    monkeypatch.setattr(fewshot_screen, "run_one", _screen_run_stand_in)
    out = tmp_path / "out"
    assert fewshot_screen.main(["--cells", "fs:8", "--draws", "1", "--variant", "base", "--variant",
                                "bad method.nosuch=1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fs k=8: 1 classes have fewer than 8 examples and train on all they have" in printed
    assert "1 of 2 runs failed" in printed
    lines = [json.loads(line) for line in next(out.glob("fewshot-screen-*.jsonl")).read_text().splitlines()]
    assert {line["variant"]: line.get("error", line.get("accuracy")) for line in lines} == {
        "base": 0.5, "bad": "ValueError: unknown key method.nosuch"}
    assert all(line["data_root"] == str(data_root.resolve()) and line["short_classes"] == {"c": 3}
               for line in lines)


# rows.py


def test_a_held_out_part_is_drawn_from_the_classes_with_two_examples_or_more(data_root):
    labels = [f"single{i}" for i in range(30)] + ["a"] * 3 + ["b"] * 3  # 36 rows, 6 of them splittable
    write_labels(data_root / "raretail", "train.csv", labels)
    train, score = rows.source_splits("raretail")
    assert len(score) == 1 and len(train) == 35  # 20% of the 6 splittable rows
    write_labels(data_root / "singles", "train.csv", [f"c{i}" for i in range(5)])
    with pytest.raises(LookupError, match=r"singles/train.csv: every class of the training data has a single "
                                          r"example, so none can be held out for scoring: give the data set a dev"):
        rows.source_splits("singles")


def test_a_train_file_that_is_not_utf8_or_not_a_well_formed_csv_stops_run_py_before_anything_is_written(
        data_root, tmp_path, capsys):
    (data_root / "latin1").mkdir()
    (data_root / "latin1" / "train.csv").write_bytes(
        ("text,label\n" + "".join(f"caf\xe9 {i},{'ab'[i % 2]}\n" for i in range(10))).encode("latin-1"))
    (data_root / "ragged").mkdir()
    (data_root / "ragged" / "train.csv").write_text("text,label\nhello there,a\nbye now,b\nhi, you,a\nyo,b\n")
    out = tmp_path / "results"
    assert _exit_code(run.main, ["--rows", "latin1", "--tools", "tfidf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latin1/train.csv is not UTF-8 text (byte b'\\xe9' at offset " in err and "): save it as UTF-8" in err
    assert _exit_code(run.main, ["--rows", "ragged", "--tools", "tfidf", "--out", str(out)]) == 2
    assert ("ragged/train.csv cannot be read as a CSV file (Error tokenizing data. C error: Expected 2 fields in line "
            "4, saw 3): quote the texts that hold commas") in capsys.readouterr().err
    assert not out.exists()


# run.py


def test_run_says_which_tools_do_not_run_on_which_rows_and_stops_where_none_runs(data_root, capsys):
    write_labels(data_root / "bank6", "train.csv", ["a", "b"] * 20)
    assert run.not_applying(["bank6"], ["tfidf", "setfit", "strop-fewshot"]) == [
        "bank6: setfit, strop-fewshot not run (setfit and strop-fewshot run on the few-shot rows only: sst2-fs64, "
        "trec-fs8)"]
    with pytest.raises(SystemExit) as stop:
        run.parse_args(["--rows", "bank6", "--tools", "setfit,strop-fewshot"])
    assert stop.value.code == 2
    assert "no tool of --tools runs on any row of --rows: bank6: setfit, strop-fewshot not run" in (
        capsys.readouterr().err)


def _result_on(data_root: str) -> dict:
    return {"date": "day-1", "rows": ["trec"], "data_root": data_root, "runs": [], "limit": None}


def test_publish_refuses_a_result_measured_on_other_data_and_checks_no_row_data(data_root, tmp_path, monkeypatch,
                                                                               capsys):
    shipped = tmp_path / "shipped" / "text"
    monkeypatch.setattr(rows, "DEFAULT_DATA_ROOT", shipped)
    monkeypatch.setattr(rows, "DEFAULT_NER_ROOT", shipped.parent / "ner")
    published = []
    monkeypatch.setattr(run, "publish", published.append)  # the docs stay as they are
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_result_on(str(data_root.resolve()))))
    # the default rows' data are nowhere (neither under the data root nor the shipped one): --publish trains nothing
    assert run.main(["--publish", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"other.json: measured on other data than the published rows: data_root {data_root.resolve()}" in err
    assert published == []
    same = tmp_path / "same.json"
    same.write_text(json.dumps(_result_on(str(shipped.resolve()))))
    assert run.main(["--publish", str(same)]) == 0
    assert [r["data_root"] for r in published] == [str(shipped.resolve())]


def test_write_docs_refuses_to_run_on_other_data(data_root, capsys):
    write_labels(data_root / "trec", "train.csv", ["a", "b"] * 20)
    with pytest.raises(SystemExit) as stop:
        run.parse_args(["--rows", "trec", "--tools", "tfidf", "--write-docs"])
    assert stop.value.code == 2
    assert "--write-docs publishes runs on the shipped data sets only" in capsys.readouterr().err


def test_run_records_the_data_roots_in_its_result(data_root, tmp_path, monkeypatch):
    import machine

    write_labels(data_root / "intents", "train.csv", ["a", "b"] * 20)
    _no_git(monkeypatch)
    monkeypatch.setattr(machine, "describe", lambda: {"peak": {"line": "peak = stand-in", "cores": None}})
    monkeypatch.setattr(run, "launch", lambda *_: {"error": "stand-in: nothing trains"})
    out = tmp_path / "results"
    assert run.main(["--rows", "intents", "--tools", "tfidf", "--seeds", "1", "--out", str(out)]) == 0
    result = json.loads(next(out.glob("*.json")).read_text())
    assert (result["data_root"], result["ner_data_root"]) == (str(data_root.resolve()),
                                                              str((data_root.parent / "ner").resolve()))
