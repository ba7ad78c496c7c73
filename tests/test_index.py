"""The run index: fit records its runs (running, complete, interrupted), writers in several processes at once
lose nothing, and `strop runs` lists, filters, sorts, shows and compares them."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import strop
from strop.cli import main
from strop.index import INDEX_FILE, list_runs, record_run


def _vectors(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["y"] = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "high", "low")
    frame.to_csv(path, index=False)
    return path


def _fit_overrides(tmp_path: Path, name: str) -> list[str]:
    return ["model.name=mlp", "task.name=text_classification", "model.hidden=[8]",
            f"data.train={_vectors(tmp_path / 'train.csv', 120, 1)}",
            f"data.validation={_vectors(tmp_path / 'dev.csv', 40, 2)}", "data.label_column=y",
            f"output_dir={tmp_path / 'runs' / name}", "train.epochs=2", "train.patience=0", "train.quiet=true",
            "train.mixed_precision=no"]


def _fake_run(folder: Path, name: str, lr: float, accuracy: float | None, loss: float | None = None,
              batch_size: int = 16) -> Path:
    """A run directory as fit leaves it (config.yaml, summary.json when complete), without the training."""
    run = folder / name
    run.mkdir(parents=True)
    config = strop.load_config(None, [f"optim.lr={lr}", f"train.batch_size={batch_size}", "task.name=text_classification",
                                      f"output_dir={run}"]).to_dict()
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    if accuracy is not None:
        (run / "summary.json").write_text(json.dumps({
            "metric": "accuracy", "best_epoch": 2, "epochs_run": 3, "train_seconds": 1.5,
            "validation": {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "loss": loss}}), encoding="utf-8")
    return run


def test_fit_records_its_run_running_then_complete_with_config_and_metrics(tmp_path, monkeypatch):
    import importlib

    fit_module = importlib.import_module("strop.fit")  # `strop.fit` is also the function
    statuses = []
    record = fit_module.record_run
    monkeypatch.setattr(fit_module, "record_run", lambda run, status, *a, **k: (statuses.append(status),
                                                                                 record(run, status, *a, **k)))
    run = strop.fit(None, _fit_overrides(tmp_path, "a"))
    assert statuses == ["running", "complete"]
    [row] = list_runs(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert row["name"] == "a" and row["status"] == "complete" and row["kind"] == "run"
    assert row["task"] == "text_classification" and row["model"] == "mlp" and row["metric"] == "accuracy"
    assert row["metrics"] == summary["validation"] and row["epochs"] == 2
    assert row["config"] == yaml.safe_load((run / "config.yaml").read_text())


def test_an_interrupted_fit_is_recorded_so_and_its_resumption_completes_it(tmp_path, monkeypatch):
    from conftest import interrupt_after_checkpoint

    overrides = _fit_overrides(tmp_path, "b")
    interrupt_after_checkpoint(monkeypatch, lambda: strop.fit(None, overrides))
    [row] = list_runs(tmp_path / "runs")
    assert row["status"] == "interrupted" and row["error"] == "interrupted" and row["epochs"] == 1
    assert row["metrics"]["accuracy"] == json.loads((tmp_path / "runs/b/metrics.jsonl").read_text())["val_accuracy"]
    strop.fit(None, [*overrides, "train.resume=true"])
    [row] = list_runs(tmp_path / "runs")
    assert row["status"] == "complete" and row["error"] is None and row["epochs"] == 2
    # its config.yaml describes the run, not the command that continued it: it trains again as it is
    saved = tmp_path / "runs" / "b" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["train"]["resume"] is False
    again = strop.fit(str(saved), [f"output_dir={tmp_path / 'runs' / 'again'}"])
    assert json.loads((again / "summary.json").read_text())["validation"] == row["metrics"]


def test_a_run_whose_fit_is_gone_is_interrupted_and_one_holding_its_lock_is_running(tmp_path):
    folder = tmp_path / "runs"
    run = _fake_run(folder, "r", 1e-4, None)
    record_run(run, "running")
    assert list_runs(folder)[0]["status"] == "interrupted"  # killed: no process holds its lock
    with (run / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as fit holds it while it runs
        assert list_runs(folder)[0]["status"] == "running"


def test_a_new_run_in_a_removed_runs_place_does_not_show_its_scores(tmp_path):
    import shutil

    folder = tmp_path / "runs"
    record_run(_fake_run(folder, "r", 1e-4, 0.8, 0.5), "complete")
    assert list_runs(folder)[0]["metrics"]["accuracy"] == 0.8
    shutil.rmtree(folder / "r")  # removed by hand; a new run of that name starts
    record_run(_fake_run(folder, "r", 1e-4, None), "running")
    [row] = list_runs(folder)
    assert row["metrics"] == {} and row["best_epoch"] is None and row["epochs"] is None


def test_a_run_whose_task_names_no_metric_yet_is_read_by_its_loss(tmp_path):
    folder = tmp_path / "runs"
    run = _fake_run(folder, "p", 1e-4, None)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["task"]["name"] = "auto"  # as strop pretrain's config keeps it until its summary says masked_lm
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_loss": loss}) + "\n"
                                               for e, loss in ((1, 3.0), (2, 2.5), (3, 2.7))))
    record_run(run, "interrupted")
    [row] = list_runs(folder)
    assert row["metric"] == "loss" and row["best_epoch"] == 2 and row["metrics"] == {"loss": 2.5}


def test_runs_the_index_lacks_are_added_from_their_files(tmp_path):
    folder = tmp_path / "runs"
    _fake_run(folder, "old", 1e-4, 0.8, 0.5)
    assert not (folder / INDEX_FILE).exists()
    [row] = list_runs(folder)
    assert row["name"] == "old" and row["status"] == "complete" and row["metrics"]["accuracy"] == 0.8
    assert (folder / INDEX_FILE).is_file()


def test_writers_in_several_processes_at_once_lose_nothing(tmp_path):
    folder = tmp_path / "runs"
    for i in range(40):
        _fake_run(folder, f"run-{i:02d}", 1e-4, 0.5 + i / 100, 0.5)
    shared = _fake_run(folder, "shared", 1e-4, 0.9, 0.1)
    script = ("import sys; from pathlib import Path; from strop.index import record_run\n"
              "folder, worker = Path(sys.argv[1]), int(sys.argv[2])\n"
              "for i in range(worker, 40, 4):\n"
              "    record_run(folder / f'run-{i:02d}', 'complete')\n"
              "    record_run(folder / 'shared', 'running', trial=worker)\n")
    workers = [subprocess.Popen([sys.executable, "-c", script, str(folder), str(w)], stderr=subprocess.PIPE, text=True)
               for w in range(4)]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert all(w.returncode == 0 for w in workers) and not any("warning" in e for e in errors), errors
    with sqlite3.connect(folder / INDEX_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = sorted(r[0] for r in db.execute("SELECT name FROM runs"))
    assert names == sorted([f"run-{i:02d}" for i in range(40)] + ["shared"])
    rows = {r["name"]: r for r in list_runs(folder)}
    assert rows["run-07"]["metrics"]["accuracy"] == pytest.approx(0.57)
    assert rows["shared"]["trial"] in range(4) and shared.is_dir()


@pytest.fixture
def three_runs(tmp_path) -> Path:
    folder = tmp_path / "runs"
    for name, lr, accuracy, loss, batch in (("a", 1e-4, 0.80, 0.50, 16), ("b", 3e-4, 0.90, 0.30, 32),
                                            ("c", 1e-3, 0.85, 0.40, 16)):
        record_run(_fake_run(folder, name, lr, accuracy, loss, batch), "complete")
    record_run(_fake_run(folder, "d", 1e-5, None), "failed", "the training loss became nan")
    return folder


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_strop_runs_lists_filters_and_sorts_best_first(three_runs, capsys):
    assert main(["runs", "--dir", str(three_runs)]) == 0
    lines = _lines(capsys)
    assert lines[0].split()[:5] == ["name", "status", "task", "model", "method"] and "accuracy" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["a", "b", "c", "d"]
    assert lines[4].split()[1] == "failed"

    assert main(["runs", str(three_runs), "--sort", "accuracy"]) == 0  # higher is better: first
    assert [line.split()[0] for line in _lines(capsys)[1:]] == ["b", "c", "a", "d"]  # no score: last
    assert main(["runs", str(three_runs), "--sort", "loss"]) == 0  # lower is better: first
    assert [line.split()[0] for line in _lines(capsys)[1:]] == ["b", "c", "a", "d"]
    assert main(["runs", str(three_runs), "--filter", "status=complete", "--filter", "optim.lr<5e-4",
                 "--sort", "accuracy", "--reverse"]) == 0
    lines = _lines(capsys)
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"] and lines[0].split()[-1] == "optim.lr"
    assert main(["runs", str(three_runs), "--filter", "train.batch_size=32", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["b"]
    assert main(["runs", str(three_runs), "--filter", "accuracy"]) == 2
    assert "must look like KEY=VALUE" in capsys.readouterr().err
    assert main(["runs", str(three_runs), "--limit", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["runs", str(three_runs), "--limit", "-1"]) == 2  # it showed every run but the last
    assert "--limit must be a number of runs >= 1; got -1" in capsys.readouterr().err
    # a key no run has is a typo, not a filter that matches nothing or a sort by nothing
    for option, value, near in (("--filter", "optim.lrr<1e-4", "optim.lr"), ("--sort", "accuarcy", "accuracy"),
                                ("--columns", "name,nosuch", None)):
        assert main(["runs", str(three_runs), option, value]) == 2
        said = capsys.readouterr().err
        assert f"{option}: no run has '{value.split('<')[0].split(',')[-1]}'" in said
        assert near is None or f"did you mean '{near}'?" in said


def test_strop_runs_show_and_diff(three_runs, capsys):
    assert main(["runs", "show", "d", "--dir", str(three_runs)]) == 0
    out = capsys.readouterr().out
    assert "d  (run, failed)" in out and "error: the training loss became nan" in out and "lr: 1.0e-05" in out
    assert main(["runs", "show", str(three_runs / "b")]) == 0  # a path works from anywhere
    assert "accuracy: 0.9" in capsys.readouterr().out

    assert main(["runs", "diff", "a", "b", "--dir", str(three_runs)]) == 0
    out = capsys.readouterr().out
    assert "optim.lr          0.0001 -> 0.0003" in out and "train.batch_size  16 -> 32" in out
    assert "output_dir" not in out  # every run has its own
    assert "accuracy  0.8 -> 0.9  (+0.1, better)" in out and "loss      0.5 -> 0.3  (-0.2, better)" in out
    assert main(["runs", "diff", "a", "c", "--dir", str(three_runs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"] == {"optim.lr": [1e-4, 1e-3]}
    assert result["metrics"]["accuracy"]["delta"] == pytest.approx(0.05) and result["metrics"]["accuracy"]["better"]
    assert main(["runs", "show", "zzz", "--dir", str(three_runs)]) == 2
    assert "no run 'zzz'" in capsys.readouterr().err
    assert main(["runs", "show", "aa", "--dir", str(three_runs)]) == 2
    assert "did you mean 'a'? runs there: a, b, c, d" in capsys.readouterr().err


def test_a_fit_that_fails_before_its_first_checkpoint_leaves_neither_run_nor_entry(tmp_path, monkeypatch):
    import strop.train.loop as loop

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loop, "save_checkpoint", broken)
    with pytest.raises(RuntimeError):
        strop.fit(None, _fit_overrides(tmp_path, "gone"))
    assert not (tmp_path / "runs" / "gone").exists()
    assert (tmp_path / "runs" / INDEX_FILE).is_file()  # it was recorded as running when it started
    assert list_runs(tmp_path / "runs") == []  # and forgotten when its run was removed
    (tmp_path / "runs" / "mine").mkdir()  # a folder the user made for the run: emptied, not removed
    with pytest.raises(RuntimeError):
        strop.fit(None, _fit_overrides(tmp_path, "mine"))
    assert (tmp_path / "runs" / "mine").is_dir() and list((tmp_path / "runs" / "mine").iterdir()) == []
    assert list_runs(tmp_path / "runs") == []


def test_a_diff_does_not_judge_losses_that_measure_other_things():
    from strop.index import describe_diff, diff

    def row(name, imbalance, loss, accuracy):
        return {"name": name, "task": "text_classification", "config": {"train": {"imbalance": imbalance}},
                "metrics": {"loss": loss, "accuracy": accuracy}}

    result = diff(row("a", "none", 0.50, 0.80), row("b", "focal", 0.20, 0.78))  # a focal loss is smaller
    assert result["metrics"]["loss"]["unlike"] == "train.imbalance" and "better" not in result["metrics"]["loss"]
    assert result["metrics"]["accuracy"]["better"] is False  # the metrics still compare
    assert "(-0.3, not compared: train.imbalance differs)" in describe_diff(result)
    assert diff(row("a", "none", 0.5, 0.8), row("b", "none", 0.2, 0.8))["metrics"]["loss"]["better"]
