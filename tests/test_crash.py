"""Crash safety: `strop fit` killed with SIGKILL at random and at chosen moments resumes to the uninterrupted
run (bench/crash_campaign.py in its reduced form); checkpoints are written through fsync and a rename and
verified against their checksums on load; a damaged or hostile checkpoint is refused with strop's message."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from strop.errors import StropError
from strop.runs import atomic_write_text, staged
from strop.train.checkpoint import LoopState, load_checkpoint, save_checkpoint, write_manifest

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> dict:
    """The reduced campaign: 3 random kills of an MLP run and every targeted kill point (about 30-60 s)."""
    out = tmp_path_factory.mktemp("crash")
    command = [sys.executable, str(ROOT / "bench" / "crash_campaign.py"), "--kills", str(KILLS), "--text-kills", "0",
               "--targeted", "all", "--seed", "1", "--workdir", str(out / "work"), "--out", str(out / "result.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert (out / "result.json").is_file(), done.stdout + done.stderr
    return json.loads((out / "result.json").read_text())


def test_random_kills_resume_to_the_uninterrupted_run(campaign):
    mlp = campaign["scenarios"][0]
    killed = [a for a in mlp["attempts"] if a.get("outcome") == "killed"]
    assert mlp["kills_done"] == KILLS and len(killed) == KILLS
    assert mlp["damaged"] == 0, [a["checkpoint"] for a in killed]  # no checkpoint was ever half-written
    assert mlp["equal"], mlp["differences"]


@pytest.mark.parametrize("target", [
    "evaluation:2",  # entering epoch 2's validation
    "checkpoint:1",  # epoch 1's metrics line written, its checkpoint not: the resume starts afresh and drops it
    "checkpoint-file:3",  # inside the staging folder: a weights file written, the others not
    "publish-aside:1",  # between the two renames: checkpoints/last absent, .last.old whole
    "published:2",  # the new checkpoint in place, the old one not yet deleted
    "final-model:1",  # writing the final model folder
    "training:1",  # config and provenance written, no checkpoint yet
])
def test_a_kill_at(target, campaign):
    result = next(r for r in campaign["targeted"] if r["kill_at"] == target)
    assert result["killed"], f"the fit never reached {target}"
    assert not result["checkpoint"].startswith("DAMAGED"), result["checkpoint"]
    if target == "publish-aside:1":
        assert result["checkpoint"].startswith("whole (.last.old")  # the window it aims at was hit
    assert result["equal"], result["differences"]


def _checkpoint(path: Path, best: bool = True) -> tuple:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(path, model, optimizer, scheduler, LoopState(epoch=2, step=7),
                    {k: v.clone() for k, v in model.state_dict().items()} if best else None)
    return model, optimizer, scheduler


def test_a_checkpoint_carries_checksums_and_loads(tmp_path):
    model, optimizer, scheduler = _checkpoint(tmp_path / "last")
    manifest = json.loads((tmp_path / "last" / "checksums.json").read_text())
    assert manifest["algorithm"] == "sha256"
    assert set(manifest["files"]) == {"model.safetensors", "best.safetensors", "training_state.pt", "state.json"}
    state, best = load_checkpoint(tmp_path / "last", model, optimizer, scheduler)
    assert (state.epoch, state.step) == (2, 7) and set(best) == {"weight", "bias"}


@pytest.mark.parametrize("name", ["model.safetensors", "best.safetensors", "training_state.pt", "state.json"])
def test_a_flipped_byte_is_refused_naming_the_file(name, tmp_path):
    model, optimizer, scheduler = _checkpoint(tmp_path / "last")
    file = tmp_path / "last" / name
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(StropError, match=rf"the checkpoint in .*last is damaged: {name} does not match its "
                                         r"checksum in checksums.json .* it cannot be resumed; start the run again"):
        load_checkpoint(tmp_path / "last", model, optimizer, scheduler)


def test_a_cut_short_missing_or_unvouched_checkpoint_is_refused(tmp_path):
    model, optimizer, scheduler = _checkpoint(tmp_path / "last")
    weights = tmp_path / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(StropError, match=r"is damaged: model.safetensors has \d+ bytes where checksums.json records"):
        load_checkpoint(tmp_path / "last", model, optimizer, scheduler)
    weights.unlink()
    with pytest.raises(StropError, match="is damaged: model.safetensors is missing"):
        load_checkpoint(tmp_path / "last", model, optimizer, scheduler)
    (tmp_path / "last" / "checksums.json").unlink()
    with pytest.raises(StropError, match="is damaged: it has no checksums.json"):
        load_checkpoint(tmp_path / "last", model, optimizer, scheduler)


class _Canary:
    """Unpickled, it would create the file `path`: proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_posing_as_the_training_state_is_not_executed(tmp_path):
    model, optimizer, scheduler = _checkpoint(tmp_path / "last")
    canary = tmp_path / "code-ran"
    with (tmp_path / "last" / "training_state.pt").open("wb") as file:
        pickle.dump({"optimizer": _Canary(canary), "scheduler": {}, "rng": {}}, file, protocol=2)
    with pytest.raises(StropError, match="is damaged: training_state.pt has"):  # the checksums: first line of defence
        load_checkpoint(tmp_path / "last", model, optimizer, scheduler)
    write_manifest(tmp_path / "last")  # an attacker who rewrites the checksums too
    with pytest.raises(StropError, match=r"is refused: training_state.pt holds something other than tensors and "
                                         r"plain values \(.*open.*\), and strop does not unpickle anything else"):
        load_checkpoint(tmp_path / "last", model, optimizer, scheduler)
    assert not canary.exists()
    with pytest.raises(pickle.UnpicklingError):  # the same file is code to a plain unpickler: the test is real
        torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)
    pickle.loads((tmp_path / "last" / "training_state.pt").read_bytes())
    assert canary.exists()


