"""Self-training (data.unlabeled): pseudo-label selection above the threshold, balanced across classes; the
rounds end to end, each reported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import strop
from conftest import make_texts, write_csv
from strop.errors import StropError
from strop.report import report as rebuild_report
from strop.selftrain import select_pseudo_labels


def test_selection_keeps_confident_rows_balanced_and_most_confident_first():
    probabilities = np.array([
        [0.99, 0.01, 0.0], [0.95, 0.05, 0.0], [0.91, 0.09, 0.0], [0.97, 0.03, 0.0],  # class 0: 4 confident
        [0.05, 0.93, 0.02], [0.0, 0.96, 0.04],  # class 1: 2 confident
        [0.5, 0.3, 0.2], [0.2, 0.2, 0.6],  # below the threshold
    ])
    chosen = select_pseudo_labels(probabilities, 0.9)
    assert chosen.tolist() == [0, 3, 4, 5]  # class 0's two most confident, both of class 1; class 2 has none
    assert np.bincount(probabilities[chosen].argmax(axis=1)).tolist() == [2, 2]
    assert select_pseudo_labels(probabilities, 0.999).size == 0
    assert select_pseudo_labels(probabilities, 0.5).tolist() == [0, 5, 7]  # one per class: class 2's one sets it


def test_selection_takes_the_class_the_model_decides_and_its_probability():
    probabilities = np.array([[0.6, 0.4], [0.7, 0.3], [0.95, 0.05]])
    tuned = np.array([1, 0, 0])  # a tuned threshold of 0.4 on class 1 decides row 0 for class 1
    assert select_pseudo_labels(probabilities, 0.55, tuned).tolist() == [1, 2]  # row 0's 0.4 is not confident
    assert select_pseudo_labels(probabilities, 0.35, tuned).tolist() == [0, 2]  # one a class: the surest of 0
    assert select_pseudo_labels(probabilities, 0.55).tolist() == [0, 1, 2]  # argmax by default: all class 0


def test_pseudo_labels_are_the_models_predictions_under_its_tuned_threshold(tiny_overrides, tmp_path, monkeypatch):
    """A two-class model with imbalance handled predicts the minority class above a tuned threshold, not by the
    most probable class: its pseudo-labels are what `strop predict` says."""
    from dataclasses import replace

    import strop.predict

    train = write_csv(tmp_path / "few.csv", make_texts(60, seed=5))
    pool = write_csv(tmp_path / "pool.csv", [(t, "") for t, _ in make_texts(40, seed=6)])
    load = strop.predict.load
    predicted = []

    def with_a_low_threshold(run):  # as a tuned threshold of 0.01 would decide, on the class argmax picks least
        predictor = load(run)
        texts = [t for t, _ in make_texts(40, seed=6)]
        most_probable = np.stack(predictor.outputs(texts)).argmax(axis=1)
        rare = int(np.bincount(most_probable, minlength=2).argmin())
        predictor.task = replace(predictor.task, positive=rare, threshold=0.01)
        predicted.append((predictor.task.labels[rare], predictor.predict(texts)))
        return predictor

    monkeypatch.setattr(strop.predict, "load", with_a_low_threshold)
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.epochs"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "data.pseudo_label_threshold=0.01", "train.epochs=2"]
    strop.fit(None, overrides)
    trained_on = pd.read_parquet(tmp_path / "run" / "round-1-train.parquet")
    (rare, decided), = predicted
    assert set(decided) == {rare} and len(trained_on) == 100
    assert trained_on["label"][60:].tolist() == [rare] * 40  # argmax labels at least half of them otherwise


def test_rounds_train_on_labels_and_pseudo_labels_and_report_them(tiny_overrides, tmp_path, capsys, monkeypatch):
    train = write_csv(tmp_path / "few.csv", make_texts(100, seed=5))
    labelled_pool = make_texts(80, seed=6)
    # the pool's labels only score the pseudo-labels; every third row has none, and is not scored
    # and every fifth a label the model does not know, which no pseudo-label can match: not scored either
    pool = write_csv(tmp_path / "pool.csv", [(t, "" if i % 3 == 0 else "neutral" if i % 5 == 0 else y)
                                             for i, (t, y) in enumerate(labelled_pool)])
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.epochs"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "data.pseudo_label_threshold=0.5", "train.epochs=8"]
    run = strop.fit(None, overrides)
    out = tmp_path / "run"
    assert run == out / "round-1"
    report = json.loads((out / "self_training.json").read_text())
    first = report["rounds"][1]
    assert report["pool"] == 80 and first["pseudo_labels"] > 0
    counts = list(first["per_class"].values())
    assert len(set(counts)) == 1 and sum(counts) == first["pseudo_labels"]  # balanced across classes
    trained_on = pd.read_parquet(out / "round-1-train.parquet")
    assert len(trained_on) == 100 + first["pseudo_labels"]
    truth = {t: y for i, (t, y) in enumerate(labelled_pool) if i % 3 and i % 5}
    scored = [(y, truth[t]) for t, y in zip(trained_on["text"][100:], trained_on["label"][100:]) if t in truth]
    assert 0 < first["pseudo_labels_with_known_label"] == len(scored) < first["pseudo_labels"]
    assert first["pseudo_label_accuracy"] == pytest.approx(np.mean([g == y for g, y in scored]))
    assert first["pseudo_label_accuracy"] > 0.5
    assert json.loads((run / "summary.json").read_text())["train_examples"] > 90
    assert len(strop.load(run).predict(["great fun"])) == 1
    page = (run / "report.html").read_text()  # the last round's page: every round in it, this one marked
    rounds = page[page.index("Self-training rounds"):]
    assert "<tr><td>0</td><td class=\"num\">0</td>" in rounds and "this page" in rounds
    assert f"<tr><td>1</td><td class=\"num\">{first['pseudo_labels']}</td>" in rounds
    (run / "report.html").unlink()
    assert rebuild_report(out, quiet=True) == run / "report.html"  # the folder's report: its last round's
    assert (run / "report.html").read_text() == page
    texts = ["great fun", "dull and slow"]  # the self-training folder loads as its last round's model
    assert np.array_equal(np.stack(strop.load(out).outputs(texts)), np.stack(strop.load(run).outputs(texts)))
    from strop.distill import distill
    from strop.prune import prune

    loaded = []

    def load_no_further(path, **_):
        loaded.append(Path(path))
        raise StropError("loaded")

    with monkeypatch.context() as patch:  # prune and distill take the last round's run, as compress does
        patch.setattr("strop.predict.load", load_no_further)
        for command in (prune, distill):
            with pytest.raises(StropError, match="loaded"):
                command(out)
    assert loaded == [run, run]
    assert f"is a self-training folder: strop distill takes its last round, {run}" in capsys.readouterr().out
    with monkeypatch.context() as patch:  # train.quiet as the config reads it silences the words too
        patch.setattr("strop.predict.load", load_no_further)
        for command in (prune, distill):
            with pytest.raises(StropError, match="loaded"):
                command(out, overrides=["train.quiet=yes"])
    assert "self-training folder" not in capsys.readouterr().out
    from strop.soup import soup

    report = soup([out, run], tmp_path / "soup", uniform=True)  # a soup of the last round twice: that round
    assert [entry["run"] for entry in report["ingredients"]] == [str(run), str(run)]
    assert f"is a self-training folder: strop soup takes its last round, {run}" in capsys.readouterr().out
    from strop.compress import compress

    compress(out, forms=("int8",), quiet=True)  # as predict reads it: the last round's run, its table kept there
    assert json.loads((run / "compress.json").read_text())["rows"][0]["form"] == "fp32"
    # a fit starts from it as from its last round's run (as predict reads it), not refused as no model
    capsys.readouterr()
    strop.fit(None, [o for o in tiny_overrides if not o.startswith(("output_dir", "train.epochs", "train.quiet"))]
              + [f"model.name={out}", "train.epochs=1", f"output_dir={tmp_path / 'again'}"])
    assert f"starting from {run / 'model'}" in capsys.readouterr().out


def test_without_a_validation_file_every_round_validates_on_one_split_of_the_labelled_data(tiny_overrides,
                                                                                           tmp_path):
    train = write_csv(tmp_path / "few.csv", make_texts(100, seed=5))
    pool = write_csv(tmp_path / "pool.csv", [(t, "") for t, _ in make_texts(80, seed=6)])
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "data.validation", "train.epochs"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "data.pseudo_label_threshold=0.5", "train.epochs=8"]
    run = strop.fit(None, overrides)
    out = tmp_path / "run"
    pseudo_labels = json.loads((out / "self_training.json").read_text())["rounds"][1]["pseudo_labels"]
    trained_on = pd.read_parquet(out / "round-1-train.parquet")
    assert pseudo_labels > 0 and len(trained_on) == 90 + pseudo_labels  # 10 of the 100 validate
    validated = [[json.loads(line)["input"] for line in (out / f"round-{r}" / "validation_predictions.jsonl")
                  .read_text().splitlines()] for r in (0, 1)]
    assert validated[0] == validated[1] and len(validated[0]) == 10  # the same labelled examples in each round
    assert not set(validated[0]) & set(trained_on["text"])  # none of them a pseudo-label or trained on
    assert json.loads((run / "summary.json").read_text())["train_examples"] == len(trained_on)


def test_rounds_stop_where_no_pseudo_label_reaches_the_threshold(tiny_overrides, tmp_path):
    train = write_csv(tmp_path / "few.csv", make_texts(40, seed=5))
    pool = write_csv(tmp_path / "pool.csv", make_texts(20, seed=6))
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.epochs"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "data.pseudo_label_threshold=0.9999999", "train.epochs=1",
        "data.self_training_rounds=2"]
    run = strop.fit(None, overrides)
    report = json.loads((tmp_path / "run" / "self_training.json").read_text())
    assert run == tmp_path / "run" / "round-0" and len(report["rounds"]) == 1  # no round that repeats round 0
    assert report["stopped"].startswith("round 1: no example of the pool reached")
    assert not (tmp_path / "run" / "round-1").exists()


def test_an_interrupted_self_training_continues_and_keeps_its_completed_rounds(tiny_overrides, tmp_path,
                                                                               monkeypatch):
    import strop.selftrain as selftrain

    train = write_csv(tmp_path / "few.csv", make_texts(60, seed=5))
    pool = write_csv(tmp_path / "pool.csv", make_texts(40, seed=6))
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.epochs"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "data.pseudo_label_threshold=0.5", "train.epochs=2"]
    uninterrupted = strop.fit(None, [o for o in overrides if not o.startswith("output_dir")]
                              + [f"output_dir={tmp_path / 'whole'}"])
    fit, calls = selftrain._round, []

    def interrupted_in_round_1(cfg, folder, on_epoch, method_choice):
        calls.append(folder.name)
        if folder.name == "round-1":
            raise KeyboardInterrupt
        return fit(cfg, folder, on_epoch, method_choice)

    monkeypatch.setattr(selftrain, "_round", interrupted_in_round_1)
    with pytest.raises(KeyboardInterrupt):
        strop.fit(None, overrides)
    monkeypatch.undo()
    assert calls == ["round-0", "round-1"]
    with pytest.raises(StropError, match="or continue an interrupted self-training there with train.resume=true"):
        strop.fit(None, overrides)
    original = train.read_bytes()  # rows changed in the same file: round 1 would train on other data than round 0
    train.write_bytes(original.replace(b"good", b"fine", 1))
    with pytest.raises(StropError, match=r"cannot continue the self-training in .*: data.train differs"):
        strop.fit(None, overrides + ["train.resume=true"])
    train.write_bytes(original)
    round_0 = (tmp_path / "run" / "round-0" / "summary.json").read_text()
    run = strop.fit(None, overrides + ["train.resume=true"])
    assert (tmp_path / "run" / "round-0" / "summary.json").read_text() == round_0  # kept, not trained again
    done = json.loads((tmp_path / "run" / "self_training.json").read_text())["rounds"]
    whole = json.loads((tmp_path / "whole" / "self_training.json").read_text())["rounds"]
    assert run == tmp_path / "run" / "round-1" and [r["pseudo_labels"] for r in done] == [
        r["pseudo_labels"] for r in whole]
    assert done[1]["validation"] == whole[1]["validation"]  # as the uninterrupted self-training
    changed = [o for o in overrides if not o.startswith("data.pseudo_label_threshold")]
    with pytest.raises(StropError, match="config differs in data.pseudo_label_threshold"):  # rounds would mix
        strop.fit(None, changed + ["data.pseudo_label_threshold=0.6", "train.resume=true"])


def test_self_training_refuses_other_tasks_and_bad_settings(tiny_overrides, tmp_path):
    with pytest.raises(StropError, match="pseudo_label_threshold"):
        strop.fit(None, tiny_overrides + ["data.unlabeled=x.csv", "data.pseudo_label_threshold=1.5"])
    rows = [(f"text {i}", str(i * 0.5)) for i in range(20)]
    data = write_csv(tmp_path / "reg.csv", rows)
    with pytest.raises(StropError, match="self-training"):
        strop.fit(None, [o for o in tiny_overrides if not o.startswith("data.")]
                  + [f"data.train={data}", "task.name=regression", f"data.unlabeled={data}"])
    (tmp_path / "pool.docx").write_text("not a table")
    with pytest.raises(StropError, match=r"data.unlabeled: cannot read 'pool.docx': use one of \.txt \(one text a "
                                         r"line\), \.csv"):  # .txt pools are taken, and the message said none
        strop.fit(None, tiny_overrides + [f"data.unlabeled={tmp_path / 'pool.docx'}"])
    # a text column that is the label column is refused as a fit refuses it, not as the pool's missing label column
    pool = write_csv(tmp_path / "pool.csv", [(text,) for text, _ in make_texts(10, seed=3)], header=("text",))
    with pytest.raises(StropError, match="data.text_column=label is also the label column"):
        strop.fit(None, tiny_overrides + [f"data.unlabeled={pool}", "data.text_column=label"])


def test_a_text_file_pool_one_text_a_line_self_trains_as_a_table_would(tiny_overrides, tmp_path):
    train = write_csv(tmp_path / "few.csv", make_texts(100, seed=5))
    texts = [text for text, _ in make_texts(80, seed=6)]
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(texts) + "\n\n", encoding="utf-8")  # a blank line at the end is no text
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.epochs"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "data.pseudo_label_threshold=0.5", "train.epochs=8"]
    run = strop.fit(None, overrides)
    report = json.loads((tmp_path / "run" / "self_training.json").read_text())
    first = report["rounds"][1]
    assert report["pool"] == 80 and first["pseudo_labels"] > 0 and "pseudo_label_accuracy" not in first
    trained_on = pd.read_parquet(tmp_path / "run" / "round-1-train.parquet")
    assert len(trained_on) == 100 + first["pseudo_labels"] and set(trained_on["text"][100:]) <= set(texts)
    assert run == tmp_path / "run" / "round-1"
    with pytest.raises(StropError, match=r"a \.txt file holds one text per line, and this run's inputs are text pairs"):
        strop.fit(None, overrides + ["data.text_pair_column=second", f"output_dir={tmp_path / 'pairs'}"])
    assert not (tmp_path / "pairs").exists()


def test_a_self_training_refused_in_round_0_leaves_no_folder(tiny_overrides, tmp_path):
    train = write_csv(tmp_path / "few.csv", make_texts(40, seed=5))
    pool = write_csv(tmp_path / "pool.csv", make_texts(20, seed=6))
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "data.validation"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "method.name=fewshot", "train.batch_size=2"]
    with pytest.raises(StropError, match="train.batch_size=2"):
        strop.fit(None, overrides)
    assert not (tmp_path / "run").exists()


def test_numeric_labels_mixed_columns_and_a_pool_holding_labelled_examples(tiny_overrides, tmp_path, capsys):
    rows = make_texts(100, seed=5)
    labelled = pd.DataFrame({"id": range(100), "text": [t for t, _ in rows],
                             "label": [int(label == "positive") for _, label in rows]})  # int64 labels
    labelled.to_parquet(tmp_path / "few.parquet", index=False)
    fresh_rows = make_texts(60, seed=6)
    fresh = [t for t, _ in fresh_rows]
    # the pool: new texts, with string ids, and 20 of the labelled texts (so the validation ones among them), and
    # 5 of the new ones again; its labels (scoring only) written as floats, every fourth '?' (not known)
    truth = ["?" if i % 4 == 0 else "1.0" if y == "positive" else "0.0" for i, (_, y) in enumerate(fresh_rows)]
    pool = pd.DataFrame({"id": [f"p{i}" for i in range(85)],
                         "text": fresh + labelled["text"][:20].tolist() + fresh[:5],
                         "label": truth + ["?"] * 20 + truth[:5]})
    pool.to_parquet(tmp_path / "pool.parquet", index=False)
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "data.validation", "train.epochs"))] + [
        f"data.train={tmp_path / 'few.parquet'}", f"data.unlabeled={tmp_path / 'pool.parquet'}",
        "data.pseudo_label_threshold=0.5", "train.epochs=8", "train.quiet=false"]
    strop.fit(None, overrides)
    out = tmp_path / "run"
    report = json.loads((out / "self_training.json").read_text())
    assert report["pool"] == 60 and report["pool_rows_in_labelled_data"] == 20 and report["pool_rows_repeated"] == 5
    said = capsys.readouterr().out  # each count with what remains after it: 85 - 20, then - 5
    assert "20 of its rows are examples of data.train or data.validation" in said
    assert re.search(r"20 of its rows are examples .*; 65 remain\n.*5 of its rows repeat .*; 60 remain", said)
    trained_on = pd.read_parquet(out / "round-1-train.parquet")
    validation = pd.read_parquet(out / "validation.parquet")
    assert report["rounds"][1]["pseudo_labels"] > 0 and set(trained_on["label"]) == {"0", "1"}
    assert not set(validation["text"]) & set(trained_on["text"]) and trained_on["text"].is_unique
    # '1.0' is the class '1' (decided on the whole pool's labels), and '?' is a row not scored, not a class that
    # stops the numbers being read as numbers
    first, known = report["rounds"][1], {t: y[0] for t, y in zip(fresh, truth) if y != "?"}
    scored = [(guess, known[t]) for t, guess in zip(trained_on["text"][90:], trained_on["label"][90:]) if t in known]
    assert 0 < first["pseudo_labels_with_known_label"] == len(scored) < first["pseudo_labels"]
    assert first["pseudo_label_accuracy"] == pytest.approx(np.mean([g == y for g, y in scored]))
    (tmp_path / "review.csv").write_text("review\nsome text\n")
    with pytest.raises(StropError, match=r"column 'text' not found in review.csv; columns found: 'review'\. The pool's "
                                         r"texts go in the column the training data's are in \(data.text_column=text\)"):
        strop.fit(None, overrides[:-3] + [f"data.unlabeled={tmp_path / 'review.csv'}", f"output_dir={tmp_path / 'x'}"])
    write_csv(tmp_path / "same.csv", [(t, "") for t in labelled["text"]])
    with pytest.raises(StropError, match="every one of its 100 rows is an example of data.train"):
        strop.fit(None, overrides[:-3] + [f"data.unlabeled={tmp_path / 'same.csv'}", f"output_dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()


def test_an_interrupted_round_says_how_to_continue_the_self_training_not_the_round(tiny_overrides, tmp_path,
                                                                                    monkeypatch, capsys):
    from conftest import interrupt_after_checkpoint

    train = write_csv(tmp_path / "few.csv", make_texts(60, seed=5))
    pool = write_csv(tmp_path / "pool.csv", [(t, "") for t, _ in make_texts(20, seed=6)])
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.quiet"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "train.quiet=false"]
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, overrides))
    said = capsys.readouterr().err
    assert "self-training interrupted; continue it with the same command" in said
    assert "continue the run with: strop fit" not in said  # the round's own hint would continue it alone
    assert said.count("self-training interrupted") == 1


def test_a_round_0_that_fails_to_write_after_a_checkpoint_is_kept_to_continue(tiny_overrides, tmp_path, monkeypatch):
    """A full disk at round 0's second checkpoint removed the whole self-training folder, its first checkpoint
    with it, where the message said to continue with train.resume=true."""
    import strop.train.loop as loop
    from strop.errors import WriteError

    train = write_csv(tmp_path / "few.csv", make_texts(60, seed=5))
    pool = write_csv(tmp_path / "pool.csv", [(t, "") for t, _ in make_texts(20, seed=6)])
    overrides = [o for o in tiny_overrides if not o.startswith("data.train")] + [
        f"data.train={train}", f"data.unlabeled={pool}", "train.epochs=2"]
    save, calls = loop.save_checkpoint, []

    def full_disk_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise WriteError("could not write the checkpoint: [Errno 28] No space left on device")
        save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", full_disk_at_the_second)
    with pytest.raises(WriteError):
        strop.fit(None, overrides)
    assert any((tmp_path / "run" / "round-0" / "checkpoints").iterdir())
    monkeypatch.setattr(loop, "save_checkpoint", save)
    strop.fit(None, overrides + ["train.resume=true"])  # continued from round 0's first checkpoint
    assert json.loads((tmp_path / "run" / "self_training.json").read_text())["rounds"][0]["round"] == 0


def test_an_interrupt_between_rounds_says_how_to_continue(tiny_overrides, tmp_path, monkeypatch, capsys):
    """A Ctrl-C while the pool is pseudo-labelled (after round 0, before round 1) said only 'interrupted'."""
    from strop import selftrain

    train = write_csv(tmp_path / "few.csv", make_texts(60, seed=5))
    pool = write_csv(tmp_path / "pool.csv", [(t, "") for t, _ in make_texts(20, seed=6)])
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.quiet"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "train.epochs=1"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(selftrain, "select_pseudo_labels", interrupted)
    with pytest.raises(KeyboardInterrupt):
        strop.fit(None, overrides)
    said = capsys.readouterr().err
    assert said.count(f"self-training interrupted; continue it with the same command and output_dir={tmp_path / 'run'} "
                      "train.resume=true") == 1


def _vectors(tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """100 labelled vectors of columns a..d in few.csv (the class: a > 0), and 40 fresh unlabelled ones."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(100, 4)).round(3)
    labelled = pd.DataFrame(features, columns=list("abcd")).assign(label=np.where(features[:, 0] > 0, "hi", "lo"))
    labelled.to_csv(tmp_path / "few.csv", index=False)
    return labelled, pd.DataFrame(rng.normal(size=(40, 4)).round(3), columns=list("abcd"))


