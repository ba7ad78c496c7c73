"""The benchmark's phase timer: where a worker's wall time goes, each second counted once."""

import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import report  # noqa: E402
import workers  # noqa: E402


class Loader:
    @classmethod
    def load(cls, seconds: float) -> str:
        time.sleep(seconds)
        return cls.__name__


def test_timed_functions_add_up_by_phase_and_a_nested_call_counts_once(monkeypatch):
    module = types.ModuleType("toy_tool")

    def validate(seconds):
        time.sleep(seconds)
        return Loader.load(seconds)  # timed too, but inside validate: counted there only

    module.validate, module.Loader = validate, Loader
    monkeypatch.setitem(sys.modules, "toy_tool", module)
    monkeypatch.setattr(Loader, "load", Loader.__dict__["load"])  # restored after the test
    timer = workers.PhaseTimer()
    timer.wrap("toy_tool:validate", "validate")
    timer.wrap("toy_tool:Loader.load", "load")

    assert module.Loader.load(0.05) == "Loader"  # still a classmethod
    assert module.validate(0.05) == "Loader"
    assert module.validate(0.05) == "Loader"
    assert 0.05 <= timer.seconds["load"] < 0.09
    assert 0.2 <= timer.seconds["validate"] < 0.3

    split = workers.phases(timer.seconds, train_seconds=1.0, wall_seconds=2.0)
    assert list(split) == workers.PHASE_ORDER
    assert abs(sum(split.values()) - 2.0) < 0.01 and split["train"] == 1.0 and split["checkpoint"] == 0.0


def test_the_table_shows_the_phases_of_the_runs_that_recorded_them():
    phases = {"train": 4.0, "validate": 2.0, "checkpoint": 1.0, "load": 0.5, "tokenize": 0.1, "save": 0.4,
              "other": 2.0}
    runs = [{"row": "trec", "tool": tool, "seed": seed, "accuracy": 0.9, "wall_seconds": 10.0,
             "train_seconds": 4.0, "phases": {**phases, "validate": 2.0 * seed}} for seed in (1, 2)
            for tool in ("strop", "trainer")]
    runs.append({"row": "trec", "tool": "tfidf", "seed": 1, "accuracy": 0.8, "wall_seconds": 1.0,
                 "train_seconds": 0.5})
    text = report.markdown(report.aggregate(runs), [], [])
    assert "| row | tool | wall s | train | validate | checkpoint | load | tokenize | save | other |" in text
    assert "| trec | strop | 10 | 4.00 | 3.00 | 1.00 | 0.50 | 0.10 | 0.40 | 2.00 |" in text
    assert "| trec | tfidf | 1 |" not in text.split("Where the wall time goes")[1]
