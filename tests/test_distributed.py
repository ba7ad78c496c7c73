"""Multi-process training (DDP on Accelerate): `accelerate launch --multi_gpu --num_processes 2 -m strop fit ...`
runs here as 2 CPU processes joined over gloo. The run matches a single-process run of the same global batch
(batch_size x processes), the run directory is written once, every process stops early together, and an
interrupted run resumes to the uninterrupted one."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import write_csv

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo processes on a POSIX machine")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], processes: int, env: dict | None = None,
           script: Path = ROOT / "tests" / "launch_fit.py") -> subprocess.CompletedProcess:
    """`strop` (or another script) in `processes` processes (accelerate launch), or plainly in one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    if processes == 1:
        command = [sys.executable, str(script)]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port()), str(script)]
    return subprocess.run(command + args, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def vector_data(tmp_path_factory) -> dict[str, Path]:
    """Three classes of 8-feature vectors, 128 training rows (batches divide evenly among 2 processes) and
    45 validation rows (uneven: the last validation batch is shared unevenly and must be counted once)."""
    folder, rng = tmp_path_factory.mktemp("vectors"), np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))

    def table(n: int, name: str) -> Path:
        labels = np.arange(n) % 3
        features = centres[labels] + rng.normal(scale=1.5, size=(n, 8))
        rows = [(*map(float, f), f"c{y}") for f, y in zip(features, labels)]
        return write_csv(folder / name, rows, header=(*[f"x{i}" for i in range(8)], "label"))

    return {"train": table(128, "train.csv"), "validation": table(45, "validation.csv")}


def vector_args(data: dict[str, Path]) -> list[str]:
    return ["fit", f"data.train={data['train']}", f"data.validation={data['validation']}", "model.name=mlp",
            "model.hidden=[32]", "model.body_dropout=0", "model.head_dropout=0", "optim.lr=3e-3",
            "optim.head_lr_scale=1", "train.epochs=12", "train.patience=2", "train.group_by_length=false",
            "train.imbalance=none", "train.mixed_precision=no", "train.keep_checkpoint=true", "--quiet"]


def text_args(tiny_model_dir: Path, text_data: dict[str, Path]) -> list[str]:
    return ["fit", f"data.train={text_data['train']}", f"data.validation={text_data['dev']}",
            f"model.name={tiny_model_dir}", "model.body_dropout=0", "model.head_dropout=0", "optim.lr=1e-3",
            "train.epochs=3", "train.group_by_length=false", "train.imbalance=none", "train.mixed_precision=no",
            "--quiet"]


def weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(run / "model" / "model.safetensors")


def history(run: Path) -> list[dict]:
    timing = ("epoch_seconds", "train_samples_per_s", "train_tokens_per_s", "time")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(one: Path, two: Path, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)
    ha, hb = history(one), history(two)
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb]
    assert [h["step"] for h in ha] == [h["step"] for h in hb]  # the same optimizer steps
    assert [h["best"] for h in ha] == [h["best"] for h in hb]
    for x, y in zip(ha, hb):
        for key in x:
            if isinstance(x[key], float):
                assert y[key] == pytest.approx(x[key], rel=rtol, abs=atol), key
    sa, sb = (json.loads((run / "summary.json").read_text()) for run in (one, two))
    assert (sa["best_epoch"], sa["epochs_run"], sa["stopped_early"]) == (sb["best_epoch"], sb["epochs_run"],
                                                                          sb["stopped_early"])
    assert sb["validation_examples"] == sa["validation_examples"]


