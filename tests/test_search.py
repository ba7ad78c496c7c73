"""strop search: the space checked, a search on an MLP that completes, prunes and keeps its best run, and a
search killed mid-trial that continues with no trial lost or run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

optuna = pytest.importorskip("optuna")

from strop.config import load_config  # noqa: E402
from strop.errors import StropError  # noqa: E402
from strop.index import list_runs  # noqa: E402
from strop.search import SearchOptions, check_scarce_settings, check_space, parse_space, search  # noqa: E402

SPACE = {"optim.lr": {"log_uniform": [1.0e-6, 1.0e-1]}, "train.batch_size": {"choice": [8, 32]}}


def _vectors(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = np.tanh(x[:, 0]) + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=n) > 0
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["y"] = np.where(y, "high", "low")
    frame.to_csv(path, index=False)
    return path


def search_config(tmp_path: Path, epochs: int = 3, rows: int = 300) -> Path:
    """A search over an MLP on generated vectors (a trial takes about a second)."""
    config = {"task": {"name": "text_classification"}, "model": {"name": "mlp", "hidden": [16]},
              "data": {"train": str(_vectors(tmp_path / "train.csv", rows, 1)),
                       "validation": str(_vectors(tmp_path / "dev.csv", 100, 2)), "label_column": "y"},
              "train": {"epochs": epochs, "patience": 0, "mixed_precision": "no"},
              "output_dir": str(tmp_path / "search"), "search": SPACE}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def trials_of(folder: Path) -> list:
    return optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.sqlite'}").trials


@pytest.mark.parametrize("space, message", [
    ({"optim.lr": {"normal": [0, 1]}}, r"search: optim.lr must be one distribution"),
    ({"optim.lr": {"log_uniform": [0, 1.0e-3]}}, r"log_uniform needs low > 0"),
    ({"optim.lr": {"uniform": [1.0e-3, 1.0e-5]}}, r"uniform needs low < high"),
    ({"optim.lr": {"uniform": ["a", 1]}}, r"uniform needs \[low, high\], two numbers"),
    ({"train.epochs": {"int": [1.5, 4]}}, r"int needs \[low, high\], two whole numbers"),
    ({"train.batch_size": {"choice": []}}, r"choice needs a list of one or more values"),
    ({"train.batch_size": {"choice": [8, 8]}}, r"choice lists a value twice"),
    ({"optim.learning_rate": {"choice": [1]}}, r"unknown key 'optim.learning_rate'; known keys in optim: name, lr"),
    ({"optim": {"choice": [1]}}, r"'optim' is a section"),
    ({"output_dir": {"choice": ["a", "b"]}}, r"output_dir cannot be searched"),
    ({"data.train": {"choice": ["a.csv"]}}, r"data.train cannot be searched"),
    ([1, 2], r"search must map config keys to distributions"),
])
def test_a_bad_space_is_refused_with_the_key_and_the_fix(space, message):
    with pytest.raises(StropError, match=message):
        parse_space(space)
    with pytest.raises(StropError, match=message):  # also where fit reads the same config
        load_config({"search": space})


def test_fit_reads_a_config_with_a_search_section_and_ignores_the_space():
    cfg = load_config({"optim": {"lr": 1e-4}, "search": SPACE})
    assert cfg.optim.lr == 1e-4 and "search" not in cfg.to_dict()


def test_every_bound_and_choice_must_make_a_valid_config():
    space = parse_space({"optim.warmup": {"uniform": [0.0, 1.5]}})
    with pytest.raises(StropError, match=r"search: optim.warmup: the value 1.5 is refused: optim.warmup must be"):
        check_space(space, {}, [])
    space = parse_space({"model.hidden": {"choice": [[32], [64, 64]]}, "train.batch_size": {"int": [4, 64]}})
    check_space(space, {}, [])  # lists as choices (layer sizes) are values of model.hidden


def test_self_training_and_a_seed_that_moves_the_validation_share_are_refused_before_anything_is_written(
        tmp_path):
    config = yaml.safe_load(search_config(tmp_path).read_text())
    with pytest.raises(StropError, match=r"data.unlabeled: self-training .* strop fit SEARCH/best.yaml"):
        search(config, [f"data.unlabeled={tmp_path / 'dev.csv'}"], SearchOptions(trials=2, quiet=True))
    seeded = {**config, "search": {**SPACE, "train.seed": {"choice": [1, 2]}}}
    with pytest.raises(StropError, match="train.seed with no validation file: the seed draws the validation share"):
        search(seeded, ["data.validation=null"], SearchOptions(trials=2, quiet=True))
    assert not (tmp_path / "search").exists()
    check_scarce_settings(parse_space(seeded["search"]), load_config(seeded))  # with a validation file: searched


def test_a_config_without_a_search_section_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(StropError, match="has no search section"):
        search({"output_dir": str(tmp_path / "s")}, [], SearchOptions(trials=2, quiet=True))
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # tens of seconds: six fits
def test_a_six_trial_search_completes_prunes_and_keeps_the_best_run(tmp_path):
    config = search_config(tmp_path)
    summary = search(config, [], SearchOptions(trials=6, seed=0, quiet=True))
    folder = tmp_path / "search"
    trials = trials_of(folder)
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert complete and pruned and len(complete) + len(pruned) == 6  # the low rates fall behind, and stop
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert summary["best"]["trial"] == best.number and summary["best"]["value"] == best.value
    # Each trial is a normal run directory with the values drawn for it.
    for trial in trials:
        run = folder / trial.user_attrs["strop:run_dir"]
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["optim"]["lr"] == pytest.approx(trial.params["optim.lr"])
        assert saved["train"]["batch_size"] == trial.params["train.batch_size"]
        epochs = len((run / "metrics.jsonl").read_text().splitlines())
        assert epochs == len(trial.intermediate_values)  # each epoch's score went to the pruner
        # Only the best run keeps its weights.
        assert (run / "model").is_dir() == (trial.number == best.number)
        assert not (run / "checkpoints").exists() or trial.number == best.number
    for trial in pruned:  # stopped before its last epoch
        assert len(trial.intermediate_values) < 3
        assert not (folder / trial.user_attrs["strop:run_dir"] / "summary.json").exists()
    # The best config fits again as it is: the values of the best trial.
    best_cfg = load_config(folder / "best.yaml")
    assert best_cfg.optim.lr == pytest.approx(best.params["optim.lr"])
    assert best_cfg.train.batch_size == best.params["train.batch_size"] and best_cfg.output_dir is None
    assert (folder / "best").resolve() == (folder / best.user_attrs["strop:run_dir"]).resolve()
    assert json.loads((folder / "search.json").read_text())["counts"]["finished"] == 6
    # Every trial is in the search folder's run index, as a trial with its values and its outcome.
    rows = {row["name"]: row for row in list_runs(folder)}
    assert sorted(rows) == sorted(t.user_attrs["strop:run_dir"] for t in trials)
    for trial in trials:
        row = rows[trial.user_attrs["strop:run_dir"]]
        assert row["kind"] == "trial" and row["trial"] == trial.number
        assert row["status"] == {"COMPLETE": "complete", "PRUNED": "pruned"}[trial.state.name]
        assert row["params"]["optim.lr"] == pytest.approx(trial.params["optim.lr"])
    # The search's report: a row per trial, and the parameter importances (shares that sum to 1).
    importances = json.loads((folder / "search.json").read_text())["importances"]
    assert set(importances["shares"]) == set(SPACE) and sum(importances["shares"].values()) == pytest.approx(1)
    assert importances["complete_trials"] == len(complete)
    page = (folder / "report.html").read_text()
    assert all(f"<td>{t.user_attrs['strop:run_dir']}</td>" in page for t in trials)
    assert 'id="importances"' in page and page.count("data:image/png;base64,") == 4
    # Run again with as many trials: nothing left to do, nothing run twice.
    search(config, [], SearchOptions(trials=6, seed=0, quiet=True))
    assert len(trials_of(folder)) == 6


@pytest.mark.slow  # tens of seconds: six fits
def test_a_search_killed_mid_trial_continues_with_no_trial_lost_or_run_twice(tmp_path):
    config = search_config(tmp_path, epochs=4, rows=600)
    folder = tmp_path / "search"
    command = [sys.executable, "-m", "strop", "search", str(config), "--trials", "6", "--seed", "0",
               "--pruner", "none"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    checkpoint = folder / "trial-0002" / "checkpoints" / "last" / "state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # after trial 2's first epoch: mid-trial
    process.wait()
    assert not (folder / "trial-0002" / "summary.json").exists(), "the kill came after trial 2 had finished"
    assert [t.state.name for t in trials_of(folder)] == ["COMPLETE", "COMPLETE", "RUNNING"]

    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "continuing trial-0002 from its checkpoint at epoch 1" in resumed.stdout
    trials = trials_of(folder)
    states = [t.state.name for t in trials]
    # Trial 2 failed when its worker died; its retry (trial 3) ran once, in trial 2's run directory.
    assert states.count("FAIL") == 1 and trials[2].state.name == "FAIL"
    assert states.count("COMPLETE") == 6, states
    retries = [t for t in trials if t.user_attrs.get("strop:retry_of") == 2]
    assert len(retries) == 1 and retries[0].user_attrs["strop:run_dir"] == "trial-0002"
    assert retries[0].params == trials[2].params
    assert sorted(retries[0].intermediate_values) == [1, 2, 3, 4]  # epoch 1 from the checkpoint, then 2-4
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    run_dirs = [t.user_attrs["strop:run_dir"] for t in finished]
    assert len(set(run_dirs)) == 6  # no run directory trained twice
    assert sorted(p.name for p in folder.glob("trial-*")) == sorted(run_dirs)  # and none left over
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == 6  # no values drawn twice
    epochs = [json.loads(line)["epoch"] for line in (folder / "trial-0002" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]  # continued, not restarted: each epoch once


def test_a_trial_its_values_make_fail_is_failed_once_and_not_retried(tmp_path):
    config = search_config(tmp_path, epochs=2, rows=200)
    space = {"train.gradient_checkpointing": {"choice": [False, True]}, "optim.lr": {"log_uniform": [1e-3, 1e-2]}}
    raw = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**raw, "search": space}))
    search(config, [], SearchOptions(trials=4, seed=1, pruner="none", quiet=True))
    trials = trials_of(tmp_path / "search")
    assert len(trials) == 4 and not any("strop:retry_of" in t.user_attrs for t in trials)
    for trial in trials:
        if trial.params["train.gradient_checkpointing"]:  # an MLP cannot: refused by the trial's fit
            assert trial.state.name == "FAIL" and "gradient_checkpointing" in trial.user_attrs["strop:error"]
            assert not (tmp_path / "search" / trial.user_attrs["strop:run_dir"]).exists()
        else:
            assert trial.state.name == "COMPLETE"
    assert {t.params["train.gradient_checkpointing"] for t in trials} == {False, True}


def test_the_cli_refuses_bad_searches_with_exit_2_and_leaves_nothing(tmp_path, capsys):
    from strop.cli import main

    config = search_config(tmp_path)
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(config.read_text()).items() if k != "search"}))
    assert main(["search", str(plain), "--trials", "2"]) == 2
    assert "has no search section" in capsys.readouterr().err
    assert main(["search", str(config), "--trials", "0"]) == 2
    assert main(["search", str(config), "--trials", "2", "train.resume=true"]) == 2
    assert "leave train.resume out" in capsys.readouterr().err
    assert main(["search", str(config), "--trials", "2", "output_dir=null", "--storage", "sqlite:////tmp/x.db"]) == 2
    assert "--study-name" in capsys.readouterr().err
    assert main(["search", str(config), "--trials", "2", "--storage", "postgresql://nobody@127.0.0.1:9/none"]) == 2
    assert "cannot be opened" in capsys.readouterr().err
    assert not (tmp_path / "search").exists()


def _a_study_with_a_dead_foreign_trial(tmp_path, monkeypatch, epochs: int) -> tuple[Path, Path, dict]:
    """A search of one complete trial, then a second trial taken by a worker on another machine that died: its
    lock file is not on this machine and its heartbeat has stopped past the (shortened) grace period. Returns the
    config, the search folder and the dead trial's parameters."""
    import strop.search as search_module

    monkeypatch.setattr(search_module, "HEARTBEAT_INTERVAL", 1)
    monkeypatch.setattr(search_module, "HEARTBEAT_GRACE", 2)
    config = search_config(tmp_path, epochs=epochs, rows=200)
    folder = tmp_path / "search"
    search(config, [], SearchOptions(trials=1, seed=0, pruner="none", quiet=True))
    storage = search_module._open_storage(optuna, f"sqlite:///{folder / 'study.sqlite'}")
    study = optuna.load_study(study_name="search", storage=storage)
    with warnings.catch_warnings():  # Optuna expects its heartbeat inside Study.optimize
        warnings.simplefilter("ignore")
        foreign = study.ask()
    params = {p.key: p.suggest(foreign) for p in parse_space(SPACE)}
    for key, value in {"strop:run_dir": "trial-0001", "strop:attempt": 1,
                       "strop:worker": "/elsewhere/.workers/other-host-1-abc.lock"}.items():
        foreign.set_user_attr(key, value)
    storage.record_heartbeat(foreign._trial_id)
    time.sleep(3)  # past the grace period
    return config, folder, params


