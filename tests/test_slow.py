"""End-to-end runs of the real CLI on the bundled pretrained model (tens of seconds each)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
SST2 = SHARED_DATA / "text" / "sst2"

pytestmark = pytest.mark.slow


def _strop(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "strop.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.skipif(not SST2.is_dir(), reason="../shared/data/text/sst2 is not here")
def test_cli_on_bundled_model_and_sst2_slice(tmp_path):
    train = pd.read_csv(SST2 / "train.csv").sample(400, random_state=0)
    dev = pd.read_csv(SST2 / "dev.csv").sample(200, random_state=0)
    train.to_csv(tmp_path / "train.csv", index=False)
    dev.to_csv(tmp_path / "dev.csv", index=False)
    run = tmp_path / "run"
    fitted = _strop("fit", f"data.train={tmp_path / 'train.csv'}", f"data.validation={tmp_path / 'dev.csv'}",
                    f"output_dir={run}", "--quiet")  # default settings
    assert fitted.returncode == 0, fitted.stderr
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert 1 <= len(history) <= 10  # the default train.epochs, or fewer when early stopping ends it
    assert max(r["val_accuracy"] for r in history) > 0.75  # chance is 0.5; the full run reaches about 0.85

    scored = _strop("evaluate", str(run), "--data", str(tmp_path / "dev.csv"), "--json")
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads(scored.stdout)
    summary = json.loads((run / "summary.json").read_text())
    assert metrics["n"] == 200 and metrics["accuracy"] == summary["validation"]["accuracy"]

    predicted = _strop("predict", str(run), "--text", "a moving , beautifully acted film .",
                       "--text", "a dull , lifeless mess .")
    assert [json.loads(line)["label"] for line in predicted.stdout.splitlines()] == ["positive", "negative"]


def test_readme_main_job_on_the_demo_data(tmp_path):
    run = tmp_path / "demo"
    fitted = _strop("fit", "examples/demo.yaml", f"output_dir={run}", "--quiet")
    assert fitted.returncode == 0, fitted.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["accuracy"] >= 0.8