def test_two_processes_match_one_with_the_same_global_batch(vector_data, tmp_path):
    single = launch(vector_args(vector_data) + [f"output_dir={tmp_path / 'one'}", "train.batch_size=16"], 1)
    assert single.returncode == 0, single.stderr
    ddp = launch(vector_args(vector_data) + [f"output_dir={tmp_path / 'two'}", "train.batch_size=8"], 2)
    assert ddp.returncode == 0, ddp.stderr
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["stopped_early"], "the settings are meant to stop early: the test shows both processes agree"
    assert_same_run(tmp_path / "one", tmp_path / "two")
    # The run directory is written once: one line an epoch, one provenance naming both processes.
    provenance = json.loads((tmp_path / "two" / "provenance.json").read_text())
    assert provenance["processes"] == 2
    assert json.loads((tmp_path / "one" / "provenance.json").read_text())["processes"] == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_text_model_in_two_processes_matches_one(tiny_model_dir, text_data, tmp_path):
    args = text_args(tiny_model_dir, text_data)
    single = launch(args + [f"output_dir={tmp_path / 'one'}", "train.batch_size=8"], 1)
    assert single.returncode == 0, single.stderr
    ddp = launch(args + [f"output_dir={tmp_path / 'two'}", "train.batch_size=4"], 2)
    assert ddp.returncode == 0, ddp.stderr
    assert_same_run(tmp_path / "one", tmp_path / "two", rtol=1e-3, atol=1e-4)


def test_an_interrupted_two_process_run_resumes_to_the_uninterrupted_one(vector_data, tmp_path):
    args = vector_args(vector_data) + ["train.batch_size=8", "train.patience=0", "train.epochs=5"]
    straight = launch(args + [f"output_dir={tmp_path / 'straight'}"], 2)
    assert straight.returncode == 0, straight.stderr
    died = launch(args + [f"output_dir={tmp_path / 'resumed'}"], 2, {"STROP_TEST_DIE_AFTER_CHECKPOINT": "2"})
    assert died.returncode != 0
    assert not (tmp_path / "resumed" / "model").exists() and len(history(tmp_path / "resumed")) == 2
    resumed = launch(["fit", str(tmp_path / "resumed" / "config.yaml"), "train.resume=true", "--quiet"], 2)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", rtol=1e-6, atol=1e-7)


def test_each_process_resumes_its_own_dropout_draws(tiny_model_dir, text_data, tmp_path):
    """Texts of other lengths in each process's batches use up each process's random generator differently, so
    each process's generator is kept in the checkpoint and resumed (the main one's alone gave other dropout
    masks from the resumed epoch on)."""
    args = [a for a in text_args(tiny_model_dir, text_data) if "dropout" not in a]  # the model's own, 0.1
    args += ["train.batch_size=4", "train.patience=0", "model.max_length=32", "train.keep_checkpoint=true"]
    straight = launch(args + [f"output_dir={tmp_path / 'straight'}"], 2)
    assert straight.returncode == 0, straight.stderr
    died = launch(args + [f"output_dir={tmp_path / 'resumed'}"], 2, {"STROP_TEST_DIE_AFTER_CHECKPOINT": "1"})
    assert died.returncode != 0 and len(history(tmp_path / "resumed")) == 1
    resumed = launch(["fit", str(tmp_path / "resumed" / "config.yaml"), "train.resume=true", "--quiet"], 2)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", rtol=1e-6, atol=1e-7)


def test_bad_input_stops_every_process_with_strops_message(vector_data, tmp_path):
    run = launch(["fit", f"data.train={tmp_path / 'missing.csv'}", "model.name=mlp", f"output_dir={tmp_path / 'run'}",
                  "--quiet"], 2)
    assert run.returncode != 0
    assert f"strop fit: error: data.train: file not found: {tmp_path / 'missing.csv'}" in run.stderr
    assert not (tmp_path / "run").exists()
    # the range test would run on each process's batches, a fraction of the run's: refused with the way to go
    found = launch(vector_args(vector_data) + ["optim.lr=find", "train.batch_size=8", f"output_dir={tmp_path / 'lr'}"],
                   2)
    assert found.returncode != 0
    assert ("optim.lr=find tests rates on one process's batches of train.batch_size=8, not on this run's global "
            "batch of 16 (2 processes)") in found.stderr and "train.batch_size=16" in found.stderr
    assert not (tmp_path / "lr").exists()