def test_a_trial_of_a_worker_on_another_machine_gone_silent_is_retried(tmp_path, monkeypatch):
    config, folder, params = _a_study_with_a_dead_foreign_trial(tmp_path, monkeypatch, epochs=2)
    search(config, [], SearchOptions(trials=3, seed=0, pruner="none", quiet=True))
    trials = trials_of(folder)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    [retry] = [t for t in trials if t.user_attrs.get("strop:retry_of") == 1]
    assert retry.params == params and retry.user_attrs["strop:run_dir"] == "trial-0001"
    assert (folder / "trial-0001" / "summary.json").is_file()


def test_a_dead_trial_that_held_the_last_place_is_retried_not_left_queued(tmp_path, monkeypatch):
    """The retry queued for a dead worker's trial takes that trial's place; where it was the last place, the
    search counted every place taken and stopped with the retry never run (a worker killed on a study's last
    trial: 5 of 6 trials complete)."""
    config, folder, _ = _a_study_with_a_dead_foreign_trial(tmp_path, monkeypatch, epochs=1)
    search(config, [], SearchOptions(trials=2, seed=0, pruner="none", quiet=True))  # the dead trial's was the last
    assert [t.state.name for t in trials_of(folder)] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert (folder / "trial-0001" / "summary.json").is_file()