def test_a_vector_pool_self_trains_and_leaves_out_the_labelled_vectors(tmp_path):
    labelled, fresh = _vectors(tmp_path)
    pd.concat([fresh, labelled[list("abcd")][:20]]).to_csv(tmp_path / "pool.csv", index=False)
    strop.fit(None, ["model.name=mlp", f"data.train={tmp_path / 'few.csv'}", f"data.unlabeled={tmp_path / 'pool.csv'}",
                     "data.pseudo_label_threshold=0.6", "data.self_training_rounds=1", "train.epochs=3",
                     "train.quiet=true", f"output_dir={tmp_path / 'run'}"])
    report = json.loads((tmp_path / "run" / "self_training.json").read_text())
    assert report["pool"] == 40 and report["pool_rows_in_labelled_data"] == 20
    assert report["rounds"][1]["pseudo_labels"] > 0


def test_with_method_auto_every_round_records_the_choice_its_method_came_from(tmp_path):
    _vectors(tmp_path)[1].to_csv(tmp_path / "pool.csv", index=False)
    strop.fit(None, ["model.name=mlp", f"data.train={tmp_path / 'few.csv'}", f"data.unlabeled={tmp_path / 'pool.csv'}",
                     "method.name=auto", "data.pseudo_label_threshold=0.6", "data.self_training_rounds=1",
                     "train.epochs=2", "train.quiet=true", f"output_dir={tmp_path / 'run'}"])
    for name in ("round-0", "round-1"):
        choice = json.loads((tmp_path / "run" / name / "provenance.json").read_text())["method_choice"]
        method = yaml.safe_load((tmp_path / "run" / name / "config.yaml").read_text())["method"]["name"]
        assert choice["asked"] == "auto" and choice["chosen"] == method != "auto" and choice["why"]


