"""strop cv: stratified, disjoint folds; mean ± std and a 95% interval of every metric; runs kept or dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from conftest import write_csv
from strop.cv import cross_validate, fold_indices, summarise
from strop.errors import StropError
from strop.tasks.classification import Classification


def test_folds_are_stratified_disjoint_and_cover_every_row():
    targets = ["a"] * 50 + ["b"] * 23 + ["c"] * 7
    folds = fold_indices(targets, 5, seed=0)
    assert len(folds) == 5
    held_out = [set(test.tolist()) for _, test in folds]
    assert sum(len(h) for h in held_out) == len(targets) and set().union(*held_out) == set(range(len(targets)))
    for (train, test), other in zip(folds, held_out):
        assert set(train.tolist()).isdisjoint(test.tolist()) and len(train) + len(test) == len(targets)
        counts = Counter(targets[i] for i in test)
        # each class spread over the folds as evenly as it can be: 10 of a, 4 or 5 of b, 1 or 2 of c
        assert counts["a"] == 10 and counts["b"] in (4, 5) and counts["c"] in (1, 2)
    assert all(a.isdisjoint(b) for i, a in enumerate(held_out) for b in held_out[i + 1:])


def test_the_rows_of_a_repeated_input_stay_in_one_fold():
    texts = [f"text {i}" for i in range(40)]
    targets = ["a", "b"] * 20
    inputs = texts + texts[:10] + texts[:4]  # 14 repeats, two of them twice
    repeated_targets = targets + targets[:10] + targets[:4]
    for folds in (fold_indices(repeated_targets, 4, seed=0, inputs=inputs),
                  fold_indices([[0.5 * i] for i in range(40)] + [[0.5 * i] for i in range(14)], 3, seed=0,
                               inputs=inputs)):  # plain k-fold too
        held_out = sorted(i for _, test in folds for i in test.tolist())
        assert held_out == list(range(len(inputs)))  # still every row, once
        for train, test in folds:
            assert not {inputs[i] for i in train} & {inputs[i] for i in test}
    stratified = fold_indices(repeated_targets, 4, seed=0, inputs=inputs)
    assert [sorted(Counter(inputs[i] for i in test).values())[-1] for _, test in stratified] != [1] * 4
    # no input repeated: the folds of the rows themselves
    distinct = fold_indices(targets, 4, seed=0, inputs=texts)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(distinct, fold_indices(targets, 4, seed=0)))
    with pytest.raises(StropError, match="class 'b' has only 2 distinct inputs"):
        fold_indices(["a"] * 10 + ["b"] * 4, 3, seed=0, inputs=[f"t{i}" for i in range(10)] + ["x", "y", "x", "y"])


def test_folds_differ_by_seed_and_plain_kfold_for_numbers():
    targets = ["x", "y"] * 20
    first, second = fold_indices(targets, 4, seed=1), fold_indices(targets, 4, seed=2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, second))
    numeric = fold_indices([0.5 * i for i in range(10)], 3, seed=0)  # regression targets: no classes to keep
    assert sorted(i for _, test in numeric for i in test.tolist()) == list(range(10))
    # a regression's targets as the task reads them, one number or several a row: not label sets
    for targets in ([[0.5 * i] for i in range(10)], [[float(i), -float(i)] for i in range(10)]):
        folds = fold_indices(targets, 3, seed=0)
        assert sorted(i for _, test in folds for i in test.tolist()) == list(range(10))


def test_a_regression_fold_of_one_example_is_refused_naming_the_folds_that_work():
    targets = [[0.5 * i] for i in range(6)]
    with pytest.raises(StropError, match=r"--folds 5: the 6 examples leave folds of 1 held out, on which r2 and "
                                         r"spearman cannot be computed; use --folds 3 or fewer"):
        fold_indices(targets, 5, seed=0)
    assert min(len(test) for _, test in fold_indices(targets, 3, seed=0)) == 2  # the fix named works


def test_too_few_examples_of_a_class_is_refused_with_the_fix():
    with pytest.raises(StropError, match="class 'b' has only 2 examples.*--folds 2"):
        fold_indices(["a"] * 10 + ["b"] * 2, 5, seed=0)
    # one example of a class: no number of folds holds it in every one, so the fix is not a smaller --folds
    with pytest.raises(StropError, match="class 'b' has only 1 example, .*add examples of it, or drop it"):
        fold_indices(["a"] * 10 + ["b"], 2, seed=0)
    # where each run splits its validation set off its fold, the fix named is one that passes that check too
    with pytest.raises(StropError, match=r"class 'b' has only 2 examples.*; add examples of it, or give "
                                         r"data.validation=FILE for every run to validate on and use --folds 2$"):
        fold_indices(["a"] * 10 + ["b"] * 2, 3, seed=0, inner_split=True)  # with the file, 3 folds still fail
    assert len(fold_indices(["a"] * 10 + ["b"] * 2, 2, seed=0)) == 2  # the fix named: a file and --folds 2
    with pytest.raises(StropError, match=r"class 'b' has only 3 examples.*; use --folds 3, or add examples"):
        fold_indices(["a"] * 10 + ["b"] * 3, 5, seed=0, inner_split=True)  # 2 folds would leave 1 to train on
    with pytest.raises(StropError, match=r"class 'b' has only 4 examples.*; use --folds 2 to 4, or add examples"):
        fold_indices(["a"] * 10 + ["b"] * 4, 5, seed=0, inner_split=True)


def test_folds_whose_runs_could_not_split_off_a_validation_set_are_refused_before_any_run():
    with pytest.raises(StropError, match="every example has the label 'a'"):
        fold_indices(["a"] * 10, 2, seed=0)
    # 2 of 'b' in 2 folds: each fold trains on 1, and its run cannot split a validation set off 1
    with pytest.raises(StropError, match=r"class 'b' has 2 examples, so a fold trains on 1.*add examples of it, or "
                                         r"give data.validation=FILE"):
        fold_indices(["a"] * 10 + ["b"] * 2, 2, seed=0, inner_split=True)
    # 3 of 'b': in 2 folds one trains on 1; in 3 folds every fold trains on 2
    with pytest.raises(StropError, match="use --folds 3 or more"):
        fold_indices(["a"] * 10 + ["b"] * 3, 2, seed=0, inner_split=True)
    assert len(fold_indices(["a"] * 10 + ["b"] * 3, 3, seed=0, inner_split=True)) == 3
    assert len(fold_indices(["a"] * 10 + ["b"] * 2, 2, seed=0)) == 2  # a validation file: nothing to split


def test_a_label_that_a_fold_holds_out_of_training_is_refused_for_label_sets():
    sets = [["a"], ["b"], ["a", "b"], ["c"]] * 5 + [["a", "e"], ["b", "e"]]  # 'e' twice: both in one fold at seed 0
    with pytest.raises(StropError, match=r"fold \d holds every example of label\(s\) e out of its training rows.*"
                                         r"use fewer folds, or draw other folds with another train.seed"):
        fold_indices(sets, 3, seed=0)
    with pytest.raises(StropError, match=r"add examples of them, or draw other folds"):  # no fewer than 2 folds
        fold_indices(sets, 2, seed=0)
    assert len(fold_indices(sets[:-2], 3, seed=0)) == 3
    # 'e' once: no folds and no seed keep it in every fold's training rows, so neither is offered as the fix
    with pytest.raises(StropError, match=r"label\(s\) e of the training data have one example each: .* needs 2 of "
                                         r"each label: add examples of them, or drop them$"):
        fold_indices(sets[:-1], 2, seed=7)


def test_too_many_folds_for_a_few_examples_of_each_class_names_folds_that_work():
    """2 of each class and --folds 5 named --folds 4, which the class check then refused."""
    with pytest.raises(StropError, match=r"class 'a' has only 2 examples, too few to appear in every fold; use "
                                         r"--folds 2, or add examples"):
        fold_indices(["a", "a", "b", "b"], 5, seed=0)


def test_labels_that_look_like_amounts_get_a_hint_at_regression():
    amounts = [str(v) for v in range(100, 130)] + ["100"]  # 30 different numbers, most once
    with pytest.raises(StropError, match="30 different numbers: if they are amounts rather than classes, give "
                                         "task.name=regression"):
        fold_indices(amounts, 2, seed=0)
    with pytest.raises(StropError) as refused:
        fold_indices(["1", "2"] * 5 + ["3"], 2, seed=0)  # three numbered classes: classes, not amounts
    assert "regression" not in str(refused.value)


def test_summary_mean_std_and_t_interval():
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2 degrees of freedom) * std / sqrt(n)
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    assert summarise([0.7])["std"] is None
    # two folds: t(0.975, 1) = 12.7 standard errors, cut to the values a loss and an accuracy can take
    ranges = Classification.metric_ranges
    assert summarise([0.05, 0.065], ranges["loss"])["ci95"][0] == 0.0
    assert summarise([0.98, 1.0], ranges["accuracy"])["ci95"][1] == 1.0
    assert summarise([0.98, 1.0])["ci95"][1] > 1.0  # uncut without bounds


def test_cv_scores_every_fold_and_drops_its_runs(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith(("output_dir", "data.validation", "train.epochs"))]
    # 8 epochs: the tiny model needs about 70 steps to learn the task from 72 examples
    result = cross_validate(None, overrides + ["train.epochs=8"], folds=2, seeds=2, output=tmp_path / "cv",
                            quiet=True)
    assert [(r["seed"], r["fold"]) for r in result["runs"]] == [(42, 1), (42, 2), (43, 1), (43, 2)]
    assert all(r["scored_examples"] == 80 and r["train_examples"] == 80 for r in result["runs"])
    assert all(r["trained_on"] == 72 for r in result["runs"])  # 10% of the fold's rows validated each run
    assert result["majority_share"] == 0.5  # 80 positive, 80 negative: what the report compares accuracy with
    accuracies = [r["metrics"]["accuracy"] for r in result["runs"]]
    summary = result["summary"]["accuracy"]
    assert set(result["summary"]) == {"accuracy", "macro_f1", "loss"}
    assert summary["mean"] == pytest.approx(np.mean(accuracies)) and summary["n"] == 4
    assert summary["mean"] > 0.6 and summary["ci95"][0] < summary["mean"] < summary["ci95"][1]
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["summary"] == result["summary"]
    assert not (tmp_path / "cv" / "runs").exists()
    assert len(list((tmp_path / "cv" / "folds").glob("*.parquet"))) == 8
    # Its report: every run's scores and the summary, from cv.json.
    page = (tmp_path / "cv" / "report.html").read_text()
    assert 'id="scores"' in page and 'id="runs"' in page and page.count("data:image/png;base64,") == 1
    assert f"{summary['mean']:.4f}" in page and all(f"{a:.4f}" in page for a in accuracies)


def test_cli_keeps_the_runs_when_asked_and_refuses_a_used_folder(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith(("output_dir", "data.validation", "train.epochs",
                                                                "train.quiet"))]
    out = tmp_path / "cv"
    command = [sys.executable, "-m", "strop", "cv", *overrides, "train.epochs=1", "train.keep_checkpoint=false",
               "--folds", "2", "--output", str(out), "--keep-runs"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout and "95% interval" in done.stdout
    assert (out / "runs" / "seed42-fold1" / "model" / "strop.json").is_file()
    assert not (out / "runs" / "seed42-fold1" / "checkpoints").exists()  # as train.keep_checkpoint=false asks
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "already holds files" in again.stderr


def test_seeds_past_what_numpy_takes_and_an_output_that_cannot_be_made_are_refused_before_any_run(tiny_overrides,
                                                                                                    tmp_path):
    from strop.config import MAX_SEED

    overrides = [o for o in tiny_overrides if not o.startswith("output_dir")]
    with pytest.raises(StropError, match=f"train.seed must be a whole number from 0 to {MAX_SEED - 1} \\(with 2 "):
        cross_validate(None, overrides + [f"train.seed={MAX_SEED}"], folds=2, seeds=2, output=tmp_path / "cv")
    with pytest.raises(StropError, match="--output /proc/strop-cv: a folder that cannot be made or written here"):
        cross_validate(None, overrides, folds=2, seeds=1, output="/proc/strop-cv")
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("command", ["cv", "curve"])
def test_a_study_into_a_folder_another_study_is_using_is_refused_and_removes_nothing(command, tiny_overrides, tmp_path,
                                                                                    monkeypatch):
    """Two studies started together into one --output both found it empty; the one that then lost the race to a
    run's lock removed the folder, or the runs the other was training, as it failed."""
    from pathlib import Path

    import strop.cv
    from strop.curve import learning_curve
    from strop.runs import lock_study

    out = tmp_path / "study"
    out.mkdir()
    (out / "runs").mkdir()
    (out / "runs" / "the first study's run").write_text("")
    held = lock_study(out, command)  # the first study, still running
    real = strop.cv.open_study

    def found_it_empty(output, cfg, *rest):  # as both did
        return Path(output), None, real(tmp_path / "empty", cfg, *rest)[2]

    monkeypatch.setattr(strop.cv, "open_study", found_it_empty)
    overrides = [o for o in tiny_overrides if not o.startswith("output_dir")]
    try:
        with pytest.raises(StropError, match=f"--output {out} is in use by another strop {command} that is still "):
            if command == "cv":
                cross_validate(None, overrides, folds=2, seeds=1, output=out, quiet=True)
            else:
                learning_curve(None, overrides, fractions=(0.3, 0.6, 1.0), seeds=1, output=out, quiet=True)
    finally:
        held.close()
    assert (out / "runs" / "the first study's run").is_file()


