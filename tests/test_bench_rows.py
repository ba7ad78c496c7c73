"""The benchmark's rows on data sets it was not written for: any data folder is a row, and small or odd
classes do not stop the harness."""

import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import report  # noqa: E402
import rows  # noqa: E402


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "DATA_ROOT", tmp_path)
    monkeypatch.setattr(rows, "NER_ROOT", tmp_path / "ner")
    return tmp_path


def test_any_data_folder_is_a_full_row_and_an_unknown_name_lists_the_choices(data_root):
    write_labels(data_root / "intents", "train.csv", ["a", "b"] * 10)
    write_labels(data_root / "trec", "train.csv", ["a", "b"] * 10)
    assert rows.resolve("trec-fs8") == rows.ROWS["trec-fs8"]
    assert rows.resolve("intents") == rows.Row("intents")
    with pytest.raises(LookupError, match=r"unknown row intent: .*trec-fs8, conll2003, or a data folder .*found: intents, trec\)"):
        rows.resolve("intent")
    with pytest.raises(LookupError, match=r"row sst2-1k reads .*sst2/train.csv, which does not exist: set BENCH_DATA"):
        rows.resolve("sst2-1k")


def test_the_held_out_split_keeps_single_example_classes_in_training_and_stratifies_the_rest(data_root):
    labels = ["a"] * 50 + ["b"] * 45 + ["rare"]
    write_labels(data_root / "odd", "train.csv", labels)
    files = rows.prepare("odd", data_root / "out")
    train = pd.read_csv(files.train, dtype=str)
    score = pd.read_csv(files.score, dtype=str)
    assert (files.n_train, files.n_score, files.n_classes, files.n_unscorable) == (77, 19, 3, 0)
    assert "rare" in set(train["label"]) and "rare" not in set(score["label"])
    assert score["label"].value_counts().to_dict() == {"a": 10, "b": 9}  # stratified: 20% of each class
    assert not set(train["text"]) & set(score["text"])


def test_a_held_out_part_smaller_than_the_number_of_classes_is_drawn_without_stratifying(data_root):
    write_labels(data_root / "many", "train.csv", [f"c{i}" for i in range(12)] * 2)  # 24 rows, 12 classes: 5 held out
    files = rows.prepare("many", data_root / "out")
    assert files.n_train + files.n_score + files.n_unscorable == 24
    assert files.n_score + files.n_unscorable == 5


def test_few_shot_takes_every_example_of_a_class_smaller_than_its_quota(data_root, monkeypatch):
    write_labels(data_root / "fs", "train.csv", ["a"] * 20 + ["b"] * 20 + ["c"] * 3)
    write_labels(data_root / "fs", "dev.csv", ["a", "b", "c"])
    monkeypatch.setitem(rows.ROWS, "fs-8", rows.Row("fs", per_class=8))
    train, _ = rows.build(rows.ROWS["fs-8"])
    assert train["label"].value_counts().to_dict() == {"a": 8, "b": 8, "c": 3}


def test_the_scarce_labels_bench_takes_every_example_of_a_class_smaller_than_k_and_says_so(data_root, tmp_path):
    import scarce  # noqa: E402

    write_labels(data_root / "fs", "train.csv", ["a"] * 20 + ["b"] * 20 + ["c"] * 3)
    write_labels(data_root / "fs", "dev.csv", ["a", "b", "c"])
    cell = scarce.prepare("fs", 8, 1, 2000, tmp_path / "cell")
    assert pd.read_csv(cell["files"]["train"])["label"].value_counts().to_dict() == {"a": 8, "b": 8, "c": 3}
    assert cell["short_classes"] == {"c": 3} and cell["n_pool"] == 43 - 19


def test_scoring_rows_whose_label_never_occurs_in_training_are_left_out_and_counted(data_root):
    write_labels(data_root / "shift", "train.csv", ["a", "b"] * 10)
    write_labels(data_root / "shift", "dev.csv", ["a", "b", "new", "new"])
    files = rows.prepare("shift", data_root / "out")
    assert (files.n_score, files.n_unscorable) == (2, 2)
    assert set(pd.read_csv(files.score, dtype=str)["label"]) == {"a", "b"}


def test_published_rows_of_other_data_sets_come_after_the_named_rows():
    order = ["sst2-1k", "trec"]
    assert sorted(["zeta", "trec", "alpha", "sst2-1k"], key=lambda r: report._row_rank(r, order)) == [
        "sst2-1k", "trec", "alpha", "zeta"]


def test_rows_with_a_blank_text_or_label_are_left_out(data_root, capsys):
    folder = data_root / "gaps"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\ngood,a\n,b\n  ,a\nfine,\nNA,b\n")
    frame = rows.read_texts(folder / "train.csv")
    assert frame.values.tolist() == [["good", "a"], ["NA", "b"]]  # "NA" is a text, not a missing value
    assert "3 rows with a blank text or label left out" in capsys.readouterr().out


def test_a_data_file_without_text_and_label_columns_or_examples_stops_before_any_run(data_root):
    write_labels(data_root / "fine", "train.csv", ["a", "b"] * 5)
    pd.DataFrame({"sentence": ["x", "y"], "label": ["a", "b"]}).to_csv(data_root / "fine" / "dev.csv", index=False)
    with pytest.raises(LookupError, match=r"row fine reads .*fine/dev.csv, which has no column text \(its columns: "
                                          r"sentence, label\): give the file a header row text,label"):
        rows.resolve("fine")
    (data_root / "bare").mkdir()
    (data_root / "bare" / "train.csv").write_text("1,2\n3,4\n")
    with pytest.raises(LookupError, match=r"no column text or label \(its columns: 1, 2\)"):
        rows.resolve("bare")
    (data_root / "bare" / "train.csv").write_text("")
    with pytest.raises(LookupError, match=r"row bare reads .*bare/train.csv, which is empty"):
        rows.resolve("bare")
    (data_root / "bare" / "train.csv").write_text("text,label\n")
    with pytest.raises(LookupError, match=r"row bare reads .*bare/train.csv, which has a header but no examples"):
        rows.resolve("bare")


def test_a_row_no_tool_can_train_or_score_on_stops_the_harness_before_it_writes_anything(data_root, tmp_path,
                                                                                        capsys):
    import run

    write_labels(data_root / "one", "train.csv", ["yes"] * 10)
    write_labels(data_root / "one", "dev.csv", ["yes", "yes"])
    write_labels(data_root / "unseen", "train.csv", ["a", "b"] * 5)
    write_labels(data_root / "unseen", "dev.csv", ["c", "d"])
    with pytest.raises(LookupError, match=r"row one: its training data has only the label 'yes'; a classifier "
                                          r"needs examples of at least two classes"):
        rows.prepare("one", tmp_path / "prepared")
    with pytest.raises(LookupError, match=r"row unseen: no scoring example can be scored \(all 2 have labels that "
                                          r"never occur in training\)"):
        rows.prepare("unseen", tmp_path / "prepared")
    out = tmp_path / "results"
    assert run.main(["--rows", "unseen,one", "--tools", "tfidf", "--out", str(out)]) == 2
    assert "row unseen: no scoring example can be scored" in capsys.readouterr().err
    assert not out.exists()  # no results folder, no worker logs: nothing half-written