def test_a_round_that_validates_worse_than_the_one_before_is_said(tmp_path):
    from strop.selftrain import worse_than_before

    for name, metric in (("r0", "accuracy"), ("r1", "accuracy"), ("l0", "loss"), ("l1", "loss")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"metric": metric}))
    rounds = [{"round": 0, "run": str(tmp_path / "r0"), "validation": {"accuracy": 0.56}},
              {"round": 1, "run": str(tmp_path / "r1"), "validation": {"accuracy": 0.49}}]
    said = worse_than_before(rounds, ("loss",))
    assert said.startswith("round 1 scores accuracy 0.4900 on validation against 0.5600 for round 0: its "
                           "pseudo-labels hurt; the model of round 0 is in " + str(tmp_path / "r0"))
    rounds[1]["validation"]["accuracy"] = 0.60
    assert worse_than_before(rounds, ("loss",)) is None
    losses = [{"round": 0, "run": str(tmp_path / "l0"), "validation": {"loss": 0.5}},
              {"round": 1, "run": str(tmp_path / "l1"), "validation": {"loss": 0.7}}]
    assert "scores loss 0.7000" in worse_than_before(losses, ("loss",))  # a loss is worse when higher
    losses[1]["validation"]["loss"] = 0.4
    assert worse_than_before(losses, ("loss",)) is None