def test_a_search_interrupted_with_ctrl_c_queues_its_trial_and_continues_it(tmp_path, monkeypatch):
    import strop.train.loop as loop

    config = search_config(tmp_path, epochs=2, rows=200)
    folder = tmp_path / "search"
    save, saved = loop.save_checkpoint, []

    def save_then_interrupt(*args, **kwargs):
        save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 3:  # trial 1's first epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        search(config, [], SearchOptions(trials=3, seed=0, pruner="none", quiet=True))
    assert [t.state.name for t in trials_of(folder)] == ["COMPLETE", "FAIL", "WAITING"]
    monkeypatch.setattr(loop, "save_checkpoint", save)

    search(config, [], SearchOptions(trials=3, seed=0, pruner="none", quiet=True))
    trials = trials_of(folder)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["strop:retry_of"] == 1 and trials[2].params == trials[1].params
    assert trials[2].user_attrs["strop:run_dir"] == "trial-0001" and sorted(trials[2].intermediate_values) == [1, 2]
    epochs = [json.loads(line)["epoch"] for line in (folder / "trial-0001" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_bounds_yaml_reads_as_text_are_numbers():
    [param] = parse_space(yaml.safe_load("optim.lr: {log_uniform: [1e-5, 1e-3]}"))  # YAML 1.1: "1e-5" is text
    assert (param.low, param.high) == (1e-5, 1e-3)


def test_the_pruner_does_not_stop_a_trial_after_its_last_epoch():
    """Its last epoch's score is the trial's result: stopping there would throw a finished trial away."""
    from types import SimpleNamespace

    from strop.search import _Search

    reported = []
    trial = SimpleNamespace(report=lambda value, step: reported.append(step), should_prune=lambda: True)
    searcher = SimpleNamespace(metric="accuracy", optuna=optuna)
    searcher._report = lambda t, record: _Search._report(searcher, t, record)
    report = _Search._reporter(searcher, trial, 3)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
        report({"epoch": 2, "val_accuracy": 0.5})
    report({"epoch": 3, "val_accuracy": 0.6})  # the last: reported, not pruned
    assert reported == [2, 3]


def test_a_continued_search_refuses_other_settings_for_its_trials(tmp_path):
    config = search_config(tmp_path, epochs=1, rows=60)
    search(config, [], SearchOptions(trials=1, seed=0, quiet=True))
    with pytest.raises(StropError, match=r"trains its trials with train.epochs=1, not 2: its trials would not "
                                         r"compare"):
        search(config, ["train.epochs=2"], SearchOptions(trials=2, seed=0, quiet=True))
    assert len(trials_of(tmp_path / "search")) == 1
    # what a worker may have of its own (its output, its device) is not a setting of the trials
    search(config, ["train.device=cpu"], SearchOptions(trials=2, seed=0, quiet=True))
    assert len(trials_of(tmp_path / "search")) == 2


def test_a_trials_fit_prints_nothing_but_its_bars_show_under_the_trials_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("strop.progress.LINE_EVERY_S", 0.0)  # a log's line after every batch
    search(search_config(tmp_path, epochs=2), [], SearchOptions(trials=2, seed=0, pruner="none"))
    captured = capsys.readouterr()
    assert "trial 0, epoch 2/2: " in captured.err and "run saved to" not in captured.out
    assert "(1/2 trials done; about " in captured.out and "(2/2 trials done)" in captured.out  # the time left
    for quiet, options in (("--quiet", {"quiet": True}), ("train.quiet", {})):
        (tmp_path / quiet).mkdir()
        search(search_config(tmp_path / quiet, epochs=2), ["train.quiet=true"] if not options else [],
               SearchOptions(trials=1, seed=0, pruner="none", **options))
        captured = capsys.readouterr()
        assert captured.out == "" and "epoch" not in captured.err, quiet
