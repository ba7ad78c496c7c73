"""The vectors examples (examples/vectors/) through the CLI: pretrain an MLP on the large source regression
set, fine-tune it on the small target set starting from the saved run, and train the same MLP from random
weights on the small set. Starting from the pretrained run must give a clearly lower validation RMSE
(measured, train.seed 42: 0.204 against 0.294). With the pretrained weights ignored the fine-tune would be
the same network from random weights at a hundredth of the baseline's rate, worse than the baseline
(finetune.yaml with model.name=mlp: 0.348), and this test fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "vectors"
DATA = ROOT / "examples" / "data" / "vectors"


def strop(*args: str) -> str:
    # One thread: these networks are tiny, and two threads that share two busy cores make each step many
    # times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "strop.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"strop {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fit(example: str, output_dir: Path, *overrides: str) -> dict:
    strop("fit", str(EXAMPLES / example), f"output_dir={output_dir}", *overrides, "--quiet")
    return json.loads((output_dir / "summary.json").read_text(encoding="utf-8"))


def test_examples_start_with_the_command_that_runs_them():
    for example in ("pretrain.yaml", "finetune.yaml", "scratch.yaml"):
        first = (EXAMPLES / example).read_text(encoding="utf-8").splitlines()[0]
        assert first == f"# strop fit examples/vectors/{example}"


@pytest.mark.slow
def test_fine_tuning_from_the_pretrained_run_beats_training_from_scratch(tmp_path):
    pretrain, finetune, scratch = tmp_path / "pretrain", tmp_path / "finetune", tmp_path / "scratch"
    fit("pretrain.yaml", pretrain)
    tuned = fit("finetune.yaml", finetune, f"model.name={pretrain}")
    baseline = fit("scratch.yaml", scratch)

    info = json.loads((finetune / "model" / "strop.json").read_text(encoding="utf-8"))
    assert info["base_model"] == str(pretrain)
    assert tuned["train_examples"] == baseline["train_examples"] == 150
    assert tuned["validation_examples"] == baseline["validation_examples"] == 300

    tuned_rmse, baseline_rmse = tuned["validation"]["rmse"], baseline["validation"]["rmse"]
    assert tuned_rmse < 0.9 * baseline_rmse, (tuned_rmse, baseline_rmse)

    # The same on the held-out test file, through strop evaluate.
    test = [json.loads(strop("evaluate", str(run), "--data", str(DATA / "target_test.csv"), "--json"))["rmse"]
            for run in (finetune, scratch)]
    assert test[0] < 0.9 * test[1], test