def test_a_vector_pool_is_read_by_the_training_columns_names(tmp_path):
    _, fresh = _vectors(tmp_path)
    fresh[list("dcba")].to_csv(tmp_path / "reordered.csv", index=False)  # the same columns in another order
    overrides = ["model.name=mlp", f"data.train={tmp_path / 'few.csv'}", "data.pseudo_label_threshold=0.5",
                 "train.epochs=3", "train.quiet=true"]
    strop.fit(None, overrides + [f"data.unlabeled={tmp_path / 'reordered.csv'}", f"output_dir={tmp_path / 'run'}"])
    pseudo_labels = json.loads((tmp_path / "run" / "self_training.json").read_text())["rounds"][1]["pseudo_labels"]
    rows = pd.read_parquet(tmp_path / "run" / "round-1-train.parquet").iloc[-pseudo_labels:]
    by_name = strop.load(tmp_path / "run" / "round-0").predict(rows[list("dcba")])  # predict reads a table by name
    assert pseudo_labels > 0 and rows["label"].tolist() == by_name
    # columns the model does not read (an id) are passed over, as predict passes them over
    fresh.assign(id=range(40)).to_csv(tmp_path / "with_id.csv", index=False)
    strop.fit(None, overrides + [f"data.unlabeled={tmp_path / 'with_id.csv'}", f"output_dir={tmp_path / 'id'}"])
    assert json.loads((tmp_path / "id" / "self_training.json").read_text())["rounds"][1]["pseudo_labels"] > 0
    fresh[list("abd")].to_csv(tmp_path / "no_c.csv", index=False)  # refused before round 0, the column named
    with pytest.raises(StropError, match=r"data.unlabeled: no_c.csv lacks the feature column\(s\) 'c' of the "
                                         r"training data; columns found: 'a', 'b', 'd'"):
        strop.fit(None, overrides + [f"data.unlabeled={tmp_path / 'no_c.csv'}", f"output_dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()


def test_an_interrupted_self_training_continues_with_more_rounds_and_refuses_other_settings_as_itself(
        tiny_overrides, tmp_path, monkeypatch):
    from conftest import interrupt_after_checkpoint

    train = write_csv(tmp_path / "few.csv", make_texts(60, seed=5))
    pool = write_csv(tmp_path / "pool.csv", make_texts(40, seed=6))
    overrides = [o for o in tiny_overrides if not o.startswith(("data.train", "train.epochs"))] + [
        f"data.train={train}", f"data.unlabeled={pool}", "data.pseudo_label_threshold=0.5", "train.epochs=2"]
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, overrides))  # in round 0, its epoch 1
    out = tmp_path / "run"
    changed = [o for o in overrides if not o.startswith("data.pseudo_label_threshold")]
    # before round 0 completed, a changed setting is still the self-training's, continued as one: not round 0's
    # own resume (strop fit run/round-0/config.yaml), which would continue that round alone as a plain run
    with pytest.raises(StropError, match=f"cannot continue the self-training in {out}: its config differs in "
                                         r"data.pseudo_label_threshold; .* train.resume=true") as refused:
        strop.fit(None, changed + ["data.pseudo_label_threshold=0.6", "train.resume=true"])
    assert "round-0/config.yaml" not in str(refused.value)
    # continued, and stopped again in round 1 (round 0's epoch 2, then round 1's epoch 1)
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, overrides + ["train.resume=true"]), 2)
    assert (out / "round-0" / "summary.json").is_file() and not (out / "round-1" / "summary.json").exists()
    run = strop.fit(None, overrides + ["data.self_training_rounds=2", "train.resume=true"])  # more rounds asked
    rounds = json.loads((out / "self_training.json").read_text())["rounds"]
    assert run == out / "round-2" and [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["pseudo_labels"] > 0 for r in rounds[1:])


def test_the_pools_label_column_is_checked_whole_before_round_0(tiny_overrides, tmp_path):
    train = write_csv(tmp_path / "few.csv", make_texts(40, seed=5))
    rows = [{"text": t, "label": y} for t, y in make_texts(5, seed=5) + make_texts(40, seed=6)]
    rows[30]["label"] = ["positive"]  # row 31 of the file: the 26th of the pool once data.train's 5 are out
    (tmp_path / "pool.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    overrides = [o for o in tiny_overrides if not o.startswith("data.train")] + [
        f"data.train={train}", f"data.unlabeled={tmp_path / 'pool.jsonl'}", "data.pseudo_label_threshold=0.3"]
    with pytest.raises(StropError, match=r"data.unlabeled: column 'label' of pool.jsonl holds a list in row 31 .*"
                                         r"remove the column 'label'") as refused:
        strop.fit(None, overrides)
    assert "multilabel" not in str(refused.value)  # self-training is single-label: no fix it would refuse
    assert not (tmp_path / "run").exists()  # refused before round 0 trained