def test_one_fold_repeats_seeds_on_the_configs_own_split(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith(("output_dir", "train.epochs"))]
    result = cross_validate(None, overrides + ["train.epochs=1"], folds=1, seeds=2, output=tmp_path / "cv", quiet=True)
    assert [r["seed"] for r in result["runs"]] == [42, 43] and result["scored_on"] == "the run's validation data"


def test_one_fold_with_method_auto_says_and_records_the_method_its_runs_train_with(tiny_overrides, tmp_path,
                                                                                   monkeypatch, capsys):
    trained = []
    monkeypatch.setattr("strop.cv.fit_and_score", lambda cfg, *a, **k: trained.append((cfg.method.name,
                                                                                      k["method_choice"]))
                        or ({"accuracy": 0.8, "macro_f1": 0.8, "loss": 0.5}, 72))
    overrides = [o for o in tiny_overrides if not o.startswith(("output_dir", "train.quiet"))]
    result = cross_validate(None, overrides + ["method.name=auto"], folds=1, seeds=2, output=tmp_path / "cv")
    chosen = result["config"]["method"]["name"]
    assert chosen != "auto" and [name for name, _ in trained] == [chosen, chosen]
    # each run records the choice and its reason in its provenance.json (a kept run's report shows it)
    assert all(choice["asked"] == "auto" and choice["chosen"] == chosen and choice["why"] for _, choice in trained)
    assert f"method auto -> {chosen} in every run" in capsys.readouterr().out