def test_the_python_api_returns_a_written_run_in_every_process(vector_data, tmp_path):
    """strop.fit returns once the main process has written the run: a script (or self-training's next round)
    reads it right away in every process."""
    script = tmp_path / "api.py"
    script.write_text("import sys\nfrom pathlib import Path\n\nfrom accelerate import PartialState\n\nimport strop\n\n"
                      "run = Path(strop.fit(None, sys.argv[1:]))\n"
                      "print(f'process {PartialState().process_index}: summary {(run / \"summary.json\").is_file()}')\n")
    args = [a for a in vector_args(vector_data)[1:] if a != "--quiet"] + ["train.quiet=true", "train.epochs=2",
                                                                          f"output_dir={tmp_path / 'run'}"]
    done = launch(args, 2, script=script)
    assert done.returncode == 0, done.stderr
    # the two processes' lines may reach the launcher's stdout run together: found wherever they are
    said = sorted(re.findall(r"process \d: summary (?:True|False)", done.stdout))  # "Trueprocess 1": run together
    assert said == ["process 0: summary True", "process 1: summary True"]


def test_commands_that_train_run_after_run_refuse_several_processes(vector_data, tmp_path, monkeypatch):
    """cv, curve, search and self-training write their own files from every process: refused, before anything
    is written, with the way to go (as WORLD_SIZE says accelerate launch or torchrun started several)."""
    import yaml

    import strop
    from strop.curve import learning_curve
    from strop.cv import cross_validate
    from strop.errors import StropError
    from strop.search import search

    monkeypatch.setenv("WORLD_SIZE", "2")
    overrides = [a for a in vector_args(vector_data)[1:] if a != "--quiet"]
    out = tmp_path / "out"
    with pytest.raises(StropError, match=r"strop cv runs as one process, not under accelerate launch or torchrun "
                                         r"\(here 2 processes\): start it plainly; strop fit is the command"):
        cross_validate(None, overrides, folds=2, output=out)
    with pytest.raises(StropError, match="strop curve runs as one process"):
        learning_curve(None, overrides, output=out)
    with pytest.raises(StropError, match=r"self-training \(data.unlabeled\) runs as one process"):
        strop.fit(None, overrides + [f"data.unlabeled={vector_data['validation']}", f"output_dir={out}"])
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"search": {"optim.lr": {"log_uniform": [1e-4, 1e-2]}}}))
    with pytest.raises(StropError, match="strop search runs as one process.*workers that share --storage"):
        search(config, overrides + [f"output_dir={out}"])
    assert not out.exists()


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED"])
def test_sharding_engines_are_refused_with_the_command_to_use(engine):
    """FSDP and DeepSpeed need GPUs to start; what strop does when Accelerate reports them is checked here."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from strop.errors import StropError
    from strop.fit import _check_engine

    with pytest.raises(StropError, match=f"chose {engine}.*accelerate launch --multi_gpu"):
        _check_engine(SimpleNamespace(distributed_type=DistributedType[engine]))
    _check_engine(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU))  # DDP goes on


def test_fewshot_validates_every_contrastive_pair_in_two_processes(tiny_model_dir, text_data, tmp_path):
    """The contrastive stage's validation items are groups of pairs: each group is counted once, whole, however
    the groups fall to the processes (11 groups to 2 processes: the last batch is shared unevenly). At a learning
    rate too small to move the body, both runs validate the same body on the same pairs."""
    args = ["fit", f"data.train={text_data['train']}", f"data.validation={text_data['dev']}",
            f"model.name={tiny_model_dir}", "model.max_length=32", "method.name=fewshot", "method.freeze_layers=0",
            "method.pairs_per_example=2", "method.pair_lr=1e-12", "train.batch_size=4", "train.epochs=1",
            "train.mixed_precision=no", "--quiet"]
    # 60 validation examples: a budget of 120 pairs, 20 groups of 4 examples (6 pairs each); 33 give 11 groups
    dev = tmp_path / "dev.csv"
    dev.write_text("".join(text_data["dev"].read_text().splitlines(keepends=True)[:34]))
    args[2] = f"data.validation={dev}"
    runs = {}
    for processes in (1, 2):
        done = launch(args + [f"output_dir={tmp_path / str(processes)}"], processes)
        assert done.returncode == 0, done.stderr
        runs[processes] = json.loads((tmp_path / str(processes) / "contrastive" / "summary.json").read_text())
    assert runs[1]["validation_pairs"] == runs[2]["validation_pairs"] == 11 * 6
    for name, value in runs[1]["validation"].items():
        assert runs[2]["validation"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