def test_a_damaged_checkpoint_stops_a_resume_with_exit_2(tmp_path):
    import numpy as np
    import pandas as pd

    import strop

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(64, 3)), columns=["a", "b", "c"])
    frame["label"] = np.where(frame["a"] > 0, "high", "low")
    frame.to_csv(tmp_path / "train.csv", index=False)
    run = strop.fit(None, ["model.name=mlp", f"data.train={tmp_path / 'train.csv'}", f"output_dir={tmp_path / 'run'}",
                           "train.epochs=2", "train.quiet=true", "train.mixed_precision=no"])
    (run / "summary.json").unlink()  # as if killed before the run was complete
    weights = run / "checkpoints" / "last" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = subprocess.run([sys.executable, "-m", "strop.cli", "fit", str(run / "config.yaml"), "train.resume=true"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "is damaged: model.safetensors does not match its checksum" in out.stderr


def test_writes_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync

    def recording(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    atomic_write_text(tmp_path / "a.json", "{}\n")
    assert any(".a.json.tmp-" in str(s) for s in synced) and str(tmp_path) in map(str, synced)
    synced.clear()
    with staged(tmp_path / "folder", "the folder") as tmp:
        (tmp / "x").write_text("x")
    assert any(str(s).endswith("/x") for s in synced)  # the file, before the folder was published
    assert str(tmp_path) == str(synced[-1])  # the parent, after the rename
    assert (tmp_path / "folder" / "x").read_text() == "x"


def test_temporaries_of_killed_writers_are_removed_and_a_running_writers_kept(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    (tmp_path / f".folder.tmp-{dead}").mkdir()  # a staging folder of a killed process
    (tmp_path / f".folder.tmp-{dead}" / "model.safetensors").write_text("partial")
    (tmp_path / f".folder.tmp-{os.getppid()}").mkdir()  # one of a process still running
    (tmp_path / f".a.json.tmp-{dead}").write_text("partial")
    with staged(tmp_path / "folder", "the folder") as tmp:
        (tmp / "x").write_text("x")
    atomic_write_text(tmp_path / "a.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.json", "folder", f".folder.tmp-{os.getppid()}"])