def test_a_continued_cv_measures_what_an_uninterrupted_one_does(tiny_overrides, tmp_path, monkeypatch):
    from strop import cv

    overrides = [o for o in tiny_overrides if not o.startswith(("output_dir", "data.validation", "train.epochs"))]
    overrides += ["train.epochs=1"]
    whole = cross_validate(None, overrides, folds=2, seeds=1, output=tmp_path / "whole", quiet=True)
    real, calls = cv.fit_and_score, []

    def interrupted_in_the_second_run(cfg, train_file, score_file, seed, run_dir, keep_run, **_):
        calls.append(run_dir)
        if len(calls) == 2:
            run_dir.mkdir(parents=True)  # the run had begun: its folder is there, unfinished
            (run_dir / "metrics.jsonl").write_text("")
            raise KeyboardInterrupt
        return real(cfg, train_file, score_file, seed, run_dir, keep_run)

    monkeypatch.setattr(cv, "fit_and_score", interrupted_in_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        cross_validate(None, overrides, folds=2, seeds=1, output=tmp_path / "cv", quiet=True, keep_runs=True)
    monkeypatch.setattr(cv, "fit_and_score", real)
    continued = cross_validate(None, overrides + ["train.resume=true"], folds=2, seeds=1, output=tmp_path / "cv",
                               quiet=True, keep_runs=True)
    assert [r["metrics"] for r in continued["runs"]] == [r["metrics"] for r in whole["runs"]]
    assert continued["summary"] == whole["summary"]
    assert (tmp_path / "cv" / "runs" / "seed42-fold2" / "model" / "strop.json").is_file()


def test_fold_files_hold_mixed_json_columns_as_the_task_reads_them(tmp_path):
    from strop.config import DataConfig
    from strop.cv import write_rows
    from strop.data.tables import read_table
    from strop.tasks import TASKS

    lines = [{"id": i if i % 2 else f"x{i}", "text": f"text {i}", "label": 1 if i % 3 else "neg"} for i in range(9)]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    frame = read_table(tmp_path / "mixed.jsonl")
    fold = write_rows(frame, np.array([4, 0, 3]), tmp_path / "fold.parquet")
    task = TASKS.get("text_classification")
    read = [task.read(path, DataConfig(), "text", "data.train") for path in (tmp_path / "mixed.jsonl", fold)]
    assert read[1].inputs == [read[0].inputs[i] for i in (0, 3, 4)]
    assert read[1].targets == [read[0].targets[i] for i in (0, 3, 4)] == ["neg", "neg", "1"]


@pytest.mark.parametrize("command", ["cv", "curve", "fit"])
def test_a_study_refuses_a_file_as_its_folder_and_cv_and_curve_refuse_a_pool(command, tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("output_dir")]
    pool = write_csv(tmp_path / "pool.csv", [("some text", ""), ("more text", "")])
    (tmp_path / "afile").write_text("")
    where = ["--output", str(tmp_path / "afile")] if command != "fit" else [f"output_dir={tmp_path / 'afile'}"]
    done = subprocess.run([sys.executable, "-m", "strop", command, *overrides, f"data.unlabeled={pool}", *where],
                          capture_output=True, text=True)
    if command == "fit":  # self-training
        assert done.returncode == 2 and "afile is a file, not a folder; choose another output_dir" in done.stderr
    else:  # the pool is refused first, then (without it) the file
        assert done.returncode == 2 and f"data.unlabeled is not used by strop {command}" in done.stderr
        done = subprocess.run([sys.executable, "-m", "strop", command, *overrides, *where], capture_output=True,
                              text=True)
        assert done.returncode == 2 and "afile is a file, not a folder; choose another --output" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_note_about_the_labels_is_said_once_not_again_for_each_fold(tiny_overrides, tmp_path, capsys):
    from conftest import make_texts, write_csv

    rows = [(text, label.capitalize() if i % 5 == 0 else label) for i, (text, label) in enumerate(make_texts(60, 4))]
    train = write_csv(tmp_path / "cased.csv", rows)
    overrides = [o for o in tiny_overrides if not o.startswith("data.")] + [f"data.train={train}", "train.epochs=1"]
    cross_validate(None, overrides, folds=2, seeds=1, output=tmp_path / "cv", quiet=True)
    err = capsys.readouterr().err
    assert err.count("differ only in case") == 1 and "cased.csv" in err  # the user's file, not a fold's


def test_train_quiet_in_the_config_quiets_the_study_as_it_quiets_a_fit(tiny_overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("strop.cv.fit_and_score", lambda *a, **k: ({"accuracy": 0.8, "macro_f1": 0.8, "loss": 0.5}, 72))
    loud = [o for o in tiny_overrides if not o.startswith(("output_dir", "train.quiet"))]
    cross_validate(None, loud, folds=2, seeds=1, output=tmp_path / "loud")
    assert "95% interval" in capsys.readouterr().out
    cross_validate(None, loud + ["train.quiet=true"], folds=2, seeds=1, output=tmp_path / "quiet")
    assert capsys.readouterr().out == ""


def test_data_fingerprints_follow_what_the_readers_read(tmp_path):
    """An image folder's fingerprint ignores the files its reader passes over (.DS_Store, Thumbs.db) and changes
    with an image replaced by one of the same size; a missing file has none, so its reader says it is missing."""
    import os

    from strop.runs import data_fingerprints

    (tmp_path / "images" / "cat").mkdir(parents=True)
    image = tmp_path / "images" / "cat" / "a.png"
    image.write_bytes(b"\x89PNG one")
    first = data_fingerprints(train=str(tmp_path / "images"))["train"]
    (tmp_path / "images" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "images" / "cat" / "Thumbs.db").write_bytes(b"x")
    assert data_fingerprints(train=str(tmp_path / "images"))["train"] == first
    image.write_bytes(b"\x89PNG two")  # the same size, another image
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1_000_000_000))
    assert data_fingerprints(train=str(tmp_path / "images"))["train"] != first
    assert data_fingerprints(train=str(tmp_path / "nope.csv"), validation=None) == {"train": None, "validation": None}


def test_a_missing_file_is_said_as_a_fit_says_it_not_a_traceback(tiny_overrides, tmp_path):
    with pytest.raises(StropError, match="data.validation: file not found"):
        cross_validate(None, [*tiny_overrides, f"data.validation={tmp_path / 'nope.csv'}"], folds=2,
                       output=tmp_path / "cv", quiet=True)
    assert not (tmp_path / "cv").exists()


def test_continuing_a_study_in_a_folder_that_holds_none_is_refused_not_started_again(tiny_overrides, tmp_path,
                                                                                     monkeypatch):
    """A mistyped --output with train.resume=true trained the whole study again, as a new one."""
    from strop.curve import learning_curve

    monkeypatch.setattr("strop.cv.fit_and_score", lambda *a, **k: pytest.fail("a run was trained"))
    with pytest.raises(StropError, match="holds no study to continue .* without train.resume=true"):
        cross_validate(None, [*tiny_overrides, "train.resume=true"], folds=2, output=tmp_path / "typo", quiet=True)
    with pytest.raises(StropError, match="holds no study to continue"):
        learning_curve(None, [*tiny_overrides, "train.resume=true"], fractions=(0.3, 0.6, 1.0),
                       output=tmp_path / "typo", quiet=True)
    assert not (tmp_path / "typo").exists()


def test_a_study_shows_its_runs_progress_and_each_runs_time(tiny_overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)  # a log's line after every batch
    loud = [o for o in tiny_overrides if not o.startswith(("output_dir", "train.quiet", "data.validation",
                                                           "train.epochs"))]
    cross_validate(None, loud + ["train.epochs=2"], folds=2, seeds=1, output=tmp_path / "cv")
    captured = capsys.readouterr()
    folds = [line for line in captured.out.splitlines() if line.startswith("seed 42 fold")]
    assert len(folds) == 2 and folds[0].endswith(" left)") and folds[1].endswith(" s)")  # the last: none left
    assert "seed 42 fold 2/2, epoch 2/2: " in captured.err  # the run itself printed nothing, its bars showed
    assert "run saved to" not in captured.out
